"""``mitoctl`` as a process against a real daemon: output, --json, exit codes and options."""

import json
import os
import pty
import select
import socket
import subprocess

import pytest

from mitod.cli import mitoctl
from tests.fixtures.servers import HealthyServer, start_server  # noqa: F401
from tests.harness import (ROOT, mitoctl_command, mitoctl_env,
                           run_mitoctl, wait_for)

pytestmark = pytest.mark.slow

ANSI_ESCAPE = "\x1b["




def parse_json(completed: subprocess.CompletedProcess):
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {completed.returncode}):\n{completed.stdout}\n"
                             f"{completed.stderr}") from None


# -- constants copied to keep start-up fast ------------------------------------

def test_copied_constants_match_their_sources():
    from mitod.config import DEFAULT_CONFIG_PATH
    from mitod.config.daemon import DaemonConfig
    from mitod.engine.tasks import STATUSES

    assert mitoctl.DEFAULT_CONFIG_PATH == DEFAULT_CONFIG_PATH
    assert mitoctl.DEFAULT_SOCKET_PATH == DaemonConfig.socket
    assert mitoctl.TASK_STATUSES == STATUSES


def test_builtin_jobs_match_catalog(shared):
    from mitod.config import load_config
    from mitod.jobs import catalog

    names = catalog.job_names(load_config(str(shared.config_path)))
    assert sorted(mitoctl.BUILTIN_JOBS) == sorted(name for name in names
                                                  if not name.startswith("site:"))


