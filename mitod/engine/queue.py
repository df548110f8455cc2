"""The persistent priority queue of tasks, with atomic claims, retries and recovery.

A claim is one ``UPDATE … WHERE id = (SELECT …) RETURNING`` inside
``BEGIN IMMEDIATE``: SQLite lets one writer in at a time, across processes
too, so two workers (or a script beside the daemon) never claim the same task.

Order: the due task with the lowest priority number, then the oldest
``scheduled_at``. Maintenance (MEDIUM and LOW) that has waited longer than
``priority_aging`` past its due time ranks as HIGH, so a stream of checks
cannot starve it; CRITICAL work still goes first. At most one maintenance task
runs at a time, so checks always find a free worker.

Every change writes its audit row to ``operation_log`` in the same
transaction. In-process waiters are woken through a condition; tasks that
another process enqueues are seen at the latest after ``max_idle_wait``.
"""

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from mitod.clock import SYSTEM_CLOCK, Clock, format_timestamp, parse_timestamp
from mitod.engine.backoff import Backoff
from mitod.engine.tasks import MAINTENANCE, Priority, Task
from mitod.store.database import Database
from mitod.store.oplog import add_event

log = logging.getLogger(__name__)

_CANDIDATE_FILTER = """
    status IN ('queued', 'retrying') AND scheduled_at <= :now
    AND (:operator_only = 0 OR origin = 'operator')
    AND (:skip_low = 0 OR priority < 4)
    AND (priority < :maintenance OR NOT EXISTS (
        SELECT 1 FROM autonomous_tasks AS busy INDEXED BY tasks_by_status
        WHERE busy.status = 'running' AND busy.priority >= :maintenance))
"""

_CLAIM_SQL = f"""
UPDATE autonomous_tasks
SET status = 'running', started_at = :now, worker = :worker
WHERE id = (
    SELECT id FROM (
        SELECT * FROM (
            SELECT id, priority AS rank, scheduled_at FROM autonomous_tasks INDEXED BY tasks_due
            WHERE {_CANDIDATE_FILTER}
            ORDER BY priority, scheduled_at LIMIT 1)
        UNION ALL
        SELECT * FROM (
            SELECT id, {int(Priority.HIGH)} AS rank, scheduled_at FROM autonomous_tasks
            INDEXED BY tasks_aging
            WHERE {_CANDIDATE_FILTER} AND priority >= {int(MAINTENANCE)} AND scheduled_at <= :aged
            ORDER BY scheduled_at LIMIT 1)
    ) ORDER BY rank, scheduled_at LIMIT 1)
RETURNING *
"""


@dataclass
class TaskRequest:
    """A task to insert with :meth:`TaskQueue.enqueue_many`.

    The payload is encoded to JSON when the request is made, so a payload that
    JSON cannot encode raises TypeError here, before any database work.
    """

    name: str
    kind: str
    priority: int
    payload: dict | None = None
    delay: float = 0.0
    origin: str = "schedule"
    max_retries: int = 3
    timeout: float | None = None
    coalesce: bool = True
    payload_json: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.payload_json = json.dumps(self.payload) if self.payload else None


