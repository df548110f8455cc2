"""The operation log: the audit trail of every autonomous action.

Event types are dotted names, for example ``task.enqueued``, ``task.failed``,
``daemon.recovered``, ``thread.restarted``, ``config.reloaded``,
``operation.paused`` and ``site.down``.
"""

import json
import sqlite3

from mitod.clock import Clock


def add_event(conn: sqlite3.Connection, clock: Clock, event_type: str, message: str,
              details: dict | None = None, task_id: str | None = None) -> int:
    """Insert one row inside the caller's write transaction and return its id."""
    cursor = conn.execute(
        "INSERT INTO operation_log (timestamp, event_type, message, details, task_id) "
        "VALUES (?, ?, ?, ?, ?)",
        (clock.timestamp(), event_type, message,
         json.dumps(details, sort_keys=True, default=str) if details is not None else None,
         task_id))
    return cursor.lastrowid


def query_events(conn: sqlite3.Connection, event_type: str | None = None,
                 since: str | None = None, after_id: int | None = None,
                 limit: int = 100, task_id: str | None = None) -> list[dict]:
    """Return rows newest first; ``event_type`` ending in ``.*`` matches a prefix."""
    clauses, params = [], []
    if event_type:
        if event_type.endswith(".*"):
            clauses.append("event_type LIKE ? ESCAPE '\\'")
            params.append(_like_prefix(event_type[:-1]))
        else:
            clauses.append("event_type = ?")
            params.append(event_type)
    if since:
        clauses.append("timestamp >= ?")
        params.append(since)
    if after_id is not None:
        clauses.append("id > ?")
        params.append(after_id)
    if task_id:
        clauses.append("task_id = ?")
        params.append(task_id)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(
        f"SELECT id, timestamp, event_type, message, details, task_id FROM operation_log "
        f"{where} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return [event_row(row) for row in rows]


def event_row(row: sqlite3.Row) -> dict:
    details = row["details"]
    return {
        "id": row["id"],
        "timestamp": row["timestamp"],
        "event_type": row["event_type"],
        "message": row["message"],
        "details": json.loads(details) if details else None,
        "task_id": row["task_id"],
    }


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
