"""The detached daemon: readiness handshake, pidfile, signals, reload, logs and sd_notify."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import ROOT, child_env, mitod_command, wait_for


def launch(setup, env: dict | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``mitod --config FILE`` (the launcher) with output in files, as systemd would."""
    out_path = setup.base / "launcher.out"
    err_path = setup.base / "launcher.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.run(mitod_command("--config", str(setup.config_path)),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=child_env(env), cwd=ROOT, timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode,
                                       out_path.read_text(), err_path.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def daemon_pid(setup) -> int:
    return int(setup.pidfile.read_text().strip())


def processes_using(config_path: Path) -> list[int]:
    """Return pids of live processes whose command line names ``config_path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config_path).encode() in command and alive(int(entry)):
            found.append(int(entry))
    return found


@pytest.fixture
def daemons():
    """Track detached daemons by pidfile and SIGKILL any still alive after the test."""
    setups = []
    yield setups.append
    for setup in setups:
        for pid in processes_using(setup.config_path):
            os.kill(pid, signal.SIGKILL)


def stop(setup, timeout: float = 15.0) -> None:
    pid = daemon_pid(setup)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout, message=f"daemon {pid} to exit")


def test_launcher_returns_once_ready(make_setup, daemons, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1s",
                               "timeout": "1s"}])
    daemons(setup)
    result = launch(setup)
    assert result.returncode == 0, result.stderr
    pid = daemon_pid(setup)
    assert alive(pid)
    assert pid != os.getpid()
    assert setup.socket.exists()  # bound before the launcher returned
    assert os.getsid(pid) != os.getsid(0)  # setsid: a session of its own
    assert os.getsid(pid) != pid  # second fork: not a session leader, so no controlling tty
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Umask:\t0027" in status
    stop(setup)


def test_second_start_fails_and_first_keeps_running(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    assert launch(setup).returncode == 0
    pid = daemon_pid(setup)
    second = launch(setup)
    assert second.returncode == 1
    assert f"mitod is already running (pid {pid})" in second.stderr
    assert alive(pid)
    assert daemon_pid(setup) == pid
    stop(setup)


def test_start_after_sigkill_takes_over_stale_pidfile(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    assert launch(setup).returncode == 0
    old = daemon_pid(setup)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), 10, message="the killed daemon to disappear")
    assert setup.pidfile.exists()
    assert setup.socket.exists()  # left behind by the killed daemon

    result = launch(setup)
    assert result.returncode == 0, result.stderr
    new = daemon_pid(setup)
    assert new != old
    assert alive(new)
    stop(setup)


def test_pidfile_naming_unrelated_live_pid_does_not_block(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    setup.pidfile.write_text(f"{os.getpid()}\n")  # a live process that holds no lock
    result = launch(setup)
    assert result.returncode == 0, result.stderr
    assert daemon_pid(setup) != os.getpid()
    stop(setup)


def test_http_port_in_use_fails_with_reason(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", setup.http_port))
    blocker.listen()
    try:
        result = launch(setup)
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{setup.http_port}" in result.stderr
    assert "already in use" in result.stderr
    assert processes_using(setup.config_path) == []
    assert not setup.pidfile.exists()


def test_socket_path_taken_fails_with_reason(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    setup.socket.write_text("a regular file where the socket should go")
    result = launch(setup)
    assert result.returncode == 1
    assert str(setup.socket) in result.stderr
    assert processes_using(setup.config_path) == []
    assert setup.socket.read_text() == "a regular file where the socket should go"


def test_bad_configuration_exits_78_without_process(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    setup.sections["daemon"]["workers"] = "many"
    setup.write()
    result = launch(setup)
    assert result.returncode == 78
    assert "daemon.workers" in result.stderr
    assert processes_using(setup.config_path) == []


def test_daemon_error_after_fork_reaches_launcher(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    setup.database.write_text("not a database")
    result = launch(setup)
    assert result.returncode == 1
    assert "is not a SQLite database" in result.stderr
    assert processes_using(setup.config_path) == []


def test_sigterm_stops_within_shutdown_timeout(make_setup, daemons, start_server):
    from tests.fixtures.servers import SlowServer

    server = start_server(SlowServer, delay=30)
    setup = make_setup(sites=[{"name": "slow", "url": server.url, "interval": "1h",
                               "timeout": "40s"}],
                       daemon={"shutdown_timeout": "1s"})
    daemons(setup)
    assert launch(setup).returncode == 0
    wait_for(lambda: setup.query("SELECT 1 FROM autonomous_tasks WHERE name = 'site:slow' "
                                 "AND status = 'running'"), 10, message="the slow check to run")
    pid = daemon_pid(setup)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), 10, message="the daemon to exit")
    assert time.monotonic() - started < 5  # shutdown_timeout is 1 s
    assert not setup.pidfile.exists()
    assert not setup.socket.exists()
    rows = setup.query("SELECT status FROM autonomous_tasks WHERE name = 'site:slow'")
    assert [row["status"] for row in rows] == ["queued"]  # requeued, not lost


def jobs_in_log(setup) -> str:
    return setup.log_file.read_text()


def test_sighup_adds_and_removes_sites(make_setup, daemons, healthy_server):
    setup = make_setup(sites=[{"name": "old", "url": healthy_server.url, "interval": "1s",
                               "timeout": "1s"}])
    daemons(setup)
    assert launch(setup).returncode == 0
    pid = daemon_pid(setup)
    wait_for(lambda: setup.query("SELECT 1 FROM check_results WHERE job = 'site:old'"), 10,
             message="a check of the old site")

    setup.sites = [{"name": "new", "url": healthy_server.url, "interval": "1s", "timeout": "1s"}]
    setup.write()
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: setup.query("SELECT 1 FROM check_results WHERE job = 'site:new'"), 10,
             message="a check of the added site")
    reloaded = setup.query("SELECT message FROM operation_log WHERE event_type = "
                           "'config.reloaded'")
    assert "site new added" in reloaded[0]["message"]
    assert "site old removed" in reloaded[0]["message"]
    count = len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:old'"))
    wait_for(lambda: len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:new'")) >= 3,
             10, message="more checks of the new site")
    assert len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:old'")) <= count + 1
    assert daemon_pid(setup) == pid
    stop(setup)


def test_sighup_with_broken_file_keeps_old_configuration(make_setup, daemons, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1s",
                               "timeout": "1s"}])
    daemons(setup)
    assert launch(setup).returncode == 0
    pid = daemon_pid(setup)
    setup.config_path.write_text(setup.config_path.read_text()
                                 + '\n[[site]]\nname = "broken"\ninterval = "often"\n')
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "Reload (SIGHUP) rejected" in jobs_in_log(setup), 10,
             message="the rejected reload in the log")
    log = jobs_in_log(setup)
    assert "site[1].interval" in log
    assert "site[1].url: missing" in log
    assert alive(pid)
    count = len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:web'"))
    wait_for(lambda: len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:web'"))
             > count, 10, message="checks to continue on the old configuration")
    stop(setup)


def test_sigusr1_reopens_moved_log_file(make_setup, daemons):
    setup = make_setup()
    daemons(setup)
    assert launch(setup).returncode == 0
    pid = daemon_pid(setup)
    moved = setup.base / "mitod.log.old"
    setup.log_file.rename(moved)
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: setup.log_file.exists(), 10, message="a new log file")
    wait_for(lambda: "Reopened log file" in setup.log_file.read_text(), 10,
             message="the reopen line in the new file")
    assert "Handling signal SIGUSR1" in moved.read_text()
    stop(setup)


def test_log_file_rotates_by_size(make_setup, daemons, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1s",
                               "timeout": "1s"}],
                       log={"max_bytes": 4000, "backups": 2})
    daemons(setup)
    assert launch(setup).returncode == 0
    backup = setup.log_file.with_name("mitod.log.1")
    wait_for(backup.exists, 20, message="a rotated log file")
    assert setup.log_file.stat().st_size <= 4000
    stop(setup)


def thread_and_fd_counts(pid: int) -> tuple[int, int]:
    """Return the steady thread and descriptor counts: the minimum over a second.

    Sampling by the monitor and checks open descriptors for a moment, so a
    single reading can catch one in passing.
    """
    readings = []
    for _ in range(10):
        readings.append((len(os.listdir(f"/proc/{pid}/task")),
                         len(os.listdir(f"/proc/{pid}/fd"))))
        time.sleep(0.1)
    return min(r[0] for r in readings), min(r[1] for r in readings)


def test_twenty_reloads_leak_nothing(make_setup, daemons, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1h",
                               "timeout": "1s"}])
    daemons(setup)
    assert launch(setup).returncode == 0
    pid = daemon_pid(setup)
    setup.sites.append({"name": "other", "url": healthy_server.url, "interval": "1h",
                        "timeout": "1s"})
    setup.write()
    os.kill(pid, signal.SIGHUP)  # warm up: the added site's first check opens its connection
    wait_for(lambda: len(setup.query("SELECT 1 FROM operation_log WHERE event_type = "
                                     "'config.reloaded'")) == 1, 10, message="the first reload")
    wait_for(lambda: not setup.query("SELECT 1 FROM autonomous_tasks WHERE status IN "
                                     "('queued', 'running')"), 10, message="an idle queue")
    # Each thread opens its database connection on first use; the monitor's
    # first sample (every 2 s here) is the last of them.
    wait_for(lambda: setup.query("SELECT 1 FROM metric_samples WHERE source = 'mitod'"), 10,
             message="the monitor's first sample")
    before = thread_and_fd_counts(pid)
    for number in range(20):
        setup.sites[-1]["interval"] = f"{number + 2}h"  # a real change each time
        setup.write()
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: len(setup.query("SELECT 1 FROM operation_log WHERE event_type = "
                                         "'config.reloaded'")) == number + 2, 10,
                 message=f"reload {number + 1}")
    wait_for(lambda: not setup.query("SELECT 1 FROM autonomous_tasks WHERE status IN "
                                     "('queued', 'running')"), 10, message="an idle queue")
    after = thread_and_fd_counts(pid)
    assert after[0] == before[0], f"threads {before[0]} -> {after[0]}"
    assert after[1] == before[1], f"file descriptors {before[1]} -> {after[1]}"
    stop(setup)


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, folder: Path, abstract: bool = False):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"mitod-test-{os.getpid()}-{time.monotonic_ns()}"
            self.socket.bind("\0" + name)
            self.address = "@" + name
        else:
            path = folder / "notify.sock"
            self.socket.bind(str(path))
            self.address = str(path)
        self.socket.settimeout(0.2)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        try:
            while True:
                self.messages.append(self.socket.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            pass
        return self.messages

    def fields(self) -> list[str]:
        return [line for message in self.collect() for line in message.splitlines()]

    def close(self) -> None:
        self.socket.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_messages_in_order(make_setup, make_daemon, abstract):
    setup = make_setup()
    listener = NotifyListener(setup.base, abstract)
    try:
        daemon = make_daemon(setup, env={"NOTIFY_SOCKET": listener.address}).start()
        wait_for(lambda: any(f == "READY=1" for f in listener.fields()), 10,
                 message="READY=1")
        assert daemon.stop() == 0
        wait_for(lambda: "STOPPING=1" in listener.fields(), 5, message="STOPPING=1")
        fields = listener.fields()
        ready = fields.index("READY=1")
        assert any(f.startswith("STATUS=running") for f in fields[ready:])
        assert f"MAINPID={daemon.pid}" in fields
        assert fields.index("STOPPING=1") > ready
    finally:
        listener.close()


def test_watchdog_pings_stop_when_scheduler_stuck(make_setup, make_daemon):
    setup = make_setup()
    listener = NotifyListener(setup.base)
    try:
        env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000",
               "MITOD_TEST_HOOKS": "1"}
        daemon = make_daemon(setup, env=env).start()
        wait_for(lambda: listener.fields().count("WATCHDOG=1") >= 3, 10,
                 message="regular watchdog pings")
        daemon.signal(signal.SIGUSR2)  # test hook: the scheduler stops ticking
        daemon.wait_log("the scheduler is now stuck on purpose", 5)
        wait_for(lambda: "Withholding the systemd watchdog ping" in daemon.stderr(), 20,
                 message="the daemon to withhold pings")
        listener.collect()
        listener.messages.clear()
        time.sleep(1.0)  # two ping intervals: no WATCHDOG=1 may arrive in them
        assert "WATCHDOG=1" not in listener.fields()
        assert daemon.stop() == 0
    finally:
        listener.close()


def test_journal_stream_gets_priority_prefixes(make_setup, make_daemon, failing_server):
    setup = make_setup(sites=[{"name": "web", "url": failing_server.url, "interval": "1s",
                               "timeout": "1s"}], log={"level": "info", "file": ""})
    daemon = make_daemon(setup)
    daemon.err_path.write_bytes(b"")
    info = os.stat(daemon.err_path)
    daemon.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    daemon.start()
    daemon.wait_log("Site web is DOWN", 10)
    lines = daemon.stderr().splitlines()
    assert any(line.startswith("<6>mitod.daemon.runner: mitod is ready") for line in lines)
    assert any(line.startswith("<4>mitod.jobs.site_check: Site web is DOWN") for line in lines)
    assert all(line.startswith("<") for line in lines if line)
    assert not any(line[3:7].isdigit() for line in lines)  # no timestamp of ours
    assert daemon.stop() == 0


def test_units_pass_systemd_analyze_verify(tmp_path):
    """Both units verify; ExecStart points at this checkout's mitod instead of /opt/mitod.

    systemd-analyze verify checks that ExecStart= exists, and /opt/mitod only
    exists after scripts/install, so the copies verified here differ from the
    installed units in that path alone. The systemd box tests verify the
    installed units unchanged.
    """
    analyze = "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; .ci/run installs the systemd package")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    mitod = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "mitod"
    if not mitod.exists():
        mitod = ROOT / ".venv" / "bin" / "mitod"
    assert mitod.exists(), f"{mitod} is missing; run ./scripts/test, which installs it"
    units = []
    for name in ("mitod.service", "mitod-notify.service"):
        text = (ROOT / "systemd" / name).read_text()
        assert "/opt/mitod/bin/mitod" in text
        copy = tmp_path / name
        copy.write_text(text.replace("/opt/mitod/bin/mitod", str(mitod)))
        units.append(str(copy))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
