"""Small named values the daemon keeps across restarts, such as the paused flag."""

import sqlite3

from mitod.clock import Clock


def read_state(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM daemon_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def write_state(conn: sqlite3.Connection, clock: Clock, key: str, value: str) -> None:
    """Set ``key`` inside the caller's write transaction."""
    conn.execute(
        "INSERT INTO daemon_state (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, clock.timestamp()))
