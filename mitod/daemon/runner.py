"""The daemon's life: start-up in a fixed order, the main loop, reload and shutdown.

Start-up order: configuration, logging, pidfile lock, database, crash
recovery, control socket, HTTP port, engine threads. Each step that fails
raises :class:`StartupError` with the exit code the command must return (78
for configuration errors, 1 otherwise), after undoing the steps before it.

The main thread then only handles signals, taken off a queue, and keeps
systemd informed (``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1``).
"""

import logging
import os
import signal
import threading
import time

from mitod import __version__
from mitod.config import ConfigError, load_config
from mitod.config.diff import describe_changes
from mitod.daemon.memory import limit_malloc_arenas
from mitod.daemon.notify import Notifier
from mitod.daemon.pidfile import AlreadyRunningError, Pidfile, PidfileError
from mitod.daemon.signals import SignalQueue
from mitod.daemon.status import StatusBuilder
from mitod.engine.engine import Engine
from mitod.logsetup import LogSetup
from mitod.store.database import Database
from mitod.store.errors import StoreError

log = logging.getLogger(__name__)

EX_OK = 0
EX_FAILURE = 1
EX_CONFIG = 78  # EX_CONFIG from sysexits.h, as nginx -t and monit -t use for bad configuration

MAIN_LOOP_TICK = 1.0
STATUS_REFRESH = 10.0
# The scheduler ticks at least once a second; a heartbeat older than this means it is stuck.
SCHEDULER_STUCK_AFTER = 5.0
TEST_HOOKS_ENV = "MITOD_TEST_HOOKS"


