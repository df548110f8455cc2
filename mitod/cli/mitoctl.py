"""``mitoctl``: look into and steer a running mitod through its control socket.

Exit codes: 0 success; 1 any other failure (an error response, a task that
failed, a rejected reload, a timeout); 2 a usage error (click's own); 3 mitod
is not running, or ``status`` found it paused; 4 permission denied.

Start-up time matters (``mitoctl status`` in scripts and prompts), so this
module imports only click and the client at load time. The configuration
loader is imported only when the socket path must be read from the
configuration file.
"""

import json
import os
from datetime import datetime

import click

from mitod import __version__
from mitod.cli import render
from mitod.client import Client, ClientError, ControlError, NotRunningError

# These equal mitod.config.DEFAULT_CONFIG_PATH, DaemonConfig.socket and
# mitod.engine.tasks.STATUSES (tests/test_mitoctl.py checks), and are copied so
# that importing this module does not load the configuration package.
DEFAULT_CONFIG_PATH = "/etc/mitod/mitod.toml"
DEFAULT_SOCKET_PATH = "/run/mitod/mitod.sock"
TASK_STATUSES = ("queued", "running", "retrying", "completed", "failed", "cancelled")
BUILTIN_JOBS = ("system_health", "optimization", "progress_report", "emergency_optimization",
                "disk_cleanup")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4

REQUEST_TIMEOUT = 10.0
JSON_HELP = "Print one JSON document (logs --follow: one JSON object per line) for scripts."
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(Exception):
    """A mitoctl error found before or without talking to the daemon."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, code: str = "client_error"):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


class Settings:
    """The global options, shared by every command through click's context."""

    def __init__(self, config_path: str, config_explicit: bool, socket_path: str | None,
                 as_json: bool):
        self.config_path = config_path
        self.config_explicit = config_explicit
        self.socket_path = socket_path
        self.as_json = as_json
        self.note = ""
        self._renderer: render.Renderer | None = None

    @property
    def renderer(self) -> render.Renderer:
        if self._renderer is None:
            self._renderer = render.Renderer(render.use_color())
        return self._renderer

    def client(self, timeout: float = REQUEST_TIMEOUT) -> Client:
        return Client(self.resolve_socket(), timeout=timeout)

    def resolve_socket(self) -> str:
        """Return --socket, or ``[daemon] socket`` from the configuration, or the default.

        The configuration loader rejects a key set in two files, so when the
        main file sets ``[daemon] socket`` no included file can change it.
        Reading the main file alone then gives the loader's result without
        importing the configuration package, which took about 20 ms of
        mitoctl's start-up (python -X importtime on a 2-CPU machine). Only a
        main file that leaves the key to its includes needs the loader.
        """
        if self.socket_path:
            return self.socket_path
        if not self.config_explicit and not os.path.exists(self.config_path):
            return DEFAULT_SOCKET_PATH
        document = _read_toml(self.config_path)
        if document is not None:
            daemon = document.get("daemon")
            setting = daemon.get("socket") if isinstance(daemon, dict) else None
            if isinstance(setting, str) and setting:
                return _resolve_path(setting, self.config_path)
            if not document.get("include"):
                return DEFAULT_SOCKET_PATH
        return self._load_socket_setting()

    def _load_socket_setting(self) -> str:
        from mitod.config import ConfigError, load_config

        try:
            return load_config(self.config_path).daemon.socket
        except ConfigError as error:
            if self.config_explicit:
                raise Failure(f"cannot read the socket path from {self.config_path}:\n"
                              + "\n".join(error.errors) + "\npass --socket PATH instead") from None
            self.note = (f" (could not read {self.config_path}: {error.errors[0]}; "
                         "pass --socket PATH if mitod uses another socket)")
            return DEFAULT_SOCKET_PATH


def _read_toml(path: str) -> dict | None:
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def _resolve_path(value: str, config_path: str) -> str:
    """Resolve a path setting the way the loader does: relative to its file's folder."""
    expanded = os.path.expanduser(value)
    folder = os.path.dirname(os.path.abspath(config_path))
    return os.path.normpath(os.path.join(folder, expanded))


# -- error handling and output ----------------------------------------------

