"""The control socket of a real mitod process: every command, concurrency, limits and access."""

import atexit
import grp
import json
import os
import pwd
import random
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mitod.client import Client, ControlError
from mitod.control import protocol
from mitod.engine.tasks import STATUSES
from tests.fixtures.servers import HealthyServer, SlowServer, start_server  # noqa: F401
from tests.harness import ROOT, child_env, wait_for

pytestmark = pytest.mark.slow

STATUS_KEYS = {"state", "pid", "version", "started_at", "uptime_seconds", "config", "tasks",
               "queue_depth", "workers", "threads", "sites", "system"}
SITE_KEYS = {"name", "state", "since", "last_check_at", "last_response_ms", "last_error"}




@pytest.fixture
def client(shared):
    with Client(str(shared.socket)) as connection:
        yield connection


def raw_connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def readable_within(sockets: list, seconds: float) -> set[int]:
    """Return the file descriptors among ``sockets`` that become readable within ``seconds``."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    ready: set[int] = set()
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        for fd, _events in poller.poll(remaining * 1000):
            ready.add(fd)
            poller.unregister(fd)
    return ready


def operation_rows(setup, event_type: str) -> list:
    return setup.query("SELECT * FROM operation_log WHERE event_type = ? ORDER BY id",
                       (event_type,))


# -- read-only commands --------------------------------------------------------

def test_status_has_documented_keys(client):
    document = wait_for(lambda: (lambda d: d if d["system"] and d["sites"][0]["last_check_at"]
                                 else None)(client.call("status")),
                        15, message="a system sample and a site check")
    assert STATUS_KEYS <= set(document)
    assert document["state"] == "running"
    assert set(document["tasks"]) == set(STATUSES)
    assert set(document["workers"]) == {"busy", "total"}
    assert document["workers"]["total"] == 4
    assert SITE_KEYS <= set(document["sites"][0])
    assert document["sites"][0]["name"] == "web"
    assert "cpu_percent" in document["system"]


def test_version_and_ping(client):
    version = client.call("version")
    assert version["protocol"] == 1
    assert version["supported_versions"] == [1]
    assert client.call("ping")["pong"] is True


def test_unknown_command_lists_commands(client):
    with pytest.raises(ControlError) as caught:
        client.call("restart")
    assert caught.value.code == "unknown_command"
    assert "status" in caught.value.message


def test_jobs_include_scheduled_and_on_demand(client):
    jobs = {job["name"]: job for job in client.call("jobs")["jobs"]}
    assert set(jobs) == {"site:web", "system_health", "optimization", "progress_report",
                         "emergency_optimization", "disk_cleanup"}
    assert jobs["site:web"]["interval_s"] == 1.0
    assert jobs["site:web"]["priority"] == 2
    assert jobs["site:web"]["next_run_at"] is not None
    assert jobs["emergency_optimization"]["on_demand"] is True
    assert jobs["emergency_optimization"]["priority"] == 1
    assert jobs["disk_cleanup"]["next_run_at"] is None


def test_jobs_show_last_task(client):
    wait_for(lambda: client.call("jobs")["jobs"], 5)
    site = wait_for(lambda: next((job for job in client.call("jobs")["jobs"]
                                  if job["name"] == "site:web" and job["last_task"]), None),
                    10, message="a site:web task")
    assert site["last_task"]["status"] in STATUSES


def test_tasks_filters(client, shared):
    wait_for(lambda: len(shared.query("SELECT id FROM autonomous_tasks WHERE status = "
                                      "'completed' AND name = 'site:web'")) >= 3, 15,
             message="three completed site checks")
    completed = client.call("tasks", status="completed")["tasks"]
    assert completed
    assert all(task["status"] == "completed" for task in completed)
    by_job = client.call("tasks", job="site:web")["tasks"]
    assert by_job
    assert all(task["name"] == "site:web" for task in by_job)
    limited = client.call("tasks", limit=2)["tasks"]
    assert len(limited) == 2
    created = [task["created_at"] for task in client.call("tasks", limit=50)["tasks"]]
    assert created == sorted(created, reverse=True)


def test_tasks_rejects_unknown_status(client):
    with pytest.raises(ControlError) as caught:
        client.call("tasks", status="sleeping")
    assert caught.value.code == "bad_request"


def test_logs_filters(client, shared):
    wait_for(lambda: len(operation_rows(shared, "task.enqueued")) >= 2, 10)
    exact = client.call("logs", event_type="task.enqueued", limit=10)["events"]
    assert exact
    assert all(event["event_type"] == "task.enqueued" for event in exact)
    prefix = client.call("logs", event_type="task.*", limit=30)["events"]
    assert {event["event_type"] for event in prefix} > {"task.enqueued"}
    assert all(event["event_type"].startswith("task.") for event in prefix)
    ids = [event["id"] for event in prefix]
    assert ids == sorted(ids)
    assert len(client.call("logs", limit=3)["events"]) == 3


def test_logs_since(client, shared):
    rows = shared.query("SELECT id, timestamp FROM operation_log ORDER BY id")
    middle = rows[len(rows) // 2]
    events = client.call("logs", since=middle["timestamp"], limit=1000)["events"]
    assert events[0]["timestamp"] >= middle["timestamp"]
    assert all(event["timestamp"] >= middle["timestamp"] for event in events)
    assert client.call("logs", since="2999-01-01T00:00:00+00:00")["events"] == []
    recent = client.call("logs", since="1h", limit=1000)["events"]
    assert len(recent) >= len(events)


def test_logs_since_rejects_words(client):
    with pytest.raises(ControlError) as caught:
        client.call("logs", since="yesterday")
    assert caught.value.code == "bad_request"


@pytest.mark.timeout(30)
def test_logs_follow_streams_new_rows(shared):
    with Client(str(shared.socket)) as follower, Client(str(shared.socket)) as other:
        stream = follower.stream("logs", follow=True, event_type="operation.*", limit=1)
        first = next(stream)
        assert "events" in first
        other.call("stop")
        other.call("start")
        seen = [next(stream)["event"]["event_type"], next(stream)["event"]["event_type"]]
    assert seen == ["operation.paused", "operation.resumed"]


# -- mutating commands ---------------------------------------------------------

def test_stop_and_start_change_state(client, shared):
    try:
        assert client.call("stop") == {"state": "paused", "changed": True,
                                       "running": client.call("status")["workers"]["busy"]}
        assert client.call("status")["state"] == "paused"
        assert client.call("stop")["changed"] is False
    finally:
        assert client.call("start") == {"state": "running", "changed": True}
    assert client.call("status")["state"] == "running"
    assert client.call("start")["changed"] is False


def test_mutating_commands_are_audited(client, shared):
    before = len(operation_rows(shared, "control.command"))
    client.call("start")
    rows = operation_rows(shared, "control.command")
    assert len(rows) == before + 1
    details = json.loads(rows[-1]["details"])
    assert details["command"] == "start"
    assert details["uid"] == os.getuid()
    assert details["pid"] == os.getpid()


def test_read_only_commands_are_not_audited(client, shared):
    before = len(operation_rows(shared, "control.command"))
    client.call("status")
    client.call("tasks")
    assert len(operation_rows(shared, "control.command")) == before


def test_run_wait_returns_result(client):
    result = client.call("run", job="site:web", wait=True, timeout=20)
    task = result["task"]
    assert result["timed_out"] is False
    assert task["status"] == "completed"
    assert task["origin"] == "operator"
    assert task["result"]["ok"] is True
    assert task["result"]["status_code"] == 200
    assert "Enqueued job site:web as task" in result["summary"]


def test_run_without_wait_returns_task(client):
    result = client.call("run", job="progress_report")
    assert result["task"]["name"] == "progress_report"
    assert result["task"]["status"] == "queued"
    assert len(result["task"]["id"]) == 32


def test_run_unknown_job_is_not_found(client):
    with pytest.raises(ControlError) as caught:
        client.call("run", job="site:nope")
    assert caught.value.code == "not_found"
    assert "site:web" in caught.value.details["jobs"]


def test_stop_wait_waits_for_running_task(make_setup, make_daemon, start_server):
    slow = start_server(SlowServer, delay=1.5)
    setup = make_setup(sites=[{"name": "slow", "url": slow.url, "interval": "1h",
                               "timeout": "5s"}])
    make_daemon(setup).start()
    with Client(str(setup.socket)) as client:
        wait_for(lambda: client.call("status")["workers"]["busy"] == 0, 10,
                 message="the first checks to finish")
        client.call("run", job="site:slow")
        wait_for(lambda: client.call("status")["workers"]["busy"] >= 1, 5,
                 message="the slow check to start")
        quick = client.call("stop", wait=True, timeout=0.2)
        assert quick["timed_out"] is True
        assert quick["running"] >= 1
        patient = client.call("stop", wait=True, timeout=10)
        assert patient["timed_out"] is False
        assert patient["running"] == 0
        assert patient["changed"] is False


def test_reload_applies_added_and_removed_sites(make_setup, make_daemon, start_server):
    first = start_server(HealthyServer)
    second = start_server(HealthyServer)
    setup = make_setup(sites=[{"name": "old", "url": first.url, "interval": "1h",
                               "timeout": "1s"}])
    make_daemon(setup).start()
    setup.sites = [{"name": "new", "url": second.url, "interval": "1s", "timeout": "1s"}]
    setup.write()
    with Client(str(setup.socket)) as client:
        result = client.call("reload")
        assert "site new added" in result["changes"]
        assert "site old removed" in result["changes"]
        names = {job["name"] for job in client.call("jobs")["jobs"]}
        assert "site:new" in names
        assert "site:old" not in names
    wait_for(lambda: setup.query("SELECT id FROM check_results WHERE job = 'site:new'"), 10,
             message="a check of the added site")
    assert [row["event_type"] for row in operation_rows(setup, "config.reloaded")]


def test_reload_rejects_broken_file(make_setup, make_daemon):
    setup = make_setup()
    make_daemon(setup).start()
    with Client(str(setup.socket)) as client:
        jobs_before = [job["name"] for job in client.call("jobs")["jobs"]]
        setup.sections["daemon"]["workers"] = "many"
        setup.sections["daemon"]["colour"] = "blue"
        setup.write()
        with pytest.raises(ControlError) as caught:
            client.call("reload")
        assert caught.value.code == "bad_request"
        errors = caught.value.details["errors"]
        assert len(errors) == 2
        assert any("workers" in error for error in errors)
        assert any("colour" in error for error in errors)
        for error in errors:
            assert error in caught.value.message
        assert [job["name"] for job in client.call("jobs")["jobs"]] == jobs_before
        assert client.call("status")["workers"]["total"] == 4


# -- concurrency, hostile input and limits -------------------------------------

def test_fifty_concurrent_clients(shared):
    def work(_index):
        with Client(str(shared.socket)) as client:
            return [client.call("status")["state"] for _ in range(5)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(work, range(50)))
    assert len(results) == 50
    assert all(states == ["running"] * 5 for states in results)


def test_bad_input_gets_errors_and_daemon_keeps_answering(shared):
    noise = random.Random(1234).randbytes(4096)
    cases = [noise, b"\xff\xfe\xfd\n", b"{" * 70000 + b"\n", b"x" * (1 << 20),
             b'{"v": 1, "id": 1, "command": "sta']
    for payload in cases:
        sock = raw_connect(shared.socket)
        with sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = read_all(sock)
        for line in data.splitlines():
            response = json.loads(line)
            assert response["ok"] is False
            assert response["error"]["code"] == "bad_request"
        with Client(str(shared.socket)) as client:
            assert client.call("status")["state"] == "running"


def test_hundreds_of_idle_connections(make_setup, make_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    setup = make_setup(control={"group": "", "socket_mode": "0660", "idle_timeout": "1s",
                                "max_connections": 64})
    make_daemon(setup).start()
    held = []
    try:
        for _ in range(200):
            held.append(raw_connect(setup.socket))
        opened = time.monotonic()
        ready = readable_within(held, 0.5)
        busy = [sock for sock in held if sock.fileno() in ready]
        idle = [sock for sock in held if sock.fileno() not in ready]
        assert len(busy) == 136
        for sock in busy:
            response = json.loads(read_all(sock, 2))
            assert response["error"]["code"] == "busy"
        for sock in idle:
            assert read_all(sock, 5) == b""
        assert time.monotonic() - opened < 6
    finally:
        for sock in held:
            sock.close()
    with Client(str(setup.socket)) as client:
        assert client.call("status")["state"] == "running"


# -- the socket file -----------------------------------------------------------

def test_socket_mode_and_group_as_configured(make_setup, make_daemon):
    group = grp.getgrnam("nogroup")
    setup = make_setup(control={"group": "nogroup", "socket_mode": "0640"})
    make_daemon(setup).start()
    info = os.stat(setup.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_gid == group.gr_gid
    assert sorted(path.name for path in setup.base.glob("*.tmp")) == []


def test_killed_daemon_socket_is_replaced(make_setup, make_daemon):
    setup = make_setup()
    first = make_daemon(setup, name="first").start()
    first.signal(signal.SIGKILL)
    first.process.wait(10)
    assert stat.S_ISSOCK(os.lstat(setup.socket).st_mode)
    second = make_daemon(setup, name="second").start()
    assert "Removed stale control socket" in second.stderr()
    with Client(str(setup.socket)) as client:
        assert client.call("status")["pid"] == second.pid


def test_second_start_keeps_live_socket(make_setup, make_daemon):
    setup = make_setup()
    first = make_daemon(setup, name="first").start()
    inode = os.stat(setup.socket).st_ino
    assert make_daemon(setup, name="same-config").run_to_exit() == 1
    rival = make_setup()
    rival.sections["daemon"]["socket"] = str(setup.socket)
    rival.write()
    second = make_daemon(rival, name="rival")
    assert second.run_to_exit() == 1
    assert f"another mitod is answering on {setup.socket}" in second.stderr()
    assert os.stat(setup.socket).st_ino == inode
    with Client(str(setup.socket)) as client:
        assert client.call("status")["pid"] == first.pid


def test_regular_file_at_socket_path_stops_start(make_setup, make_daemon):
    setup = make_setup()
    setup.socket.write_text("not a socket")
    daemon = make_daemon(setup)
    assert daemon.run_to_exit() == 1
    assert "exists and is not a socket" in daemon.stderr()
    assert setup.socket.read_text() == "not a socket"


# -- access control --------------------------------------------------------------

CLIENT_SCRIPT = """
import json, sys
from mitod.client import Client, ControlError
results = {}
with Client(sys.argv[1]) as client:
    for command in sys.argv[2:]:
        try:
            client.call(command)
            results[command] = "ok"
        except ControlError as error:
            results[command] = error.code + ": " + error.message