class TaskQueue:
    """Enqueue, claim, complete, fail and recover tasks in ``autonomous_tasks``."""

    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK, backoff: Backoff | None = None,
                 priority_aging: float = 600.0, max_idle_wait: float = 2.0):
        self.db = db
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.priority_aging = priority_aging
        self.max_idle_wait = max_idle_wait
        self.changed = threading.Condition()
        self.generation = 0

    # -- wake-ups --------------------------------------------------------

    def notify(self, waiters: int | None = None) -> None:
        """Wake ``waiters`` idle workers, or all of them when None.

        One new task needs one worker, so an enqueue wakes one; a freed
        maintenance slot or a batch of changes wakes all.
        """
        with self.changed:
            self.generation += 1
            if waiters is None:
                self.changed.notify_all()
            else:
                self.changed.notify(waiters)

    def wait_for_work(self, seen_generation: int, stop: threading.Event,
                      operator_only: bool = False) -> None:
        """Sleep until the queue changes, the next task falls due, or ``stop`` is set."""
        timeout = self.max_idle_wait
        due_in = self.seconds_until_due(operator_only)
        if due_in is not None:
            timeout = max(0.0, min(timeout, due_in))
        with self.changed:
            self.changed.wait_for(
                lambda: self.generation != seen_generation or stop.is_set(), timeout)

    def seconds_until_due(self, operator_only: bool = False) -> float | None:
        origin_filter = "AND origin = 'operator'" if operator_only else ""
        row = self.db.read().execute(
            "SELECT MIN(scheduled_at) FROM autonomous_tasks "
            f"WHERE status IN ('queued', 'retrying') {origin_filter}").fetchone()
        if row[0] is None:
            return None
        return (parse_timestamp(row[0]) - self.clock.now()).total_seconds()

    # -- enqueue ---------------------------------------------------------

    def enqueue(self, name: str, kind: str, priority: int, *, payload: dict | None = None,
                delay: float = 0.0, origin: str = "schedule", max_retries: int = 3,
                timeout: float | None = None, coalesce: bool = True) -> Task | None:
        """Insert a queued task; return None when ``coalesce`` finds one of ``name`` active."""
        request = TaskRequest(name, kind, priority, payload, delay, origin, max_retries, timeout,
                              coalesce)
        return self.enqueue_many([request])[0]

    def enqueue_many(self, requests: list["TaskRequest"]) -> list[Task | None]:
        """Insert several tasks in one transaction; None for each one coalesced.

        The scheduler enqueues every job due in one tick this way, so a tick
        with many due jobs costs one commit instead of one per job.
        """
        created: list[Task | None] = []
        with self.db.write() as conn:
            for request in requests:
                if request.coalesce and self._has_active(conn, request.name):
                    created.append(None)
                    continue
                created.append(self._insert(conn, request))
        for task in created:
            if task is not None:
                log.debug("Enqueued task %s at priority %d (%s)", task.label, task.priority,
                          task.origin)
        added = sum(1 for task in created if task is not None)
        if added:
            self.notify(added)
        return created

    def _insert(self, conn, request: "TaskRequest") -> Task:
        now = self.clock.timestamp()
        scheduled = self.clock.timestamp(request.delay) if request.delay else now
        task = Task(id=uuid.uuid4().hex, name=request.name, kind=request.kind,
                    priority=int(request.priority), status="queued", origin=request.origin,
                    created_at=now, scheduled_at=scheduled, started_at=None, completed_at=None,
                    worker=None, error_message=None, retry_count=0,
                    max_retries=request.max_retries, timeout_s=request.timeout,
                    payload=request.payload or {}, result=None)
        conn.execute(
            "INSERT INTO autonomous_tasks (id, name, kind, priority, status, origin, "
            "created_at, scheduled_at, max_retries, timeout_s, payload) "
            "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            (task.id, task.name, task.kind, task.priority, task.origin, now, scheduled,
             task.max_retries, task.timeout_s, request.payload_json))
        add_event(conn, self.clock, "task.enqueued",
                  f"Enqueued task {task.label} at priority {task.priority} ({task.origin})",
                  {"name": task.name, "kind": task.kind, "priority": task.priority,
                   "origin": task.origin, "scheduled_at": scheduled}, task.id)
        return task

    @staticmethod
    def _has_active(conn, name: str) -> bool:
        # Few tasks are active at a time, so the status index finds them
        # faster than the name index would find one job's whole history.
        return conn.execute(
            "SELECT 1 FROM autonomous_tasks INDEXED BY tasks_by_status "
            "WHERE status IN ('queued', 'running', 'retrying') AND name = ? LIMIT 1",
            (name,)).fetchone() is not None

    # -- claim -----------------------------------------------------------

    def claim(self, worker: str, operator_only: bool = False, skip_low: bool = False) -> Task | None:
        """Atomically mark the next due task ``running`` for ``worker`` and return it."""
        if not self._anything_due():
            return None  # spares idle workers a write transaction
        with self.db.write() as conn:
            return self._claim(conn, worker, operator_only, skip_low)

    def _anything_due(self) -> bool:
        row = self.db.read().execute(
            "SELECT 1 FROM autonomous_tasks INDEXED BY tasks_due "
            "WHERE status IN ('queued', 'retrying') AND scheduled_at <= ? LIMIT 1",
            (self.clock.timestamp(),)).fetchone()
        return row is not None

    def _claim(self, conn, worker: str, operator_only: bool, skip_low: bool) -> Task | None:
        now = self.clock.now()
        params = {
            "now": format_timestamp(now),
            "aged": format_timestamp(now - timedelta(seconds=self.priority_aging)),
            "worker": worker,
            "operator_only": int(operator_only),
            "skip_low": int(skip_low),
            "maintenance": int(MAINTENANCE),
        }
        row = conn.execute(_CLAIM_SQL, params).fetchone()
        if row is None:
            return None
        task = Task.from_row(row)
        add_event(conn, self.clock, "task.started",
                  f"Started task {task.label} on {worker}, attempt {task.retry_count + 1}",
                  {"worker": worker, "attempt": task.retry_count + 1}, task.id)
        return task

    # -- finishing -------------------------------------------------------

    def complete(self, task: Task, result: dict | None = None, summary: str = "") -> bool:
        """Mark ``task`` completed; return False if it no longer belongs to its worker."""
        with self.db.write() as conn:
            updated = self._complete(conn, task, result, summary)
        if updated and task.priority >= MAINTENANCE:
            self.notify()
        return updated

    def complete_and_claim(self, task: Task, result: dict | None, summary: str, worker: str,
                           operator_only: bool = False,
                           skip_low: bool = False) -> tuple[bool, Task | None]:
        """Complete ``task`` and claim the next one in a single transaction.

        A worker that goes straight on to its next task saves one commit per task.
        """
        with self.db.write() as conn:
            updated = self._complete(conn, task, result, summary)
            following = self._claim(conn, worker, operator_only, skip_low)
        if updated and task.priority >= MAINTENANCE:
            self.notify()
        return updated, following

    def _complete(self, conn, task: Task, result: dict | None, summary: str) -> bool:
        updated = conn.execute(
            "UPDATE autonomous_tasks SET status = 'completed', completed_at = ?, result = ?, "
            "error_message = NULL WHERE id = ? AND status = 'running' AND worker = ?",
            (self.clock.timestamp(),
             json.dumps(result, default=str) if result is not None else None,
             task.id, task.worker)).rowcount
        if updated:
            message = f"Completed task {task.label}" + (f": {summary}" if summary else "")
            add_event(conn, self.clock, "task.completed", message,
                      {"worker": task.worker, "attempt": task.retry_count + 1}, task.id)
        return bool(updated)

    def fail(self, task: Task, error: str, timed_out: bool = False) -> str:
        """Record a failed attempt; return ``retrying``, ``failed`` or ``stale``.

        ``stale`` means the task no longer belonged to this worker (it had timed
        out and been handed on), so nothing was written.
        """
        now = self.clock.now()
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT retry_count, max_retries FROM autonomous_tasks "
                "WHERE id = ? AND status = 'running' AND worker = ?",
                (task.id, task.worker)).fetchone()
            if row is None:
                return "stale"
            outcome = self._record_failure(conn, task, row["retry_count"], row["max_retries"],
                                           error, timed_out, now)
        self.notify()
        return outcome

    def _record_failure(self, conn, task: Task, retry_count: int, max_retries: int, error: str,
                        timed_out: bool, now) -> str:
        what = "timed out" if timed_out else "failed"
        attempt = retry_count + 1
        if retry_count < max_retries:
            delay = self.backoff.delay(retry_count)
            conn.execute(
                "UPDATE autonomous_tasks SET status = 'retrying', retry_count = ?, "
                "scheduled_at = ?, started_at = NULL, worker = NULL, error_message = ? "
                "WHERE id = ?",
                (attempt, format_timestamp(now + timedelta(seconds=delay)), error, task.id))
            message = (f"Retrying task {task.label} in {delay:.1f} s after attempt {attempt} "
                       f"{what}: {error}")
            add_event(conn, self.clock, "task.retrying", message,
                      {"attempt": attempt, "delay_s": round(delay, 3), "error": error,
                       "timed_out": timed_out}, task.id)
            log.warning("%s", message)
            return "retrying"
        conn.execute(
            "UPDATE autonomous_tasks SET status = 'failed', completed_at = ?, worker = NULL, "
            "error_message = ? WHERE id = ?", (format_timestamp(now), error, task.id))
        message = f"Task {task.label} failed after {attempt} attempts: {error}"
        add_event(conn, self.clock, "task.failed", message,
                  {"attempts": attempt, "error": error, "timed_out": timed_out}, task.id)
        log.error("%s", message)
        return "failed"

    # -- recovery --------------------------------------------------------

    def recover_running(self) -> list[Task]:
        """Requeue tasks a dead daemon left ``running`` (at-least-once delivery).

        Each recovery counts as an attempt, so a task that kills the daemon
        every time it runs ends ``failed`` instead of crashing it forever.
        """
        now = self.clock.timestamp()
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT * FROM autonomous_tasks WHERE status = 'running'").fetchall()
            tasks = [Task.from_row(row) for row in rows]
            requeued, failed = [], []
            for task in tasks:
                if task.retry_count < task.max_retries:
                    conn.execute(
                        "UPDATE autonomous_tasks SET status = 'queued', retry_count = ?, "
                        "scheduled_at = ?, started_at = NULL, worker = NULL, error_message = ? "
                        "WHERE id = ?", (task.retry_count + 1, now,
                                         "interrupted: the daemon stopped while it ran", task.id))
                    requeued.append(task.id)
                else:
                    conn.execute(
                        "UPDATE autonomous_tasks SET status = 'failed', completed_at = ?, "
                        "worker = NULL, error_message = ? WHERE id = ?",
                        (now, "interrupted by a daemon crash on every attempt", task.id))
                    failed.append(task.id)
            if tasks:
                add_event(conn, self.clock, "daemon.recovered",
                          f"Recovered {len(tasks)} tasks left running by a stopped daemon: "
                          f"{len(requeued)} requeued, {len(failed)} failed",
                          {"requeued": requeued, "failed": failed})
        if tasks:
            log.warning("Recovered %d tasks left running by a stopped daemon: requeued %s, "
                        "failed %s", len(tasks), [i[:8] for i in requeued], [i[:8] for i in failed])
            self.notify()
        return tasks

    def requeue(self, task_ids: list[str], reason: str) -> list[str]:
        """Put running tasks back in the queue without counting an attempt (clean shutdown)."""
        now = self.clock.timestamp()
        requeued = []
        with self.db.write() as conn:
            for task_id in task_ids:
                if conn.execute(
                        "UPDATE autonomous_tasks SET status = 'queued', scheduled_at = ?, "
                        "started_at = NULL, worker = NULL WHERE id = ? AND status = 'running'",
                        (now, task_id)).rowcount:
                    requeued.append(task_id)
            if requeued:
                add_event(conn, self.clock, "task.requeued",
                          f"Requeued {len(requeued)} running tasks: {reason}",
                          {"task_ids": requeued, "reason": reason})
        return requeued

    def shift_due_times(self, seconds: float) -> int:
        """Move the due time of every waiting task by ``seconds`` after a wall-clock step.

        Due times are wall-clock timestamps, so without this a backward step
        would hold every queued task and retry until the clock caught up.
        """
        shift = timedelta(seconds=seconds)
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT id, scheduled_at FROM autonomous_tasks "
                "WHERE status IN ('queued', 'retrying')").fetchall()
            conn.executemany(
                "UPDATE autonomous_tasks SET scheduled_at = ? WHERE id = ?",
                [(format_timestamp(parse_timestamp(row[1]) + shift), row[0]) for row in rows])
        self.notify()
        return len(rows)

    # -- reading ---------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        row = self.db.read().execute(
            "SELECT * FROM autonomous_tasks WHERE id = ?", (task_id,)).fetchone()
        return Task.from_row(row) if row else None

    def counts(self) -> dict[str, int]:
        rows = self.db.read().execute(
            "SELECT status, COUNT(*) FROM autonomous_tasks GROUP BY status").fetchall()
        return {row[0]: row[1] for row in rows}

    def depth(self) -> int:
        """Count the tasks waiting to run (queued or retrying)."""
        return self.db.read().execute(
            "SELECT COUNT(*) FROM autonomous_tasks WHERE status IN ('queued', 'retrying')"
        ).fetchone()[0]
