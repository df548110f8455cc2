"""Signal handling through a queue: handlers only enqueue, the main thread acts.

A signal handler may interrupt the main thread anywhere, even inside a lock
it holds, so the handlers here do nothing but ``SimpleQueue.put``, which is
safe to call re-entrantly. The main loop takes the signals off the queue.
"""

import queue
import signal

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class SignalQueue:
    def __init__(self):
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        self._queue.put(signum)

    def get(self, timeout: float) -> int | None:
        """Return the next signal number, or None if none arrived within ``timeout`` s."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def put(self, signum: int) -> None:
        """Queue a signal as if it had arrived (used to stop from another thread)."""
        self._queue.put(signum)
