"""The resource-pressure state that an emergency optimisation sets and a healthy check clears.

While pressure lasts, LOW work is deferred (workers do not claim it) and
mitod runs at a lower CPU scheduling priority (a higher nice value).

On Linux, nice values belong to threads, so every thread of the process is
reniced, and threads started later inherit the value from their creator.
Raising the nice value needs no privilege, but lowering it back needs root or
CAP_SYS_NICE. An unprivileged mitod therefore keeps the higher value until it
restarts, and logs that it does.
"""

import logging
import os
import threading

log = logging.getLogger(__name__)

NICE_STEP = 10


class Pressure:
    def __init__(self):
        self._lock = threading.Lock()
        self.active = False
        self.since: str | None = None
        self.reason: str | None = None
        self.base_nice: int | None = None

    @property
    def defer_low(self) -> bool:
        return self.active

    def enter(self, since: str, reason: str) -> bool:
        """Start deferring LOW work and renice mitod; return False if already under pressure."""
        with self._lock:
            if self.active:
                return False
            self.active = True
            self.since = since
            self.reason = reason
            self.base_nice = os.getpriority(os.PRIO_PROCESS, 0)
            target = min(19, self.base_nice + NICE_STEP)
        _renice_all_threads(target)
        log.warning("Resource pressure: deferring LOW work and lowering mitod's CPU priority "
                    "to nice %d (%s)", target, reason)
        return True

    def leave(self) -> bool:
        """Stop deferring LOW work and restore the nice value if allowed; False if not active."""
        with self._lock:
            if not self.active:
                return False
            self.active = False
            base = self.base_nice
            self.since = self.reason = None
        if base is not None and not _renice_all_threads(base):
            log.info("Could not restore nice %d without CAP_SYS_NICE; mitod keeps its lower "
                     "CPU priority until it restarts", base)
        log.info("Resource pressure is over: LOW work runs again")
        return True

    def snapshot(self) -> dict:
        with self._lock:
            return {"active": self.active, "since": self.since, "reason": self.reason}


def _renice_all_threads(value: int) -> bool:
    ok = True
    for entry in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(entry), value)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except PermissionError:
            ok = False
    return ok