class StartupError(Exception):
    """Start-up failed; ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int = EX_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


class Daemon:
    """One mitod process: owns the pidfile, database, engine and servers."""

    def __init__(self, config_path: str, log_to_stderr: bool = True,
                 notifier: Notifier | None = None):
        self.config_path = config_path
        self.log_to_stderr = log_to_stderr
        self.notifier = notifier or Notifier()
        self.signals = SignalQueue()
        self.logs = LogSetup()
        self.config = None
        self.pidfile: Pidfile | None = None
        self.db: Database | None = None
        self.engine: Engine | None = None
        self.control = None
        self.http = None
        self.status = StatusBuilder(self)
        # MITOD_TEST_HOOKS=stick-scheduler (or 1) or kill-scheduler arms SIGUSR2 for tests.
        self.test_hook = os.environ.get(TEST_HOOKS_ENV, "")
        self.test_hooks = self.test_hook in ("1", "stick-scheduler", "kill-scheduler")
        self._reload_lock = threading.Lock()
        self._stopping = False
        self._last_watchdog = 0.0
        self._withholding = False
        self._last_status = 0.0

    # -- start-up --------------------------------------------------------

    def start(self) -> None:
        """Bring the daemon up to ready; raise StartupError after undoing partial steps."""
        limit_malloc_arenas()
        self.signals.install()
        if self.test_hooks:
            signal.signal(signal.SIGUSR2, lambda *_: self.signals.put(signal.SIGUSR2))
        try:
            self._start_steps()
        except StartupError as error:
            if self.logs.configured:  # otherwise the command prints it, and once is enough
                log.error("Start-up failed: %s", error)
            self._fail_startup(str(error))
            raise
        except Exception as error:
            log.exception("Start-up failed")
            self._fail_startup(f"{type(error).__name__}: {error}")
            raise StartupError(f"start-up failed: {type(error).__name__}: {error}") from error

    def _fail_startup(self, message: str) -> None:
        self.notifier.status("start-up failed: " + "; ".join(message.splitlines()))
        self._teardown()

    def _start_steps(self) -> None:
        self.config = self._load_config()
        self._configure_logging()
        log.info("Starting mitod %s (pid %d) with configuration %s", __version__, os.getpid(),
                 self.config_path)
        self._lock_pidfile()
        self._open_database()
        self.engine = Engine(self.config, self.db)
        self.engine.recover()
        self._start_control()
        self._start_http()
        self.engine.start()
        log.info("mitod is ready (pid %d): %s", os.getpid(), self.summary())

    def _load_config(self):
        try:
            return load_config(self.config_path)
        except ConfigError as error:
            raise StartupError("invalid configuration:\n" + str(error), EX_CONFIG) from None

    def _configure_logging(self) -> None:
        settings = self.config.log
        try:
            self.logs.configure(settings.level, settings.file, settings.max_bytes,
                                settings.backups, to_stderr=self.log_to_stderr)
        except OSError as error:
            raise StartupError(f"cannot open log file {settings.file}: {error.strerror}; "
                               "fix [log] file or its folder's permissions, or set it to \"\"",
                               EX_FAILURE) from None

    def _lock_pidfile(self) -> None:
        pidfile = Pidfile(self.config.daemon.pidfile)
        try:
            pidfile.acquire()
        except (AlreadyRunningError, PidfileError) as error:
            raise StartupError(str(error)) from None
        self.pidfile = pidfile

    def _open_database(self) -> None:
        try:
            self.db = Database(self.config.daemon.database).open()
        except StoreError as error:
            raise StartupError(str(error)) from None

    def _start_control(self) -> None:
        from mitod.control.server import ControlServer, ControlServerError
        from mitod.control.commands import CommandDispatcher

        server = ControlServer(self.config.daemon.socket, self.config.control,
                               CommandDispatcher(self))
        try:
            server.start()
        except ControlServerError as error:
            raise StartupError(str(error)) from None
        self.control = server

    def _start_http(self) -> None:
        if not self.config.http.enabled:
            log.info("HTTP status endpoint disabled ([http] enabled = false)")
            return
        from mitod.http.server import HttpServerError, StatusHttpServer

        server = StatusHttpServer(self.config.http, self)
        try:
            server.start()
        except HttpServerError as error:
            raise StartupError(str(error)) from None
        self.http = server

    # -- main loop -------------------------------------------------------

    def serve(self) -> int:
        """Handle signals until asked to stop; then shut down and return the exit code."""
        self.notifier.ready(self.summary())
        tick = MAIN_LOOP_TICK
        if self.notifier.watchdog_interval:
            tick = min(tick, self.notifier.watchdog_interval)
        while not self._stopping:
            signum = self.signals.get(timeout=tick)
            if signum is not None:
                self._handle_signal(signum)
            self._keep_alive()
        self.shutdown()
        return EX_OK

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        log.info("Handling signal %s", name)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP:
            self.reload(source="SIGHUP")
        elif signum == signal.SIGUSR1:
            if self.logs.reopen():
                log.info("Reopened log file %s", self.logs.file_path)
        elif signum == signal.SIGUSR2 and self.test_hooks:
            if self.test_hook == "kill-scheduler":
                self.engine.scheduler.die_for_test.set()
            else:
                self.engine.scheduler.stuck_for_test.set()
                log.warning("Test hook: the scheduler is now stuck on purpose")

    def request_stop(self) -> None:
        """Ask the main loop to stop, from any thread."""
        self.signals.put(signal.SIGTERM)

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if not self.engine.monitor.is_alive():
            log.error("Thread monitor died; restarted it")
            self.engine.monitor.start()
            self.engine.record_event("thread.restarted", "Thread monitor died; restarted it",
                                     {"thread": "monitor"})
        interval = self.notifier.watchdog_interval
        if interval and now - self._last_watchdog >= interval * 0.9:
            problems = self.health_problems()
            if not problems:
                self.notifier.watchdog()
                self._last_watchdog = now
                if self._withholding:
                    log.warning("The engine is healthy again; watchdog pings resumed")
                    self._withholding = False
            elif not self._withholding:
                log.error("Withholding the systemd watchdog ping until the engine is healthy "
                          "again: %s", "; ".join(problems))
                self._withholding = True
        if self.notifier.enabled and now - self._last_status >= STATUS_REFRESH:
            self.notifier.status(self.summary())
            self._last_status = now

    def health_problems(self) -> list[str]:
        """Return why the engine is unhealthy; an empty list means healthy."""
        problems = [f"thread {name} is not alive"
                    for name, alive in self.engine.thread_health().items() if not alive]
        stalled = time.monotonic() - self.engine.scheduler.heartbeat
        if stalled > SCHEDULER_STUCK_AFTER:
            problems.append(f"the scheduler has not ticked for {stalled:.0f} s")
        return problems

    def summary(self) -> str:
        """Return a one-line state for systemd's STATUS= and the log."""
        engine = self.engine
        if engine is None:
            return "starting"
        state = "paused" if engine.paused else "running"
        sites = engine.sites.snapshot()
        down = sum(1 for site in sites if site["state"] == "down")
        return (f"{state}; {len(sites)} sites, {down} down; "
                f"{engine.executor.busy_count()}/{engine.executor.size} workers busy")

    # -- reload ----------------------------------------------------------

    def reload(self, source: str, actor: dict | None = None) -> dict:
        """Re-read the configuration and apply it; on errors keep the old one.

        Returns ``{"ok": True, "summary": ..., "changes": [...], "restart_required": [...]}``
        or ``{"ok": False, "errors": [...]}``.
        """
        with self._reload_lock:
            self.notifier.reloading()
            try:
                return self._reload(source, actor)
            finally:
                self.notifier.ready(self.summary())  # READY=1 ends the RELOADING=1 state

    def _reload(self, source: str, actor: dict | None) -> dict:
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error("Reload (%s) rejected; keeping the running configuration. Errors:\n%s",
                      source, "\n".join(error.errors))
            self.engine.record_event("config.rejected",
                                     f"Reload ({source}) rejected with {len(error.errors)} "
                                     "errors; the running configuration is kept",
                                     {"errors": error.errors, "source": source, "actor": actor})
            return {"ok": False, "errors": error.errors}
        applied, restart = describe_changes(self.config, new)
        self.engine.apply_config(new)
        self.logs.apply(new.log.level, new.log.file, new.log.max_bytes, new.log.backups)
        self.config = new
        summary = "; ".join(applied) if applied else "no changes"
        if restart:
            summary += "; takes effect at the next restart: " + "; ".join(restart)
        log.info("Reloaded configuration (%s): %s", source, summary)
        self.engine.record_event("config.reloaded", f"Reloaded configuration ({source}): "
                                 f"{summary}", {"changes": applied, "restart_required": restart,
                                                "source": source, "actor": actor})
        return {"ok": True, "summary": summary, "changes": applied, "restart_required": restart}

    # -- shutdown --------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the engine gracefully, then close servers, database and pidfile."""
        log.info("Shutting down")
        self.notifier.stopping()
        if self.engine is not None:
            self.engine.stop()
        self._teardown()
        log.info("mitod stopped")

    def _teardown(self) -> None:
        for server in (self.http, self.control):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # keep tearing down the rest
                    log.exception("Stopping %s failed", type(server).__name__)
        self.http = self.control = None
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.pidfile is not None:
            self.pidfile.release()
            self.pidfile = None
        self.notifier.close()
        self.signals.restore()