def test_status_path_imports_no_heavy_modules():
    code = ("import sys, mitod.cli.mitoctl; "
            "print(sorted(m for m in ('requests', 'psutil', 'schedule', 'sqlite3', "
            "'mitod.config', 'mitod.engine') if m in sys.modules))")
    completed = subprocess.run([*mitoctl_command()[:1], "-c", code], env=mitoctl_env(),
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert completed.stdout.strip() == "[]", completed.stderr


# -- help and completion -------------------------------------------------------

@pytest.mark.parametrize("command, fragment", [
    ("stop", "in seconds"),
    ("run", "in seconds"),
    ("tasks", "Maximum number of tasks"),
    ("logs", "duration back from now"),
])
def test_help_says_what_and_unit(command, fragment):
    completed = subprocess.run(mitoctl_command(command, "--help"), env=mitoctl_env(), cwd=ROOT,
                               capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0
    assert fragment in " ".join(completed.stdout.split())


def test_completion_script_for_bash():
    completed = subprocess.run(mitoctl_command(), env=mitoctl_env({"_MITOCTL_COMPLETE":
                                                                   "bash_source"}),
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0
    assert "_MITOCTL_COMPLETE=bash_complete" in completed.stdout


def test_completion_of_command_names():
    env = mitoctl_env({"_MITOCTL_COMPLETE": "bash_complete", "COMP_WORDS": "mitoctl st",
                       "COMP_CWORD": "1"})
    completed = subprocess.run(mitoctl_command(), env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=30)
    values = {line.split(",", 1)[1] for line in completed.stdout.splitlines()}
    assert values == {"start", "status", "stop"}


def test_completion_of_job_names(shared):
    env = mitoctl_env({"_MITOCTL_COMPLETE": "bash_complete",
                       "COMP_WORDS": f"mitoctl --socket {shared.socket} run si",
                       "COMP_CWORD": "4"})
    completed = subprocess.run(mitoctl_command(), env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=30)
    values = {line.split(",", 1)[1] for line in completed.stdout.splitlines()}
    assert values == {"site:web"}


# -- status --------------------------------------------------------------------

def test_status_running_exits_0(shared):
    completed = run_mitoctl(shared, "status")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("mitod ")
    assert " is running (pid " in completed.stdout
    assert "SITE" in completed.stdout
    site_line = next(line for line in completed.stdout.splitlines() if line.startswith("web "))
    assert " up " in site_line
    assert ANSI_ESCAPE not in completed.stdout


@pytest.mark.parametrize("placement", ["before", "after"])
def test_status_json_before_or_after_command(shared, placement):
    arguments = ("--json", "status") if placement == "before" else ("status", "--json")
    completed = run_mitoctl(shared, *arguments)
    assert completed.returncode == 0
    document = parse_json(completed)
    assert document["state"] == "running"
    assert {"pid", "version", "tasks", "workers", "sites", "system"} <= set(document)


def test_status_paused_exits_3_and_says_so(make_setup, make_daemon):
    setup = make_setup()
    make_daemon(setup).start()
    assert run_mitoctl(setup, "stop").returncode == 0
    completed = run_mitoctl(setup, "status")
    assert completed.returncode == 3
    assert ("mitod is paused (autonomous operation stopped); run mitoctl start"
            in completed.stdout)
    assert parse_json(run_mitoctl(setup, "status", "--json"))["state"] == "paused"
    assert run_mitoctl(setup, "status", "--json").returncode == 3


def test_not_running_missing_socket_exits_3(make_setup):
    setup = make_setup()
    completed = run_mitoctl(setup, "status")
    assert completed.returncode == 3
    assert f"mitod is not running (no socket at {setup.socket})" in completed.stderr


def test_not_running_refused_connection_exits_3(make_setup):
    setup = make_setup()
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(setup.socket))
    leftover.close()
    completed = run_mitoctl(setup, "status")
    assert completed.returncode == 3
    assert f"connection refused at {setup.socket}" in completed.stderr


def test_not_running_json_error(make_setup):
    setup = make_setup()
    completed = run_mitoctl(setup, "--json", "tasks")
    assert completed.returncode == 3
    assert parse_json(completed)["error"]["code"] == "not_running"


# -- start, stop, run ----------------------------------------------------------

def test_stop_and_start_messages(make_setup, make_daemon):
    setup = make_setup()
    make_daemon(setup).start()
    stopped = run_mitoctl(setup, "stop", "--wait", "--timeout", "10")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("Autonomous operation paused; no task is running.")
    again = run_mitoctl(setup, "stop")
    assert again.stdout.startswith("Autonomous operation was already paused")
    started = run_mitoctl(setup, "start", "--json")
    assert started.returncode == 0
    assert parse_json(started) == {"state": "running", "changed": True}
    assert run_mitoctl(setup, "start").stdout.startswith("Autonomous operation was already")


def test_run_wait_prints_result(shared):
    completed = run_mitoctl(shared, "run", "site:web", "--wait", "--timeout", "20")
    assert completed.returncode == 0, completed.stderr
    assert "Enqueued job site:web as task" in completed.stdout
    assert "completed in" in completed.stdout
    assert "status_code: 200" in completed.stdout


def test_run_wait_json_has_task_row(shared):
    completed = run_mitoctl(shared, "--json", "run", "site:web", "--wait")
    assert completed.returncode == 0
    task = parse_json(completed)["task"]
    assert task["status"] == "completed"
    assert task["result"]["ok"] is True
    assert task["error_message"] is None


def test_run_unknown_job_exits_1(shared):
    completed = run_mitoctl(shared, "run", "nope")
    assert completed.returncode == 1
    assert "unknown job 'nope'" in completed.stderr


# -- tasks, jobs, logs ---------------------------------------------------------

def test_tasks_filters(shared):
    completed = run_mitoctl(shared, "tasks", "--job", "site:web", "--status", "completed",
                            "--limit", "3")
    assert completed.returncode == 0
    lines = completed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "JOB", "STATUS"]
    assert 1 <= len(lines) - 1 <= 3
    assert all(line.split()[1:3] == ["site:web", "completed"] for line in lines[1:])


def test_tasks_json(shared):
    document = parse_json(run_mitoctl(shared, "tasks", "--limit", "2", "--json"))
    assert len(document["tasks"]) == 2
    assert {"id", "name", "status", "priority", "created_at", "result"} <= set(
        document["tasks"][0])


def test_tasks_rejects_unknown_status(shared):
    completed = run_mitoctl(shared, "tasks", "--status", "sleeping")
    assert completed.returncode == 2
    assert "sleeping" in completed.stderr


def test_jobs_table(shared):
    completed = run_mitoctl(shared, "jobs")
    assert completed.returncode == 0
    rows = {line.split()[0]: line for line in completed.stdout.splitlines()[1:]}
    assert "site:web" in rows
    assert " 1s " in rows["site:web"]
    assert "on demand" in rows["emergency_optimization"]
    assert parse_json(run_mitoctl(shared, "jobs", "--json"))["jobs"]


def test_logs_filters(shared):
    completed = run_mitoctl(shared, "logs", "--type", "task.*", "--since", "10m", "--limit",
                            "5")
    assert completed.returncode == 0
    lines = completed.stdout.splitlines()
    assert len(lines) == 5
    assert all(line.split()[2].startswith("task.") for line in lines)
    events = parse_json(run_mitoctl(shared, "logs", "--type", "task.enqueued", "--json"))
    assert events["events"]
    assert {event["event_type"] for event in events["events"]} == {"task.enqueued"}


def test_logs_since_local_time(shared):
    future = run_mitoctl(shared, "logs", "--since", "2999-01-01 00:00", "--json")
    assert parse_json(future) == {"events": []}


def read_line(process: subprocess.Popen, timeout: float = 10.0) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output from mitoctl within {timeout} s")
    return process.stdout.readline()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("as_json", [False, True])
def test_logs_follow_shows_new_row(shared, as_json):
    assert run_mitoctl(shared, "start").returncode == 0  # so a control.command row exists
    arguments = ["--socket", str(shared.socket), "logs", "--follow", "--type",
                 "control.command", "--limit", "1"] + (["--json"] if as_json else [])
    process = subprocess.Popen(mitoctl_command(*arguments), env=mitoctl_env(), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               bufsize=1)
    try:
        assert read_line(process)  # the newest existing row: the stream has started
        trigger = subprocess.Popen(mitoctl_command("--socket", str(shared.socket), "run",
                                                   "progress_report"),
                                   env=mitoctl_env(), cwd=ROOT, stdout=subprocess.DEVNULL)
        assert trigger.wait(30) == 0
        line = read_line(process)
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()
    if as_json:
        event = json.loads(line)
        assert event["event_type"] == "control.command"
        assert event["details"]["pid"] == trigger.pid
        assert event["details"]["args"]["job"] == "progress_report"
    else:
        assert "control.command" in line
        assert f"(uid {os.getuid()}, pid {trigger.pid})" in line


# -- reload --------------------------------------------------------------------

def test_reload_applies_site_changes(make_setup, make_daemon, start_server):
    first = start_server(HealthyServer)
    second = start_server(HealthyServer)
    setup = make_setup(sites=[{"name": "old", "url": first.url, "interval": "1h",
                               "timeout": "1s"}])
    make_daemon(setup).start()
    setup.sites = [{"name": "new", "url": second.url, "interval": "1s", "timeout": "1s"}]
    setup.write()
    completed = run_mitoctl(setup, "reload")
    assert completed.returncode == 0, completed.stderr
    assert "site new added" in completed.stdout
    assert "site old removed" in completed.stdout
    jobs = {job["name"] for job in parse_json(run_mitoctl(setup, "jobs", "--json"))["jobs"]}
    assert "site:new" in jobs
    assert "site:old" not in jobs
    wait_for(lambda: setup.query("SELECT id FROM check_results WHERE job = 'site:new'"), 10,
             message="a check of the added site")


def test_reload_broken_file_exits_1_and_keeps_config(make_setup, make_daemon):
    setup = make_setup(sites=[{"name": "kept", "url": "http://127.0.0.1:9/", "interval": "1h",
                               "timeout": "1s"}])
    make_daemon(setup).start()
    jobs_before = parse_json(run_mitoctl(setup, "jobs", "--json"))["jobs"]
    setup.sections["daemon"]["workers"] = 0
    setup.sites = [{"name": "bad name!", "url": "ftp://example.invalid/"}]
    setup.write()
    completed = run_mitoctl(setup, "reload")
    assert completed.returncode == 1
    assert "reload rejected" in completed.stderr
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("  ")]
    assert len(error_lines) >= 3
    assert any("workers" in line for line in error_lines)
    assert any("name" in line for line in error_lines)
    assert any("url" in line for line in error_lines)
    document = parse_json(run_mitoctl(setup, "reload", "--json"))
    assert document["error"]["code"] == "bad_request"
    assert len(document["error"]["details"]["errors"]) == len(error_lines)
    jobs_after = parse_json(run_mitoctl(setup, "jobs", "--json"))["jobs"]
    assert [job["name"] for job in jobs_after] == [job["name"] for job in jobs_before]


