"""Check results (one row per site or system check) and metric samples."""

import json
import sqlite3

from mitod.clock import Clock


def add_check_result(conn: sqlite3.Connection, job: str, started_at: str, duration_ms: float,
                     ok: bool, status_code: int | None = None, error: str | None = None,
                     details: dict | None = None, task_id: str | None = None) -> int:
    """Insert one check result inside the caller's write transaction."""
    cursor = conn.execute(
        "INSERT INTO check_results (task_id, job, started_at, duration_ms, ok, status_code, "
        "error, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, job, started_at, round(duration_ms, 3), 1 if ok else 0, status_code, error,
         json.dumps(details, sort_keys=True, default=str) if details is not None else None))
    return cursor.lastrowid


def add_samples(conn: sqlite3.Connection, clock: Clock, source: str,
                values: dict[str, float]) -> None:
    """Insert one metric sample per name, all stamped with the same time."""
    stamp = clock.timestamp()
    conn.executemany(
        "INSERT INTO metric_samples (sampled_at, source, name, value) VALUES (?, ?, ?, ?)",
        [(stamp, source, name, float(value)) for name, value in values.items()
         if value is not None])


def latest_result(conn: sqlite3.Connection, job: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT * FROM check_results WHERE job = ? ORDER BY started_at DESC, id DESC LIMIT 1",
        (job,)).fetchone()


def streak_start(conn: sqlite3.Connection, job: str, ok: bool) -> str | None:
    """Return when the current run of results with this ``ok`` value began."""
    row = conn.execute(
        "SELECT MAX(started_at) FROM check_results WHERE job = ? AND ok = ?",
        (job, 0 if ok else 1)).fetchone()
    after = row[0]
    if after is None:
        row = conn.execute("SELECT MIN(started_at) FROM check_results WHERE job = ?",
                           (job,)).fetchone()
        return row[0]
    row = conn.execute(
        "SELECT MIN(started_at) FROM check_results WHERE job = ? AND started_at > ?",
        (job, after)).fetchone()
    return row[0]