def emit_json(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def report_error(settings: Settings, code: str, message: str, details: dict | None = None,
                 exit_code: int = EXIT_ERROR) -> int:
    """Print an error for people (stderr) or scripts (stdout JSON); return the exit code."""
    if settings.as_json:
        error = {"code": code, "message": message}
        if details:
            error["details"] = details
        emit_json({"error": error})
    else:
        click.echo(f"mitoctl: {message}", err=True)
    return exit_code


def run_command(settings: Settings, body) -> int:
    """Run ``body(settings)`` and turn client errors into messages and exit codes."""
    try:
        return body(settings) or EXIT_OK
    except NotRunningError as error:
        return report_error(settings, error.code, error.message + settings.note,
                            {"path": error.path, "reason": error.reason}, EXIT_NOT_RUNNING)
    except ControlError as error:
        if error.code == "permission_denied":
            return report_error(settings, error.code, "permission denied: " + error.message,
                                error.details, EXIT_PERMISSION)
        return report_error(settings, error.code, error.message, error.details)
    except ClientError as error:
        return report_error(settings, error.code, error.message)
    except Failure as error:
        return report_error(settings, error.code, error.message, exit_code=error.exit_code)


def json_option(func):
    """Accept --json after the command name too (mitoctl status --json)."""
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(func)


def finish(as_json: bool, body) -> None:
    """Merge the command's --json into the settings, run ``body`` and exit with its code."""
    ctx = click.get_current_context()
    settings = ctx.find_object(Settings)
    settings.as_json = settings.as_json or as_json
    ctx.exit(run_command(settings, body))


# -- the command group -------------------------------------------------------

@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", envvar="MITOD_CONFIG", default=DEFAULT_CONFIG_PATH,
              show_default=True, metavar="PATH",
              help="mitod configuration file to read the control socket path ([daemon] "
                   "socket) from; also set by MITOD_CONFIG.")
