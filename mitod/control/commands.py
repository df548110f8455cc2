"""The control commands: argument checks, authorization, audit and one handler each.

Read-only commands (status, tasks, logs, jobs, version, ping) run for anyone
who can open the socket. Mutating ones (start, stop, run, reload) also need
:class:`~mitod.control.auth.Authorizer` to accept the peer, and each one that
runs writes a ``control.command`` row to the operation log first.

Handlers run in the connection's thread and read the database through that
thread's own connection, so a slow client never holds an engine lock.
"""

import logging
import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from mitod import __version__
from mitod.clock import UTC, format_timestamp
from mitod.config.durations import parse_duration
from mitod.control import protocol
from mitod.control.auth import Authorizer
from mitod.engine.tasks import FINISHED_STATUSES, STATUSES, Task
from mitod.store.oplog import event_row, query_events

log = logging.getLogger(__name__)

DEFAULT_WAIT_TIMEOUT = 60.0
MAX_WAIT_TIMEOUT = 24 * 3600.0
MAX_LIST_LIMIT = 1000
# How often waits poll the engine, and how often ``logs --follow`` polls the table.
WAIT_POLL = 0.05
FOLLOW_POLL = 0.2
FOLLOW_BATCH = 500
DENIAL_LOG_INTERVAL = 60.0


