"""mitod.service (Type=forking) under a real systemd 252, as scripts/install installs it.

One box serves the whole module. Each test starts from the installed
configuration with the unit stopped (see MitodBox.reset), so the tests do not
depend on their order. Measured durations are printed; `pytest -rP` shows them.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.systemd.box import Bind
from tests.systemd.mitod_box import (
    DATABASE,
    MEMBER,
    OUTSIDER,
    PIDFILE,
    SOCKET,
    MitodBox,
    elapsed_seconds,
    message_text,
    site_config,
    timing_line,
)

pytestmark = pytest.mark.slow

UNIT = "mitod.service"
# Ports in the box's own network namespace: nothing else listens there.
SITE_PORT = 18080
SLOW_SITE_PORT = 18081
DOWN_PORT = 18099  # nothing listens here, so a site on it is down
HTTP_STATUS_PORT = 8787  # [http] listen in the installed configuration
MAX_EXPOSURE = 4.0
BROKEN_SITE = site_config("broken", "ftp://example.invalid/")
BROKEN_KEY = "site[0].url"


@pytest.fixture(scope="module")
def systemd_box_binds(mitod_install_binds: list[Bind]) -> list[Bind]:
    return mitod_install_binds


@pytest.fixture(autouse=True)
def fresh_installation(fresh_mitod: MitodBox):
    """Restore the fresh installation after every test of this module."""


def start(mitod: MitodBox) -> int:
    """Run `systemctl start mitod`; return the main pid."""
    mitod.box.systemctl("start", UNIT)
    return mitod.main_pid(UNIT)


def test_start_runs_as_mitod_user(mitod: MitodBox):
    # The shell measures the systemctl call itself, inside the box.
    timed_start = 's=$(date +%s%N); systemctl start mitod; status=$?; e=$(date +%s%N); ' \
                  'echo $(( (e - s) / 1000 )); exit $status'
    start_usec = int(mitod.box.run(["sh", "-c", timed_start]).stdout)

    values = mitod.show(UNIT, "ActiveState", "SubState", "MainPID", "InactiveExitTimestampMonotonic",
                        "ActiveEnterTimestampMonotonic")
    assert values["ActiveState"] == "active"
    assert values["SubState"] == "running"
    main_pid = int(values["MainPID"])
    assert main_pid > 0
    assert int(mitod.box.read_file(PIDFILE)) == main_pid

    assert mitod.process_ids(main_pid) == mitod.account_ids("mitod")
    assert mitod.box.run(["ps", "-o", "user=", "-p", str(main_pid)]).stdout.strip() == "mitod"
    socket_owner = mitod.box.run(["stat", "-c", "%a %U %G", SOCKET]).stdout.split()
    assert socket_owner == ["660", "mitod", "mitod"]

    by_systemd = elapsed_seconds(int(values["InactiveExitTimestampMonotonic"]),
                                 int(values["ActiveEnterTimestampMonotonic"]))
    print(timing_line("systemctl start mitod until it returned (unit active)", start_usec / 1e6,
                      "date +%s%N around systemctl start mitod in the box"))
    print(timing_line("start to active as systemd records it", by_systemd,
                      "ActiveEnterTimestampMonotonic - InactiveExitTimestampMonotonic"))
    assert start_usec / 1e6 < 10.0


def test_mitoctl_status_for_root_and_group(mitod: MitodBox):
    start(mitod)

    assert mitod.box.run(["mitoctl", "status"], check=False).returncode == 0
    assert mitod.box.run(["mitoctl", "status"], user=MEMBER, check=False).returncode == 0

    denied = mitod.box.run(["mitoctl", "stop"], user=OUTSIDER, check=False)
    assert denied.returncode == 4, denied.stderr
    assert "permission denied" in denied.stderr
    # status exits 3 if the daemon is paused, so 0 also shows that the denied stop changed nothing.
    assert mitod.box.run(["mitoctl", "status"], check=False).returncode == 0


def test_daemon_checks_group_for_stop(mitod: MitodBox):
    # A socket anyone may open moves the decision from the file mode to the
    # daemon's own check of the peer's credentials (SO_PEERCRED).
    mitod.set_main_config("socket_mode", '"0666"')
    start(mitod)

    assert mitod.box.run(["mitoctl", "status"], user=OUTSIDER, check=False).returncode == 0
    denied = mitod.box.run(["mitoctl", "stop"], user=OUTSIDER, check=False)
    assert denied.returncode == 4, denied.stderr
    # The daemon's message, not the client's "permission denied opening the control socket".
    assert "needs membership in group mitod" in denied.stderr
    assert f"{OUTSIDER} is not a member" in denied.stderr

    paused = mitod.box.run(["mitoctl", "stop"], user=MEMBER, check=False)
    assert paused.returncode == 0, paused.stderr
    assert mitod.box.run(["mitoctl", "status"], check=False).returncode == 3  # paused
    resumed = mitod.box.run(["mitoctl", "start"], user=MEMBER, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert mitod.box.run(["mitoctl", "status"], check=False).returncode == 0


def test_journal_priorities(mitod: MitodBox):
    mitod.write_conf("10-down.toml", site_config("down", f"http://127.0.0.1:{DOWN_PORT}/"))
    since = mitod.journal_mark()
    pid = start(mitod)

    warning = mitod.wait_for_journal(UNIT, since, "Site down is DOWN", priority="warning")
    assert warning["PRIORITY"] == "4"
    assert int(warning["_PID"]) == pid

    warning_texts = [message_text(entry) for entry in mitod.journal(UNIT, since, priority="warning")]
    assert not any("mitod is ready" in text for text in warning_texts)
    assert not any("Starting mitod" in text for text in warning_texts)

    everything = mitod.journal(UNIT, since)
    startup = [entry for entry in everything if "mitod is ready" in message_text(entry)
               or "Starting mitod 0" in message_text(entry)]
    assert len(startup) == 2, [message_text(entry) for entry in everything]
    assert all(entry["PRIORITY"] == "6" for entry in startup)
    # The "<N>" prefix is consumed by journald, never stored in the text.
    assert not any(re.match(r"<\d>", message_text(entry)) for entry in everything)


def test_reload_adds_site(mitod: MitodBox):
    mitod.write_conf("10-down.toml", site_config("down", f"http://127.0.0.1:{DOWN_PORT}/"))
    pid = start(mitod)
    mitod.start_site_server(SITE_PORT)
    mitod.write_conf("20-added.toml", site_config("added", f"http://127.0.0.1:{SITE_PORT}/"))
    since = mitod.journal_mark()

    mitod.box.systemctl("reload", UNIT)

    mitod.wait_for_journal(UNIT, since, "Reloaded configuration (SIGHUP)")
    mitod.wait_until(lambda: mitod.query(
        "SELECT ok, status_code FROM check_results WHERE job = 'site:added'") == [[1, 200]],
        message="one successful check of site 'added' in check_results")
    assert mitod.main_pid(UNIT) == pid
    assert mitod.active_state(UNIT) == "active"


def test_reload_keeps_running_on_broken_config(mitod: MitodBox):
    pid = start(mitod)
    mitod.write_conf("90-broken.toml", BROKEN_SITE)
    since = mitod.journal_mark()

    mitod.box.systemctl("reload", UNIT)

    mitod.wait_for_journal(UNIT, since, "Reload (SIGHUP) rejected", priority="err")
    mitod.wait_for_journal(UNIT, since, f"90-broken.toml: {BROKEN_KEY}: expected an http://",
                           priority="err")
    assert mitod.main_pid(UNIT) == pid
    assert mitod.active_state(UNIT) == "active"
    assert mitod.box.run(["mitoctl", "status"], check=False).returncode == 0
    rejected = mitod.query("SELECT details FROM operation_log WHERE event_type = 'config.rejected'")
    assert len(rejected) == 1
    assert any(BROKEN_KEY in error for error in json.loads(rejected[0][0])["errors"])


def test_start_fails_on_broken_config(mitod: MitodBox):
    mitod.write_conf("90-broken.toml", BROKEN_SITE)
    since = mitod.journal_mark()

    started = mitod.box.systemctl("start", UNIT, check=False)

    assert started.returncode != 0
    assert "control process exited with error code" in started.stderr
    status = mitod.box.systemctl("status", UNIT, check=False).stdout
    assert "status=78" in status, status
    reason = mitod.wait_for_journal(UNIT, since, f"90-broken.toml: {BROKEN_KEY}: expected an http://")
    assert any(message_text(entry) == "mitod: invalid configuration:"
               for entry in mitod.journal(UNIT, since) if entry["_PID"] == reason["_PID"])
    assert reason["PRIORITY"] == "3"  # the launcher's lines reach journalctl -p err
    mitod.wait_for_journal(UNIT, since, "status=78/CONFIG")

    # systemd restarts a Type=forking unit after a failed start whatever the
    # exit status, and `systemctl status` shows log lines of the latest
    # invocation only, which after the retries has none. The launcher sets
    # the unit's status text to the reason, so status shows it anyway.
    mitod.wait_until(lambda: mitod.active_state(UNIT) == "failed", timeout=30,
                     message="mitod.service to give up after its start limit")
    status = mitod.box.systemctl("status", UNIT, check=False).stdout
    assert "Status: \"start-up failed: invalid configuration:" in status, status
    assert f"{BROKEN_KEY}: expected an http://" in status, status
    attempts = [entry for entry in mitod.journal(UNIT, since)
                if message_text(entry) == "mitod: invalid configuration:"]
    assert len(attempts) == int(mitod.property(UNIT, "StartLimitBurst"))


def test_start_failure_after_fork_reaches_systemctl(mitod: MitodBox):
    # The HTTP port is taken, so the detached daemon fails after the config
    # check and reports the error through the readiness pipe.
    mitod.start_site_server(HTTP_STATUS_PORT)
    since = mitod.journal_mark()

    started = mitod.box.systemctl("start", UNIT, check=False)

    assert started.returncode != 0
    status = mitod.box.systemctl("status", UNIT, check=False).stdout
    assert "status=1/FAILURE" in status, status
    relayed = mitod.wait_for_journal(
        UNIT, since, f"mitod: cannot listen on 127.0.0.1:{HTTP_STATUS_PORT}: the address is already in use")
    logged = mitod.wait_for_journal(UNIT, since, "Start-up failed: cannot listen on")
    assert relayed["_PID"] != logged["_PID"]  # the launcher printed what the daemon sent


def test_kill_9_restarts_and_recovers_task(mitod: MitodBox):
    mitod.start_site_server(SLOW_SITE_PORT, delay=3.0)
    mitod.write_conf("10-slow.toml", site_config("slow", f"http://127.0.0.1:{SLOW_SITE_PORT}/"))
    pid = start(mitod)
    restarts = int(mitod.property(UNIT, "NRestarts"))
    running: list[list] = []

    def slow_check_running() -> bool:
        running[:] = mitod.query(
            "SELECT id FROM autonomous_tasks WHERE name = 'site:slow' AND status = 'running'")
        return bool(running)

    mitod.wait_until(slow_check_running, message="the check of site 'slow' to be running")
    task_id = running[0][0]

    kill = "import os, sys, time; now = time.monotonic_ns() // 1000; os.kill(int(sys.argv[1]), 9); print(now)"
    killed_usec = int(mitod.box.run(["python3", "-c", kill, str(pid)]).stdout)
    new_pid = mitod.wait_active(UNIT, replacing=pid)

    assert int(mitod.property(UNIT, "NRestarts")) == restarts + 1
    assert int(mitod.box.read_file(PIDFILE)) == new_pid
    recovered = mitod.query("SELECT details FROM operation_log WHERE event_type = 'daemon.recovered'")
    assert len(recovered) == 1
    assert task_id in json.loads(recovered[0][0])["requeued"]
    mitod.wait_until(lambda: mitod.query("SELECT status FROM autonomous_tasks WHERE id = ?",
                                         task_id) == [["completed"]],
                     message=f"recovered task {task_id} to complete")

    values = mitod.show(UNIT, "ActiveEnterTimestampMonotonic", "RestartUSec")
    back = elapsed_seconds(killed_usec, int(values["ActiveEnterTimestampMonotonic"]))
    restart_delay = values["RestartUSec"]
    print(timing_line("kill -9 of the main pid until active again", back,
                      "ActiveEnterTimestampMonotonic - CLOCK_MONOTONIC at the kill"))
    print(f"measured: RestartUSec={restart_delay} of that is the unit's RestartSec= wait")
    assert back < 15.0


def test_stop_leaves_nothing(mitod: MitodBox):
    start(mitod)
    since = mitod.journal_mark()

    timed_stop = 's=$(date +%s%N); systemctl stop mitod; e=$(date +%s%N); echo $(( (e - s) / 1000 ))'
    stop_usec = int(mitod.box.run(["sh", "-c", timed_stop]).stdout)

    assert mitod.active_state(UNIT) == "inactive"
    assert mitod.property(UNIT, "Result") == "success"
    assert mitod.box.run(["pgrep", "-u", "mitod"], check=False).returncode == 1
    for path in (PIDFILE, SOCKET):
        assert mitod.box.run(["test", "-e", path], check=False).returncode == 1, path
    # RuntimeDirectory= removes /run/mitod on stop anyway, so the journal
    # shows that the daemon itself cleaned up and exited normally.
    mitod.wait_for_journal(UNIT, since, f"Control socket {SOCKET} closed")
    mitod.wait_for_journal(UNIT, since, "mitod stopped")
    print(timing_line("systemctl stop mitod", stop_usec / 1e6, "date +%s%N around systemctl stop"))


@pytest.mark.parametrize("unit", ["mitod.service", "mitod-notify.service"])
def test_security_exposure(mitod: MitodBox, unit: str):
    output = mitod.box.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", output)
    assert match, output
    exposure = float(match.group(1))
    print(f"measured: systemd-analyze security {unit}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, output


def test_units_verify(mitod: MitodBox):
    result = mitod.box.run(["systemd-analyze", "verify", "/etc/systemd/system/mitod.service",
                            "/etc/systemd/system/mitod-notify.service"], check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


def test_database_owned_by_mitod(mitod: MitodBox):
    start(mitod)
    owner = mitod.box.run(["stat", "-c", "%U %G", DATABASE]).stdout.split()
    assert owner == ["mitod", "mitod"]
