"""The executor: a pool of worker threads that claim tasks and run their handlers.

Workers sleep on the queue's condition. They wake when work is enqueued, when
a maintenance slot frees up, or when the next task falls due, so there is no
fixed polling sleep.

Timeouts: Python cannot kill a thread. When a task runs past its timeout the
watch thread records the attempt as failed (timed out, so it is retried like
any other failure), marks the worker *abandoned* and starts a replacement, so
the pool keeps its size. The abandoned thread runs on until its handler
returns. Then it finds the mark, discards the result without writing it, and
exits. The queue's ``WHERE worker = ?`` guard makes a late write harmless too.
"""

import itertools
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from mitod.engine.queue import TaskQueue
from mitod.engine.tasks import Task
from mitod.store.errors import StoreError

log = logging.getLogger(__name__)

# A handler runs one task and returns (result, summary) for the task's row and log line.
Handler = Callable[[Task], tuple[dict | None, str]]

STORE_RETRY_DELAY = 1.0


@dataclass
class ClaimPolicy:
    """The claim filter: only operator tasks while paused, no LOW work under resource pressure."""

    operator_only: bool = False
    skip_low: bool = False


class Worker:
    """One worker thread and the task it is running, if any."""

    def __init__(self, name: str, target: Callable[["Worker"], None]):
        self.name = name
        self.task: Task | None = None
        self.deadline: float | None = None
        self.abandoned = False
        self.found_queue_empty = False
        self.thread = threading.Thread(target=target, args=(self,), name=name, daemon=True)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def is_alive(self) -> bool:
        return self.thread.is_alive()