@click.option("--socket", "socket_path", envvar="MITOD_SOCKET", metavar="PATH",
              help="Control socket to connect to; overrides --config. Also set by "
                   "MITOD_SOCKET.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.version_option(__version__, prog_name="mitoctl")
@click.pass_context
def cli(ctx: click.Context, config_path: str, socket_path: str | None, as_json: bool) -> None:
    """Look into and steer a running mitod through its control socket.

    Exit codes: 0 success, 1 error, 2 usage error, 3 mitod not running (or
    paused, for status), 4 permission denied.
    """
    source = ctx.get_parameter_source("config_path")
    explicit = source is not None and source.name != "DEFAULT"
    ctx.obj = Settings(config_path, explicit, socket_path, as_json)


# -- status ------------------------------------------------------------------

@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Show the daemon's state, tasks, workers and sites.

    Also shows thread health and the latest system sample. Exits 0 when
    running, 3 when paused or not running.
    """
    def body(settings: Settings) -> int:
        with settings.client() as client:
            document = client.call("status")
        paused = document.get("state") != "running"
        if settings.as_json:
            emit_json(document)
        else:
            click.echo(render_status(document, settings.renderer))
            if paused:
                click.echo("mitod is paused (autonomous operation stopped); run mitoctl start")
        return EXIT_NOT_RUNNING if paused else EXIT_OK
    finish(as_json, body)


def render_status(document: dict, out: render.Renderer) -> str:
    state = document.get("state", "unknown")
    uptime = render.format_span(document.get("uptime_seconds") or 0)
    lines = [f"mitod {document.get('version')} is {out.style(state)} "
             f"(pid {document.get('pid')}, up {uptime}, since "
             f"{render.local_time(document.get('started_at'))})"]

    counts = document.get("tasks") or {}
    workers = document.get("workers") or {}
    lines.append(f"config:   {document.get('config')}")
    lines.append("tasks:    " + ", ".join(f"{counts.get(name, 0)} {name}"
                                          for name in TASK_STATUSES))
    lines.append(f"workers:  {workers.get('busy', 0)} of {workers.get('total', 0)} busy; "
                 f"queue depth {document.get('queue_depth', 0)}")
    lines.append("threads:  " + _threads_line(document.get("threads") or {}, out))
    lines.append("system:   " + _system_line(document.get("system"), out))
    pressure = document.get("pressure") or {}
    if pressure.get("active"):
        lines.append(f"pressure: {out.style('active', 'down')} since "
                     f"{out.ago(pressure.get('since'))}: {pressure.get('reason')}")

    sites = document.get("sites") or []
    lines.append("")
    if not sites:
        lines.append("No sites configured.")
        return "\n".join(lines)

    rows, styles = [], []
    for site in sites:
        response = site.get("last_response_ms")
        rows.append([site.get("name", "?"), site.get("state", "unknown"),
                     out.ago(site.get("since")), out.ago(site.get("last_check_at")),
                     f"{response:.0f} ms" if response is not None else "-",
                     str(site.get("last_status_code") or "-"),
                     render.shorten(site.get("last_error"), 60)])
        styles.append([None, site.get("state"), None, None, None, None, None])
    lines.append(out.table(["SITE", "STATE", "SINCE", "LAST CHECK", "RESPONSE", "CODE",
                            "LAST ERROR"], rows, styles))
    return "\n".join(lines)


def _threads_line(threads: dict, out: render.Renderer) -> str:
    dead = [name for name, alive in threads.items() if not alive]
    if not dead:
        return f"all {len(threads)} alive"
    return out.style(f"{len(dead)} of {len(threads)} dead: {', '.join(sorted(dead))}", "dead")


def _system_line(sample: dict | None, out: render.Renderer) -> str:
    if not sample:
        return "no sample yet"
    parts = [f"CPU {sample.get('cpu_percent', 0):.1f} %",
             f"memory {sample.get('memory_percent', 0):.1f} %"]
    if sample.get("swap_percent") is not None:
        parts.append(f"swap {sample['swap_percent']:.1f} %")
    if sample.get("load_per_core") is not None:
        parts.append(f"load {sample['load_per_core']:.2f} per CPU")
    disks = "; ".join(f"free disk {path} {free:.1f} %"
                      for path, free in (sample.get("disk_free_percent") or {}).items())
    line = ", ".join(parts) + (f"; {disks}" if disks else "")
    return line + f" (sampled {out.ago(sample.get('sampled_at'))})"


# -- start and stop ----------------------------------------------------------

@cli.command()
@json_option
def start(as_json: bool) -> None:
    """Resume autonomous operation.

    The scheduler enqueues due jobs again and workers take any queued task.
    """
    def body(settings: Settings) -> int:
        with settings.client() as client:
            result = client.call("start")
        if settings.as_json:
            emit_json(result)
        elif result.get("changed"):
            click.echo("Autonomous operation resumed.")
        else:
            click.echo("Autonomous operation was already running.")
        return EXIT_OK
    finish(as_json, body)


@cli.command()
@click.option("--wait", is_flag=True,
              help="Wait until no task is running before returning.")
@click.option("--timeout", type=click.FloatRange(0, 86400), default=60.0, show_default=True,
              metavar="SECONDS", help="Maximum time --wait waits for running tasks, in seconds.")
@json_option
def stop(wait: bool, timeout: float, as_json: bool) -> None:
    """Pause autonomous operation; running tasks finish.

    The daemon keeps running and serving commands, and the pause survives a restart.
    With --wait, exits 1 if tasks were still running after --timeout.
    """
    def body(settings: Settings) -> int:
        with settings.client() as client:
            result = client.call("stop", wait=wait, timeout=timeout) if wait else \
                client.call("stop")
        if settings.as_json:
            emit_json(result)
            return EXIT_ERROR if result.get("timed_out") else EXIT_OK
        first = "Autonomous operation paused" if result.get("changed") else \
            "Autonomous operation was already paused"
        running = result.get("running", 0)
        if not wait:
            rest = f"{running} running tasks finish on their own" if running else \
                "no task is running"
            click.echo(f"{first}; {rest}.")
            return EXIT_OK
        if result.get("timed_out"):
            click.echo(f"{first}, but {running} tasks were still running after {timeout:g} s.",
                       err=True)
            return EXIT_ERROR
        click.echo(f"{first}; no task is running.")
        return EXIT_OK
    finish(as_json, body)


# -- tasks and jobs ----------------------------------------------------------

@cli.command()
@click.option("--status", "task_status", type=click.Choice(TASK_STATUSES), metavar="STATUS",
              help="Show only tasks with this status: " + ", ".join(TASK_STATUSES) + ".")
@click.option("--job", metavar="NAME", help="Show only tasks of this job, e.g. site:homepage.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              metavar="N", help="Maximum number of tasks to show, newest first.")
@json_option
def tasks(task_status: str | None, job: str | None, limit: int, as_json: bool) -> None:
    """List tasks, newest first."""
    def body(settings: Settings) -> int:
        args = {"limit": limit}
        if task_status:
            args["status"] = task_status
        if job:
            args["job"] = job
        with settings.client() as client:
            result = client.call("tasks", **args)
        if settings.as_json:
            emit_json(result)
            return EXIT_OK
        click.echo(render_tasks(result["tasks"], settings.renderer))
        return EXIT_OK
    finish(as_json, body)


def render_tasks(rows: list[dict], out: render.Renderer) -> str:
    if not rows:
        return "No tasks match."
    table, styles = [], []
    for task in rows:
        table.append([task["id"][:8], task["name"], task["status"], str(task["priority"]),
                      task["origin"], out.ago(task["created_at"]), render.task_duration(task),
                      str(task["retry_count"]), render.shorten(task.get("error_message"), 50)])
        styles.append([None, None, task["status"], None, None, None, None, None, None])
    return out.table(["ID", "JOB", "STATUS", "PRI", "ORIGIN", "CREATED", "DURATION", "RETRIES",
                      "ERROR"], table, styles)


@cli.command()
@json_option
def jobs(as_json: bool) -> None:
    """List jobs with priority, interval, last and next run."""
    def body(settings: Settings) -> int:
        with settings.client() as client:
            result = client.call("jobs")
        if settings.as_json:
            emit_json(result)
            return EXIT_OK
        click.echo(render_jobs(result["jobs"], settings.renderer))
        return EXIT_OK
    finish(as_json, body)


def render_jobs(rows: list[dict], out: render.Renderer) -> str:
    table, styles = [], []
    for job in rows:
        last = job.get("last_task") or {}
        last_time = last.get("started_at") or last.get("created_at")
        next_run = "on demand" if job.get("on_demand") else out.ago(job.get("next_run_at"))
        table.append([job["name"], str(job["priority"]), render.format_interval(job["interval_s"]),
                      out.ago(last_time), last.get("status", "-"), next_run])
        styles.append([None, None, None, None, last.get("status"), None])
    return out.table(["JOB", "PRI", "INTERVAL", "LAST RUN", "LAST STATUS", "NEXT RUN"], table,
                     styles)


def complete_job(ctx: click.Context, param, incomplete: str) -> list[str]:
    """Offer job names: the daemon's list when it responds, else the built-in names."""
    names = list(BUILTIN_JOBS)
    root = ctx.find_root()
    settings = Settings(root.params.get("config_path") or DEFAULT_CONFIG_PATH, False,
                        root.params.get("socket_path"), False)
    try:
        with settings.client(timeout=1.0) as client:
            names = [job["name"] for job in client.call("jobs")["jobs"]]
    except (ClientError, Failure):
        pass
    return [name for name in names if name.startswith(incomplete)]


@cli.command()
@click.argument("job", shell_complete=complete_job)
@click.option("--wait", is_flag=True,
              help="Wait for the task to finish and show its result; exit 1 unless it "
                   "completed.")
@click.option("--timeout", type=click.FloatRange(0, 86400), default=60.0, show_default=True,
              metavar="SECONDS", help="Maximum time --wait waits for the task, in seconds.")
@json_option
def run(job: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Run JOB now at its priority, even while paused.

    JOB is a job name: site:NAME, system_health, optimization, progress_report,
    emergency_optimization or disk_cleanup (see mitoctl jobs).
    """
    def body(settings: Settings) -> int:
        with settings.client() as client:
            result = client.call("run", job=job, wait=True, timeout=timeout) if wait else \
                client.call("run", job=job)
        task = result["task"]
        succeeded = not wait or task["status"] == "completed"
        if settings.as_json:
            emit_json(result)
            return EXIT_OK if succeeded else EXIT_ERROR
        click.echo(f"{result['summary']} (task id {task['id']}).")
        if wait:
            _echo_finished_task(task, result.get("timed_out"), timeout, settings.renderer)
        return EXIT_OK if succeeded else EXIT_ERROR
    finish(as_json, body)


def _echo_finished_task(task: dict, timed_out: bool, timeout: float, out: render.Renderer):
    label = f"Task {task['id'][:8]} ({task['name']})"
    if timed_out:
        click.echo(f"{label} is still {task['status']} after {timeout:g} s.", err=True)
        return
    status = out.style(task["status"])
    attempts = task["retry_count"] + 1
    click.echo(f"{label} {status} in {render.task_duration(task)} after {attempts} "
               f"{'attempt' if attempts == 1 else 'attempts'}.")
    if task.get("error_message"):
        click.echo(f"error: {task['error_message']}")
    for key, value in (task.get("result") or {}).items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        click.echo(f"  {key}: {shown}")


# -- logs --------------------------------------------------------------------

@cli.command()
@click.option("--type", "event_type", metavar="EVENT_TYPE",
              help="Show only this event type, e.g. task.failed, or a prefix such as task.*.")
@click.option("--since", metavar="WHEN",
              help="Show rows from this time on: an ISO 8601 time (local time unless it has an "
                   "offset) or a duration back from now such as 10m, 2h or 1d.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              metavar="N", help="Maximum number of existing rows to show (the newest).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new rows as they are written, until interrupted.")
@json_option
def logs(event_type: str | None, since: str | None, limit: int, follow: bool,
         as_json: bool) -> None:
    """Show the operation log, the audit trail.

    The newest rows matching the filters are shown, oldest first.
    """
    def body(settings: Settings) -> int:
        args = {"limit": limit}
        if event_type:
            args["event_type"] = event_type
        if since:
            args["since"] = since_argument(since)
        if follow:
            return _follow_logs(settings, args)
        with settings.client() as client:
            result = client.call("logs", **args)
        if settings.as_json:
            emit_json(result)
        else:
            for event in result["events"]:
                click.echo(render_event(event, settings.renderer))
        return EXIT_OK
    finish(as_json, body)


def _follow_logs(settings: Settings, args: dict) -> int:
    client = settings.client()
    try:
        for result in client.stream("logs", follow=True, **args):
            if "end" in result:
                click.echo(f"mitoctl: stream ended: {result['end']}", err=True)
                break
            for event in result.get("events", [result.get("event")]):
                if settings.as_json:
                    click.echo(json.dumps(event, separators=(",", ":"), default=str))
                else:
                    click.echo(render_event(event, settings.renderer))
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return EXIT_OK


def render_event(event: dict, out: render.Renderer) -> str:
    event_type = event["event_type"]
    key = "failed" if event_type.endswith((".failed", ".down", ".rejected")) else None
    return (f"{render.local_time(event['timestamp'])}  "
            f"{out.style(event_type.ljust(20), key)}  {event['message']}")


def since_argument(text: str) -> str:
    """Pass durations through; give an ISO time without an offset the local time zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.isoformat()


# -- reload and version ------------------------------------------------------

@cli.command()
@json_option
def reload(as_json: bool) -> None:
    """Re-read the configuration file and apply it.

    An invalid file is rejected and the running configuration kept; the errors
    are printed and mitoctl exits 1.
    """
    def body(settings: Settings) -> int:
        try:
            with settings.client() as client:
                result = client.call("reload")
        except ControlError as error:
            if error.code != "bad_request" or "errors" not in error.details:
                raise
            if settings.as_json:
                emit_json({"error": {"code": error.code, "message": error.message,
                                     "details": error.details}})
            else:
                click.echo("mitoctl: reload rejected; mitod keeps its running configuration. "
                           "Errors:", err=True)
                for line in error.details["errors"]:
                    click.echo(f"  {line}", err=True)
            return EXIT_ERROR
        if settings.as_json:
            emit_json(result)
            return EXIT_OK
        click.echo(f"Reloaded configuration: {result['summary']}.")
        return EXIT_OK
    finish(as_json, body)


@cli.command()
@json_option
def version(as_json: bool) -> None:
    """Show the versions of mitoctl and mitod."""
    def body(settings: Settings) -> int:
        with settings.client() as client:
            result = client.call("version")
        if settings.as_json:
            emit_json({"mitoctl": __version__, "mitod": result})
        else:
            click.echo(f"mitoctl {__version__}")
            click.echo(f"mitod {result['version']} (protocol {result['protocol']}, "
                       f"Python {result['python']})")
        return EXIT_OK
    finish(as_json, body)


def main() -> None:
    # Fixed names, so completion works however mitoctl is started (python -m, a wrapper).
    cli(prog_name="mitoctl", complete_var="_MITOCTL_COMPLETE")


if __name__ == "__main__":
    main()
