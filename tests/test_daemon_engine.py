"""The whole daemon in the foreground: real process, real sites, real signals, real SQLite."""

import hashlib
import signal
import sqlite3
import subprocess
import sys

from tests.fixtures.servers import HealthyServer, SlowServer
from tests.harness import child_env, mitod_command, wait_for

FAST_SITE = {"interval": "1s", "timeout": "1s"}


def latest_ok(setup, job="site:web"):
    rows = setup.query("SELECT ok FROM check_results WHERE job = ? ORDER BY id DESC LIMIT 1",
                       (job,))
    return rows[0]["ok"] if rows else None


def test_site_down_and_up_recorded(make_setup, make_daemon, start_server):
    server = start_server(HealthyServer)
    setup = make_setup(sites=[{"name": "web", "url": server.url, **FAST_SITE}])
    daemon = make_daemon(setup).start()

    wait_for(lambda: latest_ok(setup) == 1, 10, message="a first UP result")
    server.stop()
    wait_for(lambda: latest_ok(setup) == 0, 10, message="a DOWN result after the server stopped")
    server.start()
    wait_for(lambda: latest_ok(setup) == 1, 10, message="an UP result after it started again")

    down = setup.query("SELECT error FROM check_results WHERE job = 'site:web' AND ok = 0")
    assert "connection refused" in down[0]["error"]
    events = [row["event_type"] for row in setup.query(
        "SELECT event_type FROM operation_log WHERE event_type LIKE 'site.%' ORDER BY id")]
    assert events == ["site.up", "site.down", "site.up"]
    log = daemon.stderr()
    assert "Site web is DOWN: connection refused" in log
    assert "Site web is UP again (was down)" in log
    assert daemon.stop() == 0


def test_sigterm_lets_running_task_finish(make_setup, make_daemon, start_server):
    server = start_server(SlowServer, delay=1.5)
    setup = make_setup(sites=[{"name": "web", "url": server.url, "interval": "1h",
                               "timeout": "10s"}])
    daemon = make_daemon(setup).start()
    wait_for(lambda: setup.query("SELECT 1 FROM autonomous_tasks WHERE name = 'site:web' "
                                 "AND status = 'running'"), 10, message="the check to start")
    assert daemon.stop() == 0
    rows = setup.query("SELECT status FROM autonomous_tasks WHERE name = 'site:web'")
    assert [row["status"] for row in rows] == ["completed"]
    assert not setup.pidfile.exists()
    assert not setup.socket.exists()


def test_sigterm_requeues_task_past_shutdown_timeout(make_setup, make_daemon, start_server):
    server = start_server(SlowServer, delay=20)
    setup = make_setup(sites=[{"name": "web", "url": server.url, "interval": "1h",
                               "timeout": "30s"}],
                       daemon={"shutdown_timeout": "500ms"})
    daemon = make_daemon(setup).start()
    wait_for(lambda: setup.query("SELECT 1 FROM autonomous_tasks WHERE name = 'site:web' "
                                 "AND status = 'running'"), 10, message="the check to start")
    assert daemon.stop() == 0
    rows = setup.query("SELECT status FROM autonomous_tasks WHERE name = 'site:web'")
    assert [row["status"] for row in rows] == ["queued"]
    assert setup.query("SELECT 1 FROM operation_log WHERE event_type = 'task.requeued'")


def test_sigkill_then_restart_recovers_tasks(make_setup, make_daemon, start_server):
    server = start_server(SlowServer, delay=30)
    setup = make_setup(sites=[{"name": f"s{n}", "url": server.url, "interval": "1h",
                               "timeout": "40s"} for n in range(3)])
    first = make_daemon(setup).start()
    wait_for(lambda: len(setup.query("SELECT 1 FROM autonomous_tasks WHERE status = 'running' "
                                     "AND name LIKE 'site:%'")) == 3, 10,
             message="three checks running")
    first.signal(signal.SIGKILL)
    first.process.wait(10)
    running = {row["id"] for row in setup.query(
        "SELECT id FROM autonomous_tasks WHERE status = 'running'")}
    every_task = {row["id"] for row in setup.query("SELECT id FROM autonomous_tasks")}
    assert len(running) >= 3
    server.delay = 0

    second = make_daemon(setup, name="second").start()
    wait_for(lambda: not setup.query("SELECT 1 FROM autonomous_tasks WHERE status IN "
                                     "('queued', 'running', 'retrying')"), 20,
             message="the recovered tasks to finish")
    status = {row["id"]: row["status"] for row in setup.query(
        "SELECT id, status FROM autonomous_tasks")}
    assert every_task <= set(status)  # no task lost
    for task_id in running:
        assert status[task_id] == "completed"
    recovered = setup.query("SELECT details FROM operation_log "
                            "WHERE event_type = 'daemon.recovered'")
    assert len(recovered) == 1
    for task_id in running:
        assert task_id in recovered[0]["details"]
    assert f"Recovered {len(running)} tasks left running" in second.stderr()
    assert second.stop() == 0


def test_second_daemon_exits_1_and_first_keeps_running(make_setup, make_daemon, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, **FAST_SITE}])
    first = make_daemon(setup).start()
    pid_before = setup.pidfile.read_text()

    second = make_daemon(setup, name="second")
    assert second.run_to_exit() == 1
    assert f"mitod is already running (pid {first.pid})" in second.stderr()
    assert setup.pidfile.read_text() == pid_before
    count = len(setup.query("SELECT 1 FROM check_results"))
    wait_for(lambda: len(setup.query("SELECT 1 FROM check_results")) > count, 10,
             message="the first daemon to keep checking")
    assert first.stop() == 0


