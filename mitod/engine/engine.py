"""The engine: queue, scheduler, executor and monitor, wired to one configuration.

The daemon (foreground or detached) builds one :class:`Engine`, calls
:meth:`Engine.recover` before any worker runs, then :meth:`Engine.start`; the
control socket, the HTTP server and signal handlers steer it through
:meth:`pause`, :meth:`resume`, :meth:`run_job` and :meth:`apply_config`.
"""

import logging
import os
import threading

from mitod import __version__
from mitod.clock import SYSTEM_CLOCK, Clock
from mitod.config import Config
from mitod.engine.backoff import Backoff
from mitod.engine.executor import ClaimPolicy, Executor
from mitod.engine.monitor import Monitor
from mitod.engine.queue import TaskQueue
from mitod.engine.rebalance import Rebalancer
from mitod.engine.scheduler import Scheduler
from mitod.engine.tasks import Task
from mitod.jobs import catalog
from mitod.jobs.pressure import Pressure
from mitod.jobs.site_state import SiteStates
from mitod.store.database import Database
from mitod.store.oplog import add_event
from mitod.store.results import add_samples
from mitod.store.state import read_state, write_state

log = logging.getLogger(__name__)


class UnknownJobError(LookupError):
    """``run_job`` was given a name that is not a job of the current configuration."""