print(json.dumps(results))
"""


def world_executable(path: str) -> bool:
    """Return True if any user may execute ``path``: it and every folder above it have o+x."""
    real = os.path.realpath(path)
    current = real
    while True:
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def interpreter_for_other_users() -> str | None:
    """Return a Python 3.11+ that unprivileged users may run, preferring the current one.

    The current interpreter can live under a private folder (pyenv in /root).
    Then the system's python3 runs the child.
    """
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate) or not world_executable(candidate):
            continue
        check = subprocess.run([candidate, "-c", "import sys; sys.exit(sys.version_info < "
                                "(3, 11))"], capture_output=True, timeout=30)
        if check.returncode == 0:
            return candidate
    return None


_readable_code: list[str] = []


def code_readable_by_everyone() -> str:
    """Return a folder with copies of mitod and click that every user may read.

    The checkout and its .venv may sit below a folder that other users cannot
    enter (a fresh clone in a mktemp folder is mode 0700), so the child gets
    its own copy, made once per test session.
    """
    if not _readable_code:
        import click

        folder = tempfile.mkdtemp(prefix="mitod-code-", dir="/tmp")
        shutil.copytree(ROOT / "mitod", os.path.join(folder, "mitod"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(os.path.dirname(click.__file__), os.path.join(folder, "click"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for base, folders, files in os.walk(folder):
            os.chmod(base, 0o755)
            for name in files:
                os.chmod(os.path.join(base, name), 0o644)
        atexit.register(shutil.rmtree, folder, True)
        _readable_code.append(folder)
    return _readable_code[0]


def run_as(user: str, group: str, extra_groups: list, *arguments: str):
    """Run ``python ARGUMENTS`` as ``user`` with exactly the given groups."""
    python = interpreter_for_other_users()
    if python is None:
        pytest.skip("no Python interpreter here may be run by other users")
    return subprocess.run([python, *arguments], user=user, group=group,
                          extra_groups=extra_groups,
                          env=child_env({"PYTHONPATH": code_readable_by_everyone()}),
                          cwd="/", capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def mitoctl_as(user: str, group: str, extra_groups: list, *arguments: str):
    return run_as(user, group, extra_groups, "-m", "mitod.cli.mitoctl", *arguments)


def open_to_everyone(setup) -> None:
    setup.base.chmod(0o755)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_outsider_may_read_but_not_mutate(make_setup, make_daemon):
    setup = make_setup(control={"group": "", "socket_mode": "0666"})
    open_to_everyone(setup)
    make_daemon(setup).start()
    completed = run_as("nobody", "nogroup", [], "-c", CLIENT_SCRIPT,
                       str(setup.socket), "status", "tasks", "stop", "reload")
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    assert results["status"] == "ok"
    assert results["tasks"] == "ok"
    assert results["stop"].startswith("permission_denied: stop needs root")
    assert results["reload"].startswith("permission_denied")
    with Client(str(setup.socket)) as client:
        assert client.call("status")["state"] == "running"
    assert operation_rows(setup, "control.command") == []


@needs_root
def test_outsider_gets_exit_4_from_mitoctl(make_setup, make_daemon):
    setup = make_setup(control={"group": "root", "socket_mode": "0666"})
    open_to_everyone(setup)
    make_daemon(setup).start()
    denied = mitoctl_as("nobody", "nogroup", [], "--socket", str(setup.socket), "stop")
    assert denied.returncode == 4
    assert "stop needs membership in group root (or root)" in denied.stderr
    assert "usermod -aG root nobody" in denied.stderr
    allowed = mitoctl_as("nobody", "nogroup", [], "--socket", str(setup.socket), "status")
    assert allowed.returncode == 0, allowed.stderr


@pytest.fixture
def member_account():
    """Create a group and a user in it for one test, and remove both afterwards."""
    name = f"mitodt{os.getpid() % 100000}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-G", name, "-s",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(["groupdel", name], capture_output=True)
        raise
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


@needs_root
def test_group_member_may_mutate(make_setup, make_daemon, member_account):
    group = grp.getgrnam(member_account)
    setup = make_setup(control={"group": member_account, "socket_mode": "0660"})
    open_to_everyone(setup)
    make_daemon(setup).start()
    member = pwd.getpwnam(member_account)
    stopped = mitoctl_as(member_account, "nogroup", [group.gr_gid], "--socket",
                         str(setup.socket), "stop")
    assert stopped.returncode == 0, stopped.stderr
    with Client(str(setup.socket)) as client:
        assert client.call("status")["state"] == "paused"
    details = json.loads(operation_rows(setup, "control.command")[-1]["details"])
    assert details["uid"] == member.pw_uid
    assert details["user"] == member_account
    assert details["command"] == "stop"


@needs_root
def test_supplementary_group_outside_database_is_denied(make_setup, make_daemon,
                                                        member_account):
    group = grp.getgrnam(member_account)
    setup = make_setup(control={"group": member_account, "socket_mode": "0660"})
    open_to_everyone(setup)
    make_daemon(setup).start()
    # The kernel lets the user nobody open the socket through the supplementary
    # group, but the group database does not list nobody as a member, so stop is denied.
    denied = mitoctl_as("nobody", "nogroup", [group.gr_gid], "--socket", str(setup.socket),
                        "stop")
    assert denied.returncode == 4
    assert f"membership in group {member_account}" in denied.stderr
    shut_out = mitoctl_as("nobody", "nogroup", [], "--socket", str(setup.socket), "status")
    assert shut_out.returncode == 4
    assert "permission denied opening the control socket" in shut_out.stderr


def test_protocol_version_two_is_rejected(shared):
    with raw_connect(shared.socket) as sock:
        sock.sendall(b'{"v": 2, "id": "a", "command": "status"}\n')
        response = json.loads(protocol.LineReader(sock, 1 << 20).read_line(
            time.monotonic() + 5))
    assert response["id"] == "a"
    assert response["error"]["code"] == "bad_request"
    assert response["error"]["details"] == {"supported_versions": [1]}


def test_requests_pipelined_behind_a_wait_are_answered(shared):
    with raw_connect(shared.socket) as sock:
        sock.sendall(protocol.encode(protocol.request_message(
            1, "run", {"job": "site:web", "wait": True, "timeout": 20}))
            + protocol.encode(protocol.request_message(2, "ping")))
        sock.shutdown(socket.SHUT_WR)
        lines = read_all(sock, 30).splitlines()
    responses = [json.loads(line) for line in lines]
    assert [response["id"] for response in responses] == [1, 2]
    assert responses[0]["result"]["task"]["status"] == "completed"
    assert responses[1]["result"]["pong"] is True


SERVER_SCRIPT = """
import sys
import tempfile
from mitod.config.control import ControlConfig
from mitod.control.server import ControlServer, ControlServerError
server = ControlServer(sys.argv[1], ControlConfig(group=sys.argv[2]), None)
try:
    server.start()
except ControlServerError as error:
    print(error)
    sys.exit(1)
server.stop()
"""


@needs_root
def test_unwritable_folder_stops_server_start(make_setup):
    setup = make_setup()
    open_to_everyone(setup)
    completed = run_as("nobody", "nogroup", [], "-c", SERVER_SCRIPT, str(setup.socket), "")
    assert completed.returncode == 1, completed.stderr
    nobody = pwd.getpwnam("nobody")
    assert f"folder {setup.base} is not writable by uid {nobody.pw_uid}" in completed.stdout


@needs_root
def test_foreign_group_stops_server_start(make_setup):
    setup = make_setup()
    open_to_everyone(setup)
    nobody = pwd.getpwnam("nobody")
    os.chown(setup.base, nobody.pw_uid, nobody.pw_gid)
    completed = run_as("nobody", "nogroup", [], "-c", SERVER_SCRIPT, str(setup.socket), "root")
    assert completed.returncode == 1, completed.stderr
    assert f"cannot give control socket {setup.socket} the group root" in completed.stdout
    assert sorted(path.name for path in setup.base.iterdir()) == ["mitod.toml"]
