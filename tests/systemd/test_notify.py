"""mitod-notify.service (Type=notify, sd_notify and the watchdog) under a real systemd 252.

One box serves the module, with mitod installed by scripts/install. Each test
starts from the installed configuration with both units stopped.
"""

from __future__ import annotations

import json

import pytest

from tests.systemd.box import Bind
from tests.systemd.mitod_box import (
    MitodBox,
    elapsed_seconds,
    message_text,
    site_config,
    timing_line,
)

pytestmark = pytest.mark.slow

UNIT = "mitod-notify.service"
DOWN_PORT = 18099  # nothing listens here, so a site on it is down
WATCHDOG_SECONDS = 3
WATCHDOG_DROP_IN = (
    "[Service]\n"
    f"WatchdogSec={WATCHDOG_SECONDS}s\n"
    "Environment=MITOD_TEST_HOOKS=1\n"
)


@pytest.fixture(scope="module")
def systemd_box_binds(mitod_install_binds: list[Bind]) -> list[Bind]:
    return mitod_install_binds


@pytest.fixture(autouse=True)
def fresh_installation(fresh_mitod: MitodBox):
    """Restore the fresh installation after every test of this module."""


def test_start_returns_after_ready(mitod: MitodBox):
    # One shell in the box, so nothing runs between systemctl returning and the checks.
    script = "systemctl start mitod-notify && systemctl is-active mitod-notify && mitoctl status"
    result = mitod.box.run(["sh", "-c", script], check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("active\n")
    values = mitod.show(UNIT, "StatusText", "MainPID", "NotifyAccess", "Type")
    assert values["Type"] == "notify"
    assert values["StatusText"].startswith("running; 0 sites")
    assert mitod.process_ids(int(values["MainPID"])) == mitod.account_ids("mitod")


def test_reload_returns_to_active(mitod: MitodBox):
    mitod.box.systemctl("start", UNIT)
    pid = mitod.main_pid(UNIT)
    mitod.write_conf("10-down.toml", site_config("down", f"http://127.0.0.1:{DOWN_PORT}/"))
    since = mitod.journal_mark()

    # mitod sends RELOADING=1 while it reloads; systemd then waits for
    # READY=1, up to TimeoutStartSec=, before the unit is active again.
    mitod.box.systemctl("reload", UNIT, timeout=20)

    mitod.wait_for_journal(UNIT, since, "Reloaded configuration (SIGHUP)")
    mitod.wait_until(lambda: mitod.show(UNIT, "ActiveState", "SubState")
                     == {"ActiveState": "active", "SubState": "running"},
                     timeout=10, message=f"{UNIT} to leave the reloading state")
    assert mitod.main_pid(UNIT) == pid
    status = json.loads(mitod.box.run(["mitoctl", "status", "--json"]).stdout)
    assert [site["name"] for site in status["sites"]] == ["down"]


def test_watchdog_restarts_stuck_scheduler(mitod: MitodBox):
    mitod.add_drop_in(UNIT, WATCHDOG_DROP_IN)
    mitod.box.systemctl("start", UNIT)
    pid = mitod.main_pid(UNIT)
    restarts = int(mitod.property(UNIT, "NRestarts"))
    assert mitod.property(UNIT, "WatchdogUSec") == f"{WATCHDOG_SECONDS}s"
    # The scheduler heartbeat age at which mitod stops pinging, from the installed package.
    read_limit = "from mitod.daemon.runner import SCHEDULER_STUCK_AFTER; print(SCHEDULER_STUCK_AFTER)"
    stuck_after = float(mitod.box.run(["/opt/mitod/bin/python", "-c", read_limit]).stdout)

    # Healthy: the pings keep coming (systemd stores the time of the last one).
    first_ping = mitod.property(UNIT, "WatchdogTimestampMonotonic")
    mitod.wait_until(lambda: mitod.property(UNIT, "WatchdogTimestampMonotonic") != first_ping,
                     timeout=WATCHDOG_SECONDS * 2, message="a second watchdog ping")

    since = mitod.journal_mark()
    stick_scheduler = f'kill -USR2 {pid} && python3 -c "import time; print(time.monotonic_ns() // 1000)"'
    stuck_usec = mitod.box.run(["sh", "-c", stick_scheduler]).stdout
    mitod.wait_for_journal(UNIT, since, "Test hook: the scheduler is now stuck on purpose")
    new_pid = mitod.wait_active(UNIT, replacing=pid,
                                timeout=stuck_after + WATCHDOG_SECONDS + 20)

    assert int(mitod.property(UNIT, "NRestarts")) == restarts + 1
    mitod.wait_for_journal(UNIT, since, "Withholding the systemd watchdog ping")
    mitod.wait_for_journal(UNIT, since, f"Watchdog timeout (limit {WATCHDOG_SECONDS}s)!")
    mitod.wait_for_journal(UNIT, since, "Failed with result 'watchdog'")
    assert mitod.process_ids(new_pid) == mitod.account_ids("mitod")

    back = elapsed_seconds(int(stuck_usec), int(mitod.property(UNIT, "ActiveEnterTimestampMonotonic")))
    print(timing_line("kill -USR2 (scheduler stuck) until restarted by the watchdog and active",
                      back, f"WatchdogSec={WATCHDOG_SECONDS}s, stuck after "
                            f"{stuck_after:g} s, RestartSec=2s"))
    # Pings continue until the heartbeat is stuck_after seconds old.
    assert back >= stuck_after


def test_stop_sends_stopping(mitod: MitodBox):
    mitod.box.systemctl("start", UNIT)
    since = mitod.journal_mark()

    mitod.box.systemctl("stop", UNIT)

    assert mitod.active_state(UNIT) == "inactive"
    assert mitod.property(UNIT, "Result") == "success"
    assert mitod.property(UNIT, "ExecMainStatus") == "0"
    assert mitod.box.run(["pgrep", "-u", "mitod"], check=False).returncode == 1
    mitod.wait_for_journal(UNIT, since, "mitod stopped")


def test_start_fails_on_broken_config_without_restart(mitod: MitodBox):
    mitod.write_conf("90-broken.toml", site_config("broken", "ftp://example.invalid/"))
    since = mitod.journal_mark()

    started = mitod.box.systemctl("start", UNIT, check=False)

    assert started.returncode != 0
    # "failed" rather than "activating (auto-restart)": RestartPreventExitStatus=78 applies.
    values = mitod.show(UNIT, "ActiveState", "ExecMainStatus", "NRestarts")
    assert values == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    mitod.wait_for_journal(UNIT, since, "90-broken.toml: site[0].url: expected an http://")
    status = mitod.box.systemctl("status", UNIT, check=False).stdout
    assert "status=78" in status, status
    assert "90-broken.toml: site[0].url: expected an http://" in status, status
    entries = mitod.journal(UNIT, since)
    assert any(message_text(entry) == "mitod: invalid configuration:" for entry in entries)