class Executor:
    """A fixed-size pool of workers plus the watch thread that enforces task timeouts."""

    def __init__(self, queue: TaskQueue, handlers: dict[str, Handler], size: int,
                 policy: Callable[[], ClaimPolicy], default_timeout: float = 300.0):
        self.queue = queue
        self.handlers = handlers
        self.size = size
        self.policy = policy
        self.default_timeout = default_timeout
        self.workers: dict[str, Worker] = {}
        self.abandoned: list[Worker] = []
        self.on_thread_event: Callable[[str, str, dict], None] = lambda *args: None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._numbers = itertools.count(1)
        self._watch_wakeup = threading.Condition()
        self._watch_next = 0.0  # monotonic time of the watch thread's next scheduled look
        self.watch_thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            while len(self.workers) < self.size:
                self._spawn_worker()
        self.start_watch()
        log.info("Started %d workers", self.size)

    def start_watch(self) -> None:
        self.watch_thread = threading.Thread(target=self._watch, name="executor-watch",
                                             daemon=True)
        self.watch_thread.start()

    def _spawn_worker(self) -> Worker:
        worker = Worker(f"worker-{next(self._numbers)}", self._run_worker)
        self.workers[worker.name] = worker
        worker.thread.start()
        return worker

    def resize(self, size: int) -> None:
        """Grow or shrink the pool; idle workers beyond ``size`` exit after their task."""
        with self._lock:
            self.size = size
            while len(self.workers) < size:
                self._spawn_worker()
            surplus = len(self.workers) - size
            for worker in sorted(self.workers.values(), key=lambda w: w.busy)[:max(surplus, 0)]:
                worker.abandoned = True
                del self.workers[worker.name]
        self.queue.notify()
        log.info("Worker pool resized to %d", size)

    def stop(self, timeout: float) -> list[Task]:
        """Stop claiming, wait up to ``timeout`` s for running tasks, return those still running."""
        self._stop.set()
        self.queue.notify()
        with self._watch_wakeup:
            self._watch_wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for worker in list(self.workers.values()):
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = [w.task for w in self.workers.values() if w.task is not None]
        if self.watch_thread is not None:
            self.watch_thread.join(1.0)
        return unfinished

    # -- health ----------------------------------------------------------

    def busy_count(self) -> int:
        return sum(1 for worker in list(self.workers.values()) if worker.busy)

    def dead_workers(self) -> list[str]:
        return [w.name for w in list(self.workers.values()) if not w.is_alive()]

    def revive(self) -> list[str]:
        """Replace workers whose thread died; return the names of the ones replaced."""
        replaced = []
        with self._lock:
            if self._stop.is_set():
                return replaced
            for name in self.dead_workers():
                dead = self.workers.pop(name)
                fresh = self._spawn_worker()
                replaced.append(name)
                log.error("Worker %s died; started %s in its place", name, fresh.name)
                self.on_thread_event("thread.restarted", f"Worker {name} died; started "
                                     f"{fresh.name} in its place",
                                     {"thread": name, "replacement": fresh.name,
                                      "task_id": dead.task.id if dead.task else None})
        return replaced

    # -- the worker loop -------------------------------------------------

    def _run_worker(self, worker: Worker) -> None:
        task: Task | None = None
        while not self._stop.is_set() and not worker.abandoned:
            policy = self.policy()
            if task is None:
                seen = self.queue.generation
                task = self._claim(worker, policy)
                if task is None:
                    self.queue.wait_for_work(seen, self._stop, policy.operator_only)
                    continue
            seen = self.queue.generation
            task = self._execute(worker, task, policy)
            if task is None and worker.found_queue_empty:
                # The completion already looked for a next task and found none,
                # so wait for a change instead of looking again at once.
                worker.found_queue_empty = False
                self.queue.wait_for_work(seen, self._stop, policy.operator_only)

    def _claim(self, worker: Worker, policy: ClaimPolicy) -> Task | None:
        try:
            return self.queue.claim(worker.name, policy.operator_only, policy.skip_low)
        except StoreError as error:
            log.error("Worker %s could not claim a task: %s; trying again in %.0f s",
                      worker.name, error, STORE_RETRY_DELAY)
        except Exception:  # an unexpected database error must not kill the worker
            log.exception("Worker %s could not claim a task; trying again in %.0f s",
                          worker.name, STORE_RETRY_DELAY)
        self._stop.wait(STORE_RETRY_DELAY)
        return None

    def _execute(self, worker: Worker, task: Task, policy: ClaimPolicy) -> Task | None:
        """Run ``task`` and record its outcome; return the next task if one was claimed with it."""
        timeout = task.timeout_s or self.default_timeout
        worker.task = task
        worker.deadline = time.monotonic() + timeout
        if worker.deadline < self._watch_next:
            self._wake_watch()
        log.info("Started task %s on %s (attempt %d, timeout %.0f s)", task.label, worker.name,
                 task.retry_count + 1, timeout)
        handler = self.handlers.get(task.kind)
        started = time.monotonic()
        try:
            if handler is None:
                raise LookupError(f"no handler for task kind {task.kind!r}; "
                                  "the task was enqueued by a newer or other program")
            result, summary = handler(task)
        except Exception as error:  # any handler error is a failed attempt, never a dead worker
            self._finish_failed(worker, task, error)
            return None
        except BaseException as error:
            # SystemExit or KeyboardInterrupt from a handler: record the attempt,
            # then let this thread end; the monitor starts a replacement.
            self._finish_failed(worker, task, error)
            raise
        return self._finish_completed(worker, task, result, summary,
                                      time.monotonic() - started, policy)

    def _finish_completed(self, worker: Worker, task: Task, result: dict | None, summary: str,
                          elapsed: float, policy: ClaimPolicy) -> Task | None:
        if worker.abandoned:
            log.warning("Task %s finished on %s after %.1f s, past its timeout; its result was "
                        "discarded because the attempt was already recorded as timed out",
                        task.label, worker.name, elapsed)
            worker.task = None
            return None
        log.info("Completed task %s in %.0f ms%s", task.label, elapsed * 1000,
                 f": {summary}" if summary else "")
        following = None
        for attempt in range(3):
            try:
                if self._stop.is_set():
                    self.queue.complete(task, result, summary)
                else:
                    _, following = self.queue.complete_and_claim(
                        task, result, summary, worker.name, policy.operator_only,
                        policy.skip_low)
                    worker.found_queue_empty = following is None
                break
            except StoreError as error:
                log.error("Recording the completion of task %s failed (attempt %d of 3): %s",
                          task.label, attempt + 1, error)
                self._stop.wait(STORE_RETRY_DELAY)
        worker.task = following
        if following is not None:
            worker.deadline = None
        return following

    def _finish_failed(self, worker: Worker, task: Task, error: BaseException) -> None:
        message = str(error) or type(error).__name__
        if worker.abandoned:
            log.warning("Task %s failed on %s after its timeout: %s", task.label, worker.name,
                        message)
            worker.task = None
            return
        log.error("Task %s raised %s: %s\n%s", task.label, type(error).__name__, message,
                  "".join(traceback.format_exception(error)).rstrip())
        try:
            self.queue.fail(task, message)
        except StoreError as store_error:
            log.error("Recording the failure of task %s failed: %s; the task stays running "
                      "in the database and is recovered at the next start", task.label,
                      store_error)
        worker.task = None

    # -- timeouts --------------------------------------------------------

    def _wake_watch(self) -> None:
        with self._watch_wakeup:
            self._watch_wakeup.notify_all()

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [w.deadline for w in list(self.workers.values())
                         if w.task is not None and w.deadline is not None]
            for worker in list(self.workers.values()):
                if worker.task is not None and worker.deadline is not None \
                        and worker.deadline <= now:
                    self._abandon(worker)
            wait = min(max(min((d - now for d in deadlines if d > now), default=1.0), 0.01), 1.0)
            self._watch_next = now + wait
            with self._watch_wakeup:
                self._watch_wakeup.wait(wait)

    def _abandon(self, worker: Worker) -> None:
        task = worker.task
        if task is None:
            return
        with self._lock:
            if self.workers.get(worker.name) is not worker:
                return
            worker.abandoned = True
            del self.workers[worker.name]
            self.abandoned.append(worker)
            fresh = self._spawn_worker()
        timeout = task.timeout_s or self.default_timeout
        log.error("Task %s timed out after %.0f s on %s; the thread cannot be killed, so it is "
                  "abandoned and %s takes its place", task.label, timeout, worker.name,
                  fresh.name)
        self.on_thread_event("thread.replaced",
                             f"Worker {worker.name} abandoned after task {task.label} timed out; "
                             f"{fresh.name} takes its place",
                             {"thread": worker.name, "replacement": fresh.name,
                              "task_id": task.id})
        try:
            self.queue.fail(task, f"timed out after {timeout:.0f} s", timed_out=True)
        except StoreError as error:
            log.error("Recording the timeout of task %s failed: %s", task.label, error)
        self.abandoned = [w for w in self.abandoned if w.is_alive()]
