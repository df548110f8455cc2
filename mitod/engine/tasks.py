"""Tasks (one execution of a job, one row of ``autonomous_tasks``) and their priorities."""

import json
import sqlite3
from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    CRITICAL = 1  # system emergencies
    HIGH = 2      # site and system health checks
    MEDIUM = 3    # optimisation and maintenance
    LOW = 4       # reports and analytics


# Work at or below this priority is maintenance: at most one such task runs at a time.
MAINTENANCE = Priority.MEDIUM

ACTIVE_STATUSES = ("queued", "running", "retrying")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
STATUSES = ACTIVE_STATUSES + FINISHED_STATUSES

# The origin of a task: the schedule, an operator (``mitoctl run``), a threshold
# crossed by a check, or another task.
ORIGINS = ("schedule", "operator", "threshold", "task")


@dataclass
class Task:
    id: str
    name: str
    kind: str
    priority: int
    status: str
    origin: str
    created_at: str
    scheduled_at: str | None
    started_at: str | None
    completed_at: str | None
    worker: str | None
    error_message: str | None
    retry_count: int
    max_retries: int
    timeout_s: float | None
    payload: dict
    result: dict | None

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def label(self) -> str:
        """The task as log lines name it, e.g. ``8f2c1a0b (site:homepage)``."""
        return f"{self.short_id} ({self.name})"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Task":
        return cls(
            id=row["id"], name=row["name"], kind=row["kind"], priority=row["priority"],
            status=row["status"], origin=row["origin"], created_at=row["created_at"],
            scheduled_at=row["scheduled_at"], started_at=row["started_at"],
            completed_at=row["completed_at"], worker=row["worker"],
            error_message=row["error_message"], retry_count=row["retry_count"],
            max_retries=row["max_retries"], timeout_s=row["timeout_s"],
            payload=json.loads(row["payload"]) if row["payload"] else {},
            result=json.loads(row["result"]) if row["result"] else None,
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "priority": self.priority,
            "status": self.status, "origin": self.origin, "created_at": self.created_at,
            "scheduled_at": self.scheduled_at, "started_at": self.started_at,
            "completed_at": self.completed_at, "worker": self.worker,
            "error_message": self.error_message, "retry_count": self.retry_count,
            "max_retries": self.max_retries, "timeout_s": self.timeout_s,
            "payload": self.payload, "result": self.result,
        }