class Engine:
    """Runs the autonomous loop for one configuration and one database."""

    def __init__(self, config: Config, db: Database, clock: Clock = SYSTEM_CLOCK):
        self.config = config
        self.db = db
        self.clock = clock
        self.pid = os.getpid()
        self.version = __version__
        self.started_at: str | None = None
        self.queue = TaskQueue(db, clock, Backoff(config.daemon.retry_backoff,
                                                  config.daemon.retry_backoff_max),
                               config.daemon.priority_aging)
        self.sites = SiteStates()
        self.pressure = Pressure()
        self.rebalancer = Rebalancer(self.queue, config.daemon.queue_high_water)
        self.executor = Executor(self.queue, catalog.build_handlers(self), config.daemon.workers,
                                 self.claim_policy)
        self.executor.on_thread_event = self.record_event
        self.scheduler = Scheduler(self.queue, lambda: self.paused, on_tick=self._on_tick)
        self.scheduler.on_clock_step = self._on_clock_step
        self.monitor = Monitor(config.daemon.monitor_interval, self._record_own_sample,
                               self.revive_threads)
        self.paused = read_state(db.read(), "paused", "0") == "1"
        self.last_system_sample: dict | None = None
        self._state_lock = threading.Lock()
        self._running = False

    # -- audit -----------------------------------------------------------

    def record_event(self, event_type: str, message: str, details: dict | None = None,
                     task_id: str | None = None) -> None:
        """Write one ``operation_log`` row in its own transaction."""
        with self.db.write() as conn:
            add_event(conn, self.clock, event_type, message, details, task_id)

    # -- life cycle ------------------------------------------------------

    def recover(self) -> list[Task]:
        """Requeue tasks a crashed daemon left running; call before :meth:`start`."""
        return self.queue.recover_running()

    def start(self) -> None:
        self.started_at = self.clock.timestamp()
        self.sites.load(self.db, [site.name for site in self.config.sites])
        self.scheduler.set_jobs(catalog.scheduled_jobs(self.config))
        self.executor.start()
        self.scheduler.start()
        self.monitor.start()
        self._running = True
        state = "paused" if self.paused else "running"
        self.record_event("daemon.started",
                          f"mitod {self.version} started (pid {self.pid}, {state}, "
                          f"{len(self.config.sites)} sites, {self.config.daemon.workers} workers)",
                          {"pid": self.pid, "version": self.version, "paused": self.paused,
                           "config": self.config.path})
        log.info("Engine started: %s, %d sites, %d workers", state, len(self.config.sites),
                 self.config.daemon.workers)

    def stop(self, timeout: float | None = None) -> None:
        """Stop scheduling, give running tasks ``timeout`` s, requeue the rest."""
        if not self._running:
            return
        self._running = False
        timeout = self.config.daemon.shutdown_timeout if timeout is None else timeout
        log.info("Stopping: no new tasks; running tasks get %.0f s to finish", timeout)
        self.scheduler.stop()
        self.monitor.stop()
        unfinished = self.executor.stop(timeout)
        if unfinished:
            ids = self.queue.requeue([task.id for task in unfinished],
                                     f"still running after the {timeout:.0f} s shutdown timeout")
            log.warning("Requeued %d tasks still running at shutdown: %s", len(ids),
                        ", ".join(task.label for task in unfinished))
        self.record_event("daemon.stopped", f"mitod stopped (pid {self.pid})",
                          {"pid": self.pid, "requeued": [task.id for task in unfinished]})
        log.info("Engine stopped")

    # -- pause and resume ------------------------------------------------

    def claim_policy(self) -> ClaimPolicy:
        return ClaimPolicy(operator_only=self.paused, skip_low=self.pressure.defer_low)

    def pause(self, actor: dict | None = None) -> bool:
        """Stop autonomous work (persisted across restarts); return False if already paused."""
        return self._set_paused(True, actor)

    def resume(self, actor: dict | None = None) -> bool:
        return self._set_paused(False, actor)

    def _set_paused(self, paused: bool, actor: dict | None) -> bool:
        with self._state_lock:
            if self.paused == paused:
                return False
            word = "paused" if paused else "resumed"
            with self.db.write() as conn:
                write_state(conn, self.clock, "paused", "1" if paused else "0")
                add_event(conn, self.clock, f"operation.{word}",
                          f"Autonomous operation {word}" + _by(actor), {"actor": actor})
            self.paused = paused
        log.info("Autonomous operation %s%s", word, _by(actor))
        self.queue.notify()
        return True

    # -- jobs ------------------------------------------------------------

    def run_job(self, name: str, origin: str = "operator", actor: dict | None = None) -> Task:
        """Enqueue job ``name`` now at its priority; raise UnknownJobError for other names."""
        spec = catalog.find_job(self.config, name)
        if spec is None:
            raise UnknownJobError(
                f"unknown job {name!r}; jobs are: {', '.join(catalog.job_names(self.config))}")
        task = self.queue.enqueue(spec.name, spec.kind, spec.priority, payload=spec.payload,
                                  origin=origin, max_retries=spec.max_retries,
                                  timeout=spec.timeout, coalesce=False)
        log.info("Enqueued job %s as task %s on request%s", name, task.short_id, _by(actor))
        return task

    def trigger(self, name: str, reason: str, details: dict | None = None) -> Task | None:
        """Enqueue on-demand job ``name`` because a threshold was crossed (one at a time)."""
        spec = catalog.find_job(self.config, name)
        task = self.queue.enqueue(spec.name, spec.kind, spec.priority, payload=details or {},
                                  origin="threshold", max_retries=spec.max_retries,
                                  timeout=spec.timeout, coalesce=True)
        if task is not None:
            log.warning("Enqueued %s as task %s: %s", name, task.short_id, reason)
        return task

    # -- configuration ---------------------------------------------------

    def apply_config(self, new: Config) -> dict[str, list[str]]:
        """Switch to ``new`` without losing queued tasks; return the job changes."""
        old = self.config
        self.config = new
        changes = self.scheduler.set_jobs(catalog.scheduled_jobs(new))
        self.sites.keep_only([site.name for site in new.sites])
        if new.daemon.workers != old.daemon.workers:
            self.executor.resize(new.daemon.workers)
        if new.daemon.monitor_interval != old.daemon.monitor_interval:
            self.monitor.set_interval(new.daemon.monitor_interval)
        self.queue.backoff = Backoff(new.daemon.retry_backoff, new.daemon.retry_backoff_max)
        self.queue.priority_aging = new.daemon.priority_aging
        self.rebalancer.high_water = new.daemon.queue_high_water
        return changes

    # -- health ----------------------------------------------------------

    def thread_health(self) -> dict[str, bool]:
        """Map each engine thread's name to whether it is alive."""
        health = {
            "scheduler": self.scheduler.is_alive(),
            "monitor": self.monitor.is_alive(),
            "executor-watch": bool(self.executor.watch_thread
                                   and self.executor.watch_thread.is_alive()),
        }
        for name, worker in list(self.executor.workers.items()):
            health[name] = worker.is_alive()
        return health

    def revive_threads(self) -> list[str]:
        """Restart every dead engine thread; return the names restarted."""
        if not self._running:
            return []
        restarted = self.executor.revive()
        if not self.scheduler.is_alive():
            self.scheduler.start()
            restarted.append("scheduler")
            self._log_restart("scheduler")
        if not (self.executor.watch_thread and self.executor.watch_thread.is_alive()):
            self.executor.start_watch()
            restarted.append("executor-watch")
            self._log_restart("executor-watch")
        return restarted

    def _log_restart(self, name: str) -> None:
        log.error("Thread %s died; restarted it", name)
        self.record_event("thread.restarted", f"Thread {name} died; restarted it",
                          {"thread": name})

    # -- hooks -----------------------------------------------------------

    def _on_tick(self) -> None:
        self.rebalancer.check()

    def _on_clock_step(self, step: float) -> None:
        self.record_event("clock.stepped",
                          f"The wall clock stepped by {step:+.1f} s; jobs were rescheduled",
                          {"step_s": round(step, 3)})

    def _record_own_sample(self, sample: dict) -> None:
        with self.db.write() as conn:
            add_samples(conn, self.clock, "mitod", sample)


def _by(actor: dict | None) -> str:
    if not actor:
        return ""
    return f" by uid {actor.get('uid')} (pid {actor.get('pid')})"