class CommandError(Exception):
    """A command failed in a way the client should see, with an error code."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Arg:
    """One accepted argument: its JSON type, default and allowed range or values."""

    kind: type | tuple
    default: object = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()


@dataclass(frozen=True)
class Command:
    name: str
    mutating: bool
    args: dict[str, Arg] = field(default_factory=dict)


_WAIT_ARGS = {
    "wait": Arg(bool, False),
    "timeout": Arg((int, float), DEFAULT_WAIT_TIMEOUT, minimum=0, maximum=MAX_WAIT_TIMEOUT),
}

COMMANDS = {command.name: command for command in (
    Command("status", False),
    Command("version", False),
    Command("ping", False),
    Command("jobs", False),
    Command("tasks", False, {
        "status": Arg(str, choices=STATUSES),
        "job": Arg(str),
        "limit": Arg(int, 20, minimum=1, maximum=MAX_LIST_LIMIT),
    }),
    Command("logs", False, {
        "event_type": Arg(str),
        "since": Arg(str),
        "limit": Arg(int, 50, minimum=1, maximum=MAX_LIST_LIMIT),
        "follow": Arg(bool, False),
    }),
    Command("start", True),
    Command("stop", True, dict(_WAIT_ARGS)),
    Command("run", True, {"job": Arg(str, required=True), **_WAIT_ARGS}),
    Command("reload", True),
)}


@dataclass
class StreamEnd:
    """Returned by a streaming handler: the last message to send, or None to just close."""

    final: dict | None


class CommandDispatcher:
    """Check, authorize, audit and run the requests that the control server reads."""

    def __init__(self, daemon, authorizer: Authorizer | None = None):
        self.daemon = daemon
        self.authorizer = authorizer or Authorizer(daemon.config.control.group)
        # uid -> (monotonic time of the last logged denial, denials skipped since)
        self._denials: dict[int, tuple[float, int]] = {}
        self._handlers: dict[str, Callable] = {
            "status": self.status, "version": self.version, "ping": self.ping,
            "jobs": self.jobs, "tasks": self.tasks, "logs": self.logs, "start": self.start,
            "stop": self.stop, "run": self.run, "reload": self.reload,
        }

    def control_config(self):
        """Return the running ``[control]`` section, so reloaded limits apply to new clients."""
        return self.daemon.config.control

    @property
    def engine(self):
        return self.daemon.engine

    # -- dispatch --------------------------------------------------------

    def dispatch(self, request: protocol.Request, session) -> dict | None:
        """Return the response to ``request``; None closes the connection without one."""
        command = COMMANDS.get(request.command)
        if command is None:
            return protocol.error_response(
                request.id, protocol.UNKNOWN_COMMAND,
                f"unknown command {request.command!r}; commands are: {', '.join(COMMANDS)}")
        peer = session.peer
        try:
            args = check_args(command, request.args)
            if command.mutating:
                self._authorize(command, args, request, peer)
            else:
                log.debug("Control command %s (request %r) from uid %d (pid %d)",
                          command.name, request.id, peer.uid, peer.pid)
            result = self._handlers[command.name](args, request, session)
        except CommandError as error:
            return protocol.error_response(request.id, error.code, error.message, error.details)
        if isinstance(result, StreamEnd):
            return result.final
        return protocol.ok_response(request.id, result)

    def _authorize(self, command: Command, args: dict, request: protocol.Request,
                   peer) -> None:
        if not self.authorizer.may_mutate(peer):
            self._log_denial(command, request, peer)
            raise CommandError(protocol.PERMISSION_DENIED,
                               self.authorizer.denial_message(command.name, peer))
        actor = peer.actor()
        log.info("Control command %s (request %r) from uid %d (pid %d)", command.name,
                 request.id, peer.uid, peer.pid)
        self.engine.record_event(
            "control.command",
            f"Control command {command.name} from {actor['user'] or 'uid ' + str(peer.uid)} "
            f"(uid {peer.uid}, pid {peer.pid})",
            {**actor, "command": command.name, "args": args, "request_id": request.id})

    def _log_denial(self, command: Command, request: protocol.Request, peer) -> None:
        """Log a denied command, at most once per uid and minute, with the count skipped."""
        now = time.monotonic()
        last, skipped = self._denials.get(peer.uid, (-DENIAL_LOG_INTERVAL, 0))
        if now - last < DENIAL_LOG_INTERVAL:
            self._denials[peer.uid] = (last, skipped + 1)
            return
        self._denials[peer.uid] = (now, 0)
        more = f"; {skipped} more denials of this uid were not logged" if skipped else ""
        log.warning("Denied control command %s (request %r) to uid %d (pid %d): not root, "
                    "not the daemon's user, not in group %r%s", command.name, request.id,
                    peer.uid, peer.pid, self.authorizer.group, more)

    # -- read-only commands ----------------------------------------------

    def status(self, args, request, session) -> dict:
        return self.daemon.status.build()

    def version(self, args, request, session) -> dict:
        return {"version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                "supported_versions": list(protocol.SUPPORTED_VERSIONS),
                "python": platform.python_version()}

    def ping(self, args, request, session) -> dict:
        return {"pong": True, "time": self.engine.clock.timestamp()}

    def jobs(self, args, request, session) -> dict:
        from mitod.jobs.catalog import on_demand_jobs

        rows = [dict(row, on_demand=False) for row in self.engine.scheduler.job_table()]
        for spec in on_demand_jobs(self.engine.config):
            rows.append({"name": spec.name, "kind": spec.kind, "priority": spec.priority,
                         "interval_s": None, "timeout_s": spec.timeout,
                         "last_enqueued_at": None, "next_run_at": None, "skipped_runs": 0,
                         "on_demand": True})
        conn = self.engine.db.read()
        for row in rows:
            row["last_task"] = _last_task(conn, row["name"])
        return {"jobs": rows}

    def tasks(self, args, request, session) -> dict:
        clauses, params = [], []
        if args["status"] is not None:
            clauses.append("status = ?")
            params.append(args["status"])
        if args["job"] is not None:
            clauses.append("name = ?")
            params.append(args["job"])
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.engine.db.read().execute(
            f"SELECT * FROM autonomous_tasks {where} ORDER BY created_at DESC, rowid DESC "
            "LIMIT ?", (*params, args["limit"])).fetchall()
        return {"tasks": [Task.from_row(row).to_dict() for row in rows]}

    def logs(self, args, request, session):
        since = parse_since(args["since"], self.engine.clock.now()) if args["since"] else None
        conn = self.engine.db.read()
        newest_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM operation_log").fetchone()[0]
        events = query_events(conn, args["event_type"], since, limit=args["limit"])
        events.reverse()
        result = {"events": events}
        if not args["follow"]:
            return result
        last_id = max([newest_id] + [event["id"] for event in events])
        if not session.send(protocol.ok_response(request.id, result, stream=True)):
            return StreamEnd(None)
        return StreamEnd(self._follow(request, session, args["event_type"], last_id))

    def _follow(self, request, session, event_type: str | None, last_id: int) -> dict | None:
        """Send each new matching row as it is written; return the message that ends the stream."""
        conn = self.engine.db.read()
        log.debug("Streaming new log rows after id %d to request %r", last_id, request.id)
        while True:
            rows = events_after(conn, event_type, last_id, FOLLOW_BATCH)
            for event in rows:
                if not session.send(protocol.ok_response(request.id, {"event": event},
                                                         stream=True)):
                    return None
                last_id = event["id"]
            if len(rows) == FOLLOW_BATCH:
                continue
            if not session.wait(FOLLOW_POLL):
                break
        if session.stopping.is_set():
            return protocol.ok_response(request.id, {"end": "mitod is stopping"}, stream=False)
        return None

    # -- mutating commands -----------------------------------------------

    def start(self, args, request, session) -> dict:
        changed = self.engine.resume(session.peer.actor())
        return {"state": "running", "changed": changed}

    def stop(self, args, request, session) -> dict:
        changed = self.engine.pause(session.peer.actor())
        result = {"state": "paused", "changed": changed}
        if not args["wait"]:
            result["running"] = self.engine.executor.busy_count()
            return result
        started = time.monotonic()
        running = self._wait_until(lambda: self.engine.executor.busy_count(), args["timeout"],
                                   session)
        result.update(running=running, timed_out=running > 0,
                      waited_s=round(time.monotonic() - started, 3))
        return result

    def run(self, args, request, session) -> dict:
        from mitod.engine.engine import UnknownJobError
        from mitod.jobs.catalog import job_names

        try:
            task = self.engine.run_job(args["job"], origin="operator",
                                       actor=session.peer.actor())
        except UnknownJobError as error:
            raise CommandError(protocol.NOT_FOUND, str(error),
                               {"jobs": job_names(self.engine.config)}) from None
        summary = f"Enqueued job {task.name} as task {task.short_id} at priority {task.priority}"
        if not args["wait"]:
            return {"task": task.to_dict(), "summary": summary}

        def unfinished() -> int:
            nonlocal task
            task = self.engine.queue.get(task.id) or task
            return 0 if task.status in FINISHED_STATUSES else 1

        self._wait_until(unfinished, args["timeout"], session)
        finished = task.status in FINISHED_STATUSES
        return {"task": task.to_dict(), "summary": summary, "timed_out": not finished}

    def reload(self, args, request, session) -> dict:
        outcome = self.daemon.reload("control", session.peer.actor())
        if not outcome["ok"]:
            errors = list(outcome["errors"])
            raise CommandError(
                protocol.BAD_REQUEST,
                f"the configuration {self.daemon.config_path} is invalid, so mitod keeps the "
                f"running one; {len(errors)} errors:\n" + "\n".join(errors),
                {"errors": errors})
        return {"summary": outcome["summary"], "changes": outcome["changes"],
                "restart_required": outcome["restart_required"]}

    @staticmethod
    def _wait_until(pending: Callable[[], int], timeout: float, session) -> int:
        """Poll ``pending()`` until it returns 0, ``timeout`` s pass, or the client leaves."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = pending()
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining
            if not session.wait(min(WAIT_POLL, max(0.0, deadline - time.monotonic()))):
                return remaining


