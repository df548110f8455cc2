"""Queue rebalancing: when the backlog passes the high-water mark, shed and defer work.

Duplicates (several waiting tasks of one job) are coalesced into the oldest,
and LOW work is deferred by ``LOW_DEFER`` so checks and maintenance drain
first. A rebalance runs at most once per ``MIN_GAP`` seconds.
"""

import logging
import time
from datetime import timedelta

from mitod.clock import format_timestamp
from mitod.engine.queue import TaskQueue
from mitod.engine.tasks import Priority
from mitod.store.oplog import add_event

log = logging.getLogger(__name__)

LOW_DEFER = 300.0
MIN_GAP = 30.0


class Rebalancer:
    def __init__(self, queue: TaskQueue, high_water: int):
        self.queue = queue
        self.high_water = high_water
        self._last_run = -MIN_GAP

    def check(self) -> dict | None:
        """Rebalance if the backlog is above the high-water mark; return what was done."""
        if time.monotonic() - self._last_run < MIN_GAP:
            return None
        depth = self.queue.depth()
        if depth <= self.high_water:
            return None
        self._last_run = time.monotonic()
        return self.rebalance(depth)

    def rebalance(self, depth: int) -> dict:
        clock = self.queue.clock
        now = clock.now()
        stamp = format_timestamp(now)
        deferred_until = format_timestamp(now + timedelta(seconds=LOW_DEFER))
        with self.queue.db.write() as conn:
            duplicates = [row[0] for row in conn.execute(
                "SELECT id FROM autonomous_tasks AS t WHERE status IN ('queued', 'retrying') "
                "AND EXISTS (SELECT 1 FROM autonomous_tasks AS o WHERE o.name = t.name "
                "AND o.status IN ('queued', 'retrying') "
                "AND (o.created_at < t.created_at OR (o.created_at = t.created_at "
                "AND o.id < t.id)))")]
            conn.executemany(
                "UPDATE autonomous_tasks SET status = 'cancelled', completed_at = ?, "
                "error_message = 'coalesced with an older task of the same job' WHERE id = ?",
                [(stamp, task_id) for task_id in duplicates])
            deferred = conn.execute(
                "UPDATE autonomous_tasks SET scheduled_at = ? WHERE status = 'queued' "
                "AND priority = ? AND scheduled_at < ?",
                (deferred_until, int(Priority.LOW), deferred_until)).rowcount
            summary = {"depth": depth, "high_water": self.high_water,
                       "coalesced": len(duplicates), "deferred_low": deferred,
                       "deferred_until": deferred_until, "cancelled_task_ids": duplicates}
            add_event(conn, clock, "queue.rebalanced",
                      f"Queue backlog {depth} passed the high-water mark {self.high_water}: "
                      f"coalesced {len(duplicates)} duplicate tasks, deferred {deferred} LOW "
                      f"tasks by {LOW_DEFER:.0f} s", summary)
        log.warning("Queue backlog %d passed the high-water mark %d: coalesced %d duplicate "
                    "tasks, deferred %d LOW tasks", depth, self.high_water, len(duplicates),
                    deferred)
        return summary