def test_reload_with_unparsable_file_needs_socket(make_setup, make_daemon):
    setup = make_setup()
    make_daemon(setup).start()
    with open(setup.config_path, "a") as handle:
        handle.write("\nbroken = [\n")
    via_config = run_mitoctl(setup, "reload")
    assert via_config.returncode == 1
    assert "pass --socket PATH" in via_config.stderr
    via_socket = run_mitoctl(setup, "--socket", str(setup.socket), "reload")
    assert via_socket.returncode == 1
    assert "invalid TOML" in via_socket.stderr


# -- version and socket selection ----------------------------------------------

def test_version(shared):
    completed = run_mitoctl(shared, "version")
    assert completed.returncode == 0
    assert completed.stdout.splitlines()[0] == f"mitoctl {mitoctl.__version__}"
    document = parse_json(run_mitoctl(shared, "version", "--json"))
    assert document["mitod"]["protocol"] == 1


def test_socket_option_wins_over_config(shared, make_setup):
    other = make_setup()
    completed = run_mitoctl(other, "--socket", str(shared.socket), "status", "--json")
    assert parse_json(completed)["config"] == str(shared.config_path)


def test_environment_selects_config_and_socket(shared):
    by_config = subprocess.run(mitoctl_command("status", "--json"),
                               env=mitoctl_env({"MITOD_CONFIG": str(shared.config_path)}),
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert by_config.returncode == 0, by_config.stderr
    by_socket = subprocess.run(mitoctl_command("status", "--json"),
                               env=mitoctl_env({"MITOD_SOCKET": str(shared.socket)}),
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert by_socket.returncode == 0, by_socket.stderr


def test_socket_from_included_file(shared, make_setup):
    other = make_setup()
    other.sections["daemon"].pop("socket")
    other.write()
    other.config_path.write_text('include = ["conf.d/*.toml"]\n' +
                                 other.config_path.read_text())
    (other.base / "conf.d").mkdir()
    (other.base / "conf.d" / "socket.toml").write_text(
        f'[daemon]\nsocket = "{shared.socket}"\n')
    completed = run_mitoctl(other, "status", "--json")
    assert completed.returncode == 0, completed.stderr
    assert parse_json(completed)["config"] == str(shared.config_path)


def test_relative_socket_path_resolves_against_config_folder(shared, make_setup):
    other = make_setup()
    link = other.base / "link.sock"
    link.symlink_to(shared.socket)
    other.sections["daemon"]["socket"] = "link.sock"
    other.write()
    completed = run_mitoctl(other, "status", "--json")
    assert completed.returncode == 0, completed.stderr


# -- colour --------------------------------------------------------------------

def run_on_terminal(arguments: list[str], env: dict) -> str:
    """Run mitoctl with stdout on a pseudo-terminal and return what it printed."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(mitoctl_command(*arguments), env=env, cwd=ROOT,
                                   stdout=follower, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        os.close(follower)
        output = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 10)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        process.wait(10)
        process.stderr.close()
        return output.decode()
    finally:
        os.close(leader)


def test_colour_only_on_terminal_without_no_color(shared):
    arguments = ["--socket", str(shared.socket), "status"]
    assert ANSI_ESCAPE in run_on_terminal(arguments, mitoctl_env())
    assert ANSI_ESCAPE not in run_on_terminal(arguments, mitoctl_env({"NO_COLOR": "1"}))
    assert ANSI_ESCAPE in run_on_terminal(arguments, mitoctl_env({"NO_COLOR": ""}))