def check_args(command: Command, args: dict) -> dict:
    """Return ``args`` with defaults filled in; raise CommandError(bad_request) on a bad one."""
    unknown = sorted(set(args) - set(command.args))
    if unknown:
        accepted = ", ".join(command.args) or "none"
        raise CommandError(protocol.BAD_REQUEST,
                           f"unknown argument {unknown[0]!r} for {command.name}; accepted "
                           f"arguments: {accepted}")
    checked = {}
    for name, spec in command.args.items():
        if name not in args or args[name] is None:
            if spec.required:
                raise CommandError(protocol.BAD_REQUEST,
                                   f"{command.name} needs the argument {name!r}")
            checked[name] = spec.default
            continue
        checked[name] = _check_value(command.name, name, spec, args[name])
    return checked


def _check_value(command: str, name: str, spec: Arg, value):
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds
    if wrong_bool or not isinstance(value, kinds):
        raise CommandError(protocol.BAD_REQUEST,
                           f"{command}: {name} must be {_TYPE_NAMES[kinds]}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError(protocol.BAD_REQUEST, f"{command}: {name} must be a finite number, "
                           f"got {value!r}")
    if spec.choices and value not in spec.choices:
        raise CommandError(protocol.BAD_REQUEST, f"{command}: {name} must be one of "
                           f"{', '.join(spec.choices)}, got {value!r}")
    too_small = spec.minimum is not None and value < spec.minimum
    too_large = spec.maximum is not None and value > spec.maximum
    if too_small or too_large:
        raise CommandError(protocol.BAD_REQUEST, f"{command}: {name} must be between "
                           f"{spec.minimum:g} and {spec.maximum:g}, got {value!r}")
    if isinstance(value, str) and not value:
        raise CommandError(protocol.BAD_REQUEST, f"{command}: {name} must not be empty")
    return value


_TYPE_NAMES = {(bool,): "a boolean", (int,): "an integer", (int, float): "a number",
               (str,): "a string"}


def parse_since(text: str, now: datetime) -> str:
    """Turn an ISO 8601 time or a duration back from ``now`` ("10m") into a stored timestamp.

    A time without a UTC offset is read as UTC.
    """
    try:
        return format_timestamp(now - timedelta(seconds=parse_duration(text)))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(protocol.BAD_REQUEST,
                           f"logs: since must be an ISO 8601 time such as "
                           f"2024-05-01T12:00:00+00:00 or a duration such as 10m, got {text!r}"
                           ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_timestamp(moment)


def events_after(conn, event_type: str | None, after_id: int, limit: int) -> list[dict]:
    """Return up to ``limit`` rows with ids above ``after_id``, oldest first.

    ``query_events`` returns the newest rows first. Under a burst of more than
    ``limit`` new rows it would skip the oldest, and a follower needs them all, in order.
    """
    clauses, params = ["id > ?"], [after_id]
    if event_type and event_type.endswith(".*"):
        prefix = event_type[:-1]
        clauses.append("substr(event_type, 1, ?) = ?")
        params += [len(prefix), prefix]
    elif event_type:
        clauses.append("event_type = ?")
        params.append(event_type)
    rows = conn.execute(
        "SELECT id, timestamp, event_type, message, details, task_id FROM operation_log "
        f"WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
    return [event_row(row) for row in rows]


def _last_task(conn, name: str) -> dict | None:
    """Return the newest task of job ``name``: the one inserted last."""
    # MAX(rowid) reads only the tasks_by_name index, where ORDER BY created_at
    # would sort every task the job ever had.
    row = conn.execute(
        "SELECT id, status, created_at, started_at, completed_at, error_message "
        "FROM autonomous_tasks WHERE rowid = "
        "(SELECT MAX(rowid) FROM autonomous_tasks WHERE name = ?)", (name,)).fetchone()
    return dict(row) if row else None
