"""The status document shared by ``mitoctl status`` and ``GET /api/autonomous/status``.

It is built on every request, so it must stay cheap. Site states and the
latest samples come from memory and active task counts from an index. The
counts of finished tasks need a scan of the status index, so they are cached
for a few seconds.
"""

import threading
import time

from mitod.clock import parse_timestamp
from mitod.config import redact_url
from mitod.engine.tasks import ACTIVE_STATUSES, STATUSES

FINISHED_COUNTS_TTL = 5.0


class StatusBuilder:
    def __init__(self, daemon):
        self.daemon = daemon
        self._lock = threading.Lock()
        self._finished: dict[str, int] = {}
        self._finished_at = -FINISHED_COUNTS_TTL

    def build(self) -> dict:
        engine = self.daemon.engine
        now = engine.clock.now()
        started = engine.started_at
        uptime = (now - parse_timestamp(started)).total_seconds() if started else 0.0
        counts = self.task_counts()
        threads = engine.thread_health()
        return {
            "state": "paused" if engine.paused else "running",
            "pid": engine.pid,
            "version": engine.version,
            "started_at": started,
            "uptime_seconds": round(uptime, 3),
            "config": engine.config.path,
            "tasks": counts,
            "queue_depth": counts["queued"] + counts["retrying"],
            "workers": {"busy": engine.executor.busy_count(), "total": engine.executor.size},
            "threads": threads,
            "healthy": all(threads.values()),
            "sites": self.sites(engine),
            "system": engine.last_system_sample,
            "mitod": engine.monitor.last_sample,
            "pressure": engine.pressure.snapshot(),
        }

    def task_counts(self) -> dict[str, int]:
        conn = self.daemon.engine.db.read()
        counts = {status: 0 for status in STATUSES}
        for status in ACTIVE_STATUSES:
            counts[status] = conn.execute(
                "SELECT COUNT(*) FROM autonomous_tasks WHERE status = ?", (status,)).fetchone()[0]
        with self._lock:
            if time.monotonic() - self._finished_at >= FINISHED_COUNTS_TTL:
                rows = conn.execute(
                    "SELECT status, COUNT(*) FROM autonomous_tasks "
                    "WHERE status IN ('completed', 'failed', 'cancelled') GROUP BY status")
                self._finished = {row[0]: row[1] for row in rows}
                self._finished_at = time.monotonic()
            counts.update(self._finished)
        return counts

    @staticmethod
    def sites(engine) -> list[dict]:
        urls = {site.name: redact_url(site.url) for site in engine.config.sites}
        states = []
        for state in engine.sites.snapshot():
            state["url"] = urls.get(state["name"])
            states.append(state)
        return states