def test_invalid_configuration_exits_78(make_setup, make_daemon):
    setup = make_setup()
    setup.sections["daemon"]["workers"] = 0
    setup.sections["log"]["level"] = "chatty"
    setup.write()
    daemon = make_daemon(setup)
    assert daemon.run_to_exit() == 78
    output = daemon.stderr()
    assert "daemon.workers: expected an integer from 1 to 64, got 0" in output
    assert 'log.level: expected one of "debug", "info", "warning", "error", got "chatty"' in output
    assert "Traceback" not in output
    assert not setup.database.exists()


def test_database_folder_is_a_file(make_setup, make_daemon):
    setup = make_setup()
    blocker = setup.base / "state"
    blocker.write_text("not a folder")
    setup.sections["daemon"]["database"] = str(blocker / "mitod.db")
    setup.write()
    daemon = make_daemon(setup)
    assert daemon.run_to_exit() == 1
    assert "is a file, not a folder" in daemon.stderr()
    assert "Traceback" not in daemon.stderr()
    assert blocker.read_text() == "not a folder"
    assert not setup.pidfile.exists()


def test_corrupt_database_stops_start_untouched(make_setup, make_daemon):
    setup = make_setup()
    setup.database.write_bytes(b"SQLite format 3\x00" + b"\x13" * 8192)
    before = hashlib.sha256(setup.database.read_bytes()).hexdigest()
    daemon = make_daemon(setup)
    assert daemon.run_to_exit() == 1
    assert f"database {setup.database}" in daemon.stderr()
    assert "Traceback" not in daemon.stderr()
    assert hashlib.sha256(setup.database.read_bytes()).hexdigest() == before


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def test_long_write_lock_slows_but_loses_nothing(make_setup, make_daemon, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, **FAST_SITE}])
    daemon = make_daemon(setup).start()
    wait_for(lambda: len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:web'")) >= 2,
             10, message="checks before the lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(setup.database), "10"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    hits_during_lock = healthy_server.hits
    assert holder.stdout.readline().strip() == "released"
    holder.wait(10)

    assert daemon.process.poll() is None  # still running
    wait_for(lambda: healthy_server.hits > hits_during_lock + 2, 15,
             message="checks to continue after the lock")
    wait_for(lambda: len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:web'"))
             >= healthy_server.hits - 1, 15, message="every check to have its result row")
    failed = setup.query("SELECT error_message FROM autonomous_tasks WHERE status = 'failed'")
    assert failed == []
    assert "is locked by another process" in daemon.stderr()
    assert daemon.stop() == 0
    results = len(setup.query("SELECT 1 FROM check_results WHERE job = 'site:web'"))
    completed = len(setup.query("SELECT 1 FROM autonomous_tasks WHERE name = 'site:web' "
                                "AND status = 'completed'"))
    assert results == completed


def test_foreground_logs_to_file_too(make_setup, make_daemon, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, **FAST_SITE}])
    daemon = make_daemon(setup).start()
    wait_for(lambda: setup.log_file.exists() and "Site web is UP" in setup.log_file.read_text(),
             10, message="the log file to show the check")
    line = next(l for l in setup.log_file.read_text().splitlines() if "Site web is UP" in l)
    assert " INFO mitod.jobs.site_check: " in line
    assert daemon.stop() == 0


def test_check_config_command_matches_daemon(make_setup):
    setup = make_setup()
    result = subprocess.run(mitod_command("--check-config", "--config", str(setup.config_path)),
                            capture_output=True, text=True, env=child_env(), timeout=30)
    assert result.returncode == 0, result.stderr


def test_audit_trail_for_one_check(make_setup, make_daemon, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1h",
                               "timeout": "2s"}])
    daemon = make_daemon(setup).start()
    wait_for(lambda: setup.query("SELECT 1 FROM autonomous_tasks WHERE name = 'site:web' "
                                 "AND status = 'completed'"), 10, message="the first check")
    task_id = setup.query("SELECT id FROM autonomous_tasks WHERE name = 'site:web'")[0]["id"]
    kinds = [row["event_type"] for row in setup.query(
        "SELECT event_type FROM operation_log WHERE task_id = ? ORDER BY id", (task_id,))]
    assert kinds == ["task.enqueued", "task.started", "site.up", "task.completed"]
    stamps = [row["timestamp"] for row in setup.query("SELECT timestamp FROM operation_log")]
    assert len({len(stamp) for stamp in stamps}) == 1
    assert all(stamp.endswith("+00:00") for stamp in stamps)
    assert daemon.stop() == 0
    assert sqlite3.connect(setup.database).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pause_survives_restart_and_run_still_works(make_setup, make_daemon, healthy_server):
    from mitod.client import Client

    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, **FAST_SITE}])
    first = make_daemon(setup).start()
    with Client(str(setup.socket)) as client:
        client.call("stop")
    assert first.stop() == 0

    second = make_daemon(setup, name="second").start()
    with Client(str(setup.socket)) as client:
        assert client.call("status")["state"] == "paused"
        hits = healthy_server.hits
        result = client.call("run", job="site:web", wait=True, timeout=10)
    assert result["task"]["status"] == "completed"
    assert healthy_server.hits == hits + 1  # the operator's run, and nothing scheduled
    scheduled = setup.query("SELECT 1 FROM autonomous_tasks WHERE origin = 'schedule' "
                            "AND created_at > (SELECT MAX(timestamp) FROM operation_log "
                            "WHERE event_type = 'daemon.started')")
    assert scheduled == []
    assert second.stop() == 0
