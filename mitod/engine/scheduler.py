"""The scheduler thread: turns due jobs into queued tasks, and does nothing else.

It declares the recurring jobs on its own ``schedule.Scheduler`` instance
(never the module-level default) and guards the package's known weak spots:

- ``schedule`` computes due times from the wall clock (``datetime.now()``).
  After a step of the wall clock (NTP, a manual ``date``), jobs would stall
  for the size of a backward step or all fire at once after a forward one.
  Each tick compares the wall clock's progress with ``time.monotonic()``.
  On a step, every job's next run and every waiting task's due time move by
  the step, so each keeps the wait it had left.
- A job function that raises would stop ``run_pending`` and the jobs after
  it; each job here catches and logs its own errors.
- A job whose previous task is still queued or running is coalesced: no
  second task is enqueued, and the skip is logged once per streak.
"""

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import schedule

from mitod.engine.queue import TaskQueue, TaskRequest
from mitod.store.errors import StoreError

log = logging.getLogger(__name__)

# The largest gap between wall-clock and monotonic progress over one tick
# that still counts as jitter rather than a clock step.
STEP_TOLERANCE = 2.0
TICK = 1.0


@dataclass(frozen=True)
class JobSpec:
    """A recurring job: what to enqueue, how often, at what priority, with what timeout."""

    name: str
    kind: str
    priority: int
    interval: float
    timeout: float
    payload: dict = field(default_factory=dict, hash=False, compare=True)
    run_at_start: bool = False
    max_retries: int = 3


@dataclass
class JobState:
    spec: JobSpec
    job: schedule.Job
    last_enqueued: str | None = None
    skipped: int = 0
    skip_logged: bool = False


