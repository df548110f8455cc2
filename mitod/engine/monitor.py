"""The monitor thread: samples mitod's own CPU and memory and revives dead engine threads."""

import logging
import threading
from typing import Callable

import psutil

from mitod.store.errors import StoreError

log = logging.getLogger(__name__)


class Monitor:
    """Every ``interval`` seconds: sample this process, then call ``revive`` for dead threads."""

    def __init__(self, interval: float, record_sample: Callable[[dict], None],
                 revive: Callable[[], list[str]]):
        self.interval = interval
        self.record_sample = record_sample
        self.revive = revive
        self.last_sample: dict | None = None
        self.thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        # psutil's first cpu_percent() call has no earlier reading to compare
        # with and always returns 0.0, so prime it here and never report that value.
        self._process.cpu_percent(None)

    def start(self) -> None:
        self._stop.clear()
        self.thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wakeup.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def set_interval(self, interval: float) -> None:
        self.interval = interval
        self._wakeup.set()

    def poke(self) -> None:
        """Run a round now instead of at the next interval."""
        self._wakeup.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait(self.interval)
            self._wakeup.clear()
            if self._stop.is_set():
                break
            self.run_once()

    def run_once(self) -> None:
        try:
            self.sample()
        except (StoreError, psutil.Error) as error:
            log.error("Sampling mitod's own resources failed: %s", error)
        except Exception:
            log.exception("Sampling mitod's own resources failed")
        try:
            self.revive()
        except Exception:  # the monitor is the last line of defence; it must keep running
            log.exception("Reviving dead engine threads failed")

    def sample(self) -> dict:
        with self._process.oneshot():
            memory = self._process.memory_info()
            sample = {
                "mitod_cpu_percent": self._process.cpu_percent(None),
                "mitod_rss_bytes": float(memory.rss),
                "mitod_threads": float(self._process.num_threads()),
                "mitod_open_files": float(self._process.num_fds()),
            }
        self.last_sample = sample
        log.debug("mitod uses %.1f %% CPU and %.1f MiB RSS with %d threads",
                  sample["mitod_cpu_percent"], sample["mitod_rss_bytes"] / 2**20,
                  sample["mitod_threads"])
        self.record_sample(sample)
        return sample