class Scheduler:
    """Owns the scheduler thread; :meth:`set_jobs` replaces the job list at any time."""

    def __init__(self, queue: TaskQueue, is_paused: Callable[[], bool],
                 on_tick: Callable[[], None] | None = None,
                 wall_clock: Callable[[], datetime.datetime] = datetime.datetime.now,
                 monotonic: Callable[[], float] = time.monotonic):
        self.queue = queue
        self.is_paused = is_paused
        self.on_tick = on_tick or (lambda: None)
        self.on_clock_step: Callable[[float], None] = lambda step: None
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.thread: threading.Thread | None = None
        self.heartbeat = monotonic()
        # Test hooks, set only when MITOD_TEST_HOOKS is in the environment.
        self.stuck_for_test = threading.Event()
        self.die_for_test = threading.Event()
        self._schedule = schedule.Scheduler()
        self._jobs: dict[str, JobState] = {}
        self._due: list[tuple[JobState, TaskRequest]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._last_wall = wall_clock()
        self._last_mono = monotonic()

    # -- jobs ------------------------------------------------------------

    def set_jobs(self, specs: list[JobSpec]) -> dict[str, list[str]]:
        """Replace the job list; return the names added, removed and changed.

        Jobs whose spec did not change keep their next run time.
        """
        changes: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
        requested = {spec.name: spec for spec in specs}
        with self._lock:
            for name in list(self._jobs):
                if name not in requested:
                    self._schedule.cancel_job(self._jobs.pop(name).job)
                    changes["removed"].append(name)
            for name, spec in requested.items():
                current = self._jobs.get(name)
                if current is not None and current.spec == spec:
                    continue
                if current is not None:
                    self._schedule.cancel_job(current.job)
                    changes["changed"].append(name)
                else:
                    changes["added"].append(name)
                self._add(spec, first=current is None)
        self._wakeup.set()
        return changes

    def _add(self, spec: JobSpec, first: bool) -> None:
        seconds = max(1, round(spec.interval))
        job = self._schedule.every(seconds).seconds.do(self._fire, spec.name)
        if first and spec.run_at_start:
            job.next_run = datetime.datetime.now()
        state = self._jobs.get(spec.name)
        self._jobs[spec.name] = JobState(spec, job) if state is None else JobState(
            spec, job, state.last_enqueued, state.skipped, state.skip_logged)

    def specs(self) -> list[JobSpec]:
        with self._lock:
            return [state.spec for state in self._jobs.values()]

    def spec(self, name: str) -> JobSpec | None:
        with self._lock:
            state = self._jobs.get(name)
            return state.spec if state else None

    def job_table(self) -> list[dict]:
        """Describe every job: interval, priority, last enqueue and next run (local time)."""
        with self._lock:
            rows = []
            for name, state in sorted(self._jobs.items()):
                next_run = state.job.next_run
                rows.append({
                    "name": name, "kind": state.spec.kind, "priority": state.spec.priority,
                    "interval_s": state.spec.interval, "timeout_s": state.spec.timeout,
                    "last_enqueued_at": state.last_enqueued,
                    "next_run_at": next_run.astimezone().astimezone(datetime.timezone.utc)
                    .isoformat(timespec="microseconds") if next_run else None,
                    "skipped_runs": state.skipped,
                })
            return rows

    # -- thread ----------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._last_wall = self.wall_clock()
        self._last_mono = self.monotonic()
        self.heartbeat = self.monotonic()
        self.thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self.thread.start()
        log.info("Scheduler started with %d jobs", len(self._jobs))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wakeup.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        log.info("Scheduler stopped")

    def is_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = self.monotonic()
            while self.stuck_for_test.is_set() and not self._stop.is_set():
                time.sleep(0.05)  # test hook: simulates a scheduler stuck in a call
            if self.die_for_test.is_set():
                self.die_for_test.clear()
                log.error("Test hook: the scheduler thread exits on purpose")
                return
            self.tick()
            idle = self._idle_seconds()
            self._wakeup.wait(min(TICK, max(idle, 0.0)) if idle is not None else TICK)
            self._wakeup.clear()

    def tick(self) -> None:
        """Detect a clock step, enqueue what is due, and run the per-tick hook."""
        self.check_clock_step()
        with self._lock:
            self._schedule.run_pending()
            self._enqueue_due()
        try:
            self.on_tick()
        except Exception:  # the hook (queue rebalancing) must not stop scheduling
            log.exception("The scheduler's per-tick hook failed")

    def _idle_seconds(self) -> float | None:
        with self._lock:
            return self._schedule.idle_seconds

    def check_clock_step(self) -> float:
        """Return the wall-clock step since the last tick (0.0 if none) and reschedule on one."""
        wall, mono = self.wall_clock(), self.monotonic()
        expected = self._last_wall + datetime.timedelta(seconds=mono - self._last_mono)
        step = (wall - expected).total_seconds()
        self._last_wall, self._last_mono = wall, mono
        if abs(step) <= STEP_TOLERANCE:
            return 0.0
        with self._lock:
            for job in self._schedule.jobs:
                if job.next_run is not None:
                    job.next_run += datetime.timedelta(seconds=step)
        try:
            waiting = self.queue.shift_due_times(step)
        except StoreError as error:
            waiting = 0
            log.error("Could not move the due times of waiting tasks after a clock step: %s",
                      error)
        log.warning("The wall clock stepped by %+.1f s; moved the next run of %d jobs and the "
                    "due time of %d waiting tasks by the same amount so none stalls or fires "
                    "early", step, len(self._jobs), waiting)
        self.on_clock_step(step)
        return step

    # -- enqueueing ------------------------------------------------------

    def _fire(self, name: str) -> None:
        """Collect job ``name`` for this tick's batch; errors are logged, never raised.

        ``schedule`` stops a ``run_pending`` round at the first job that raises,
        so nothing may escape from here.
        """
        state = self._jobs.get(name)
        if state is None or self.is_paused():
            return
        spec = state.spec
        try:
            request = TaskRequest(spec.name, spec.kind, spec.priority, spec.payload,
                                  max_retries=spec.max_retries, timeout=spec.timeout,
                                  coalesce=True)
        except Exception:  # one broken job must never stop the others
            log.exception("Could not enqueue job %s; it runs again at its next interval", name)
            return
        self._due.append((state, request))

    def _enqueue_due(self) -> None:
        """Enqueue every job collected in this tick, in one transaction."""
        due, self._due = self._due, []
        if not due:
            return
        try:
            tasks = self.queue.enqueue_many([request for _state, request in due])
        except StoreError as error:
            log.error("Could not enqueue jobs %s: %s; they run again at their next interval",
                      ", ".join(state.spec.name for state, _ in due), error)
            return
        except Exception:  # a database fault must not stop the scheduler thread
            log.exception("Could not enqueue jobs %s; they run again at their next interval",
                          ", ".join(state.spec.name for state, _ in due))
            return
        for (state, _request), task in zip(due, tasks, strict=True):
            self._note_outcome(state, task)

    def _note_outcome(self, state: JobState, task) -> None:
        name = state.spec.name
        if task is None:
            state.skipped += 1
            if not state.skip_logged:
                log.info("Skipped job %s: its previous task is still queued or running; "
                         "further skips are not logged until it runs again", name)
                state.skip_logged = True
            return
        if state.skip_logged:
            log.info("Job %s enqueued again after %d skipped runs", name, state.skipped)
        state.skipped = 0
        state.skip_logged = False
        state.last_enqueued = task.created_at
