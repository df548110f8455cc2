"""The SQLite store: pragmas, schema versions, and files mitod must never touch."""

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from mitod.store import Database, StoreError
from mitod.store.schema import APPLICATION_ID, LATEST_VERSION


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_database_pragmas(tmp_path):
    db = Database(str(tmp_path / "m.db")).open()
    conn = db.read()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # 2 = INCREMENTAL
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # 1 = NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


def test_schema_version_recorded(tmp_path):
    db = Database(str(tmp_path / "m.db")).open()
    versions = [row[0] for row in db.read().execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    db.close()


def test_required_columns_exist(tmp_path):
    db = Database(str(tmp_path / "m.db")).open()
    conn = db.read()

    def columns(table):
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

    assert {"id", "name", "priority", "status", "created_at", "scheduled_at", "completed_at",
            "error_message", "retry_count", "kind", "payload", "started_at",
            "worker"} <= columns("autonomous_tasks")
    assert {"id", "timestamp", "event_type", "message", "details"} <= columns("operation_log")
    assert {"job", "started_at", "duration_ms", "ok", "status_code", "error",
            "details"} <= columns("check_results")
    db.close()


def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "m.db"
    db = Database(str(path)).open()
    with db.write() as conn:
        conn.execute("INSERT INTO daemon_state VALUES ('k', 'v', 'now')")
    db.close()
    again = Database(str(path)).open()
    assert again.read().execute("SELECT value FROM daemon_state").fetchone()[0] == "v"
    again.close()


def test_not_sqlite_file_left_untouched(tmp_path):
    path = tmp_path / "m.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = digest(path)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        Database(str(path)).open()
    assert digest(path) == before
    assert not (tmp_path / "m.db-wal").exists()


def test_other_programs_database_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match="another program"):
        Database(str(path)).open()
    assert digest(path) == before


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "m.db"
    Database(str(path)).open().close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'future')", (LATEST_VERSION + 5,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST_VERSION + 5}"):
        Database(str(path)).open()


def test_corrupt_database_refused(tmp_path):
    path = tmp_path / "m.db"
    db = Database(str(path)).open()
    with db.write() as conn:
        conn.executemany("INSERT INTO operation_log (timestamp, event_type, message) "
                         "VALUES ('t', 'x', ?)", [("y" * 500,) for _ in range(500)])
    db.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data), 4096):  # scribble over later pages, keep the header
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StoreError, match="corrupt"):
        Database(str(path)).open()
    assert digest(path) == before


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        Database(str(tmp_path / "state" / "mitod.db")).open()
    assert (tmp_path / "state").read_text() == "a file where a folder should be"


def test_writes_are_serialised_across_threads(tmp_path):
    db = Database(str(tmp_path / "m.db")).open()
    errors = []

    def writer(number):
        try:
            for index in range(50):
                with db.write() as conn:
                    conn.execute("INSERT INTO daemon_state VALUES (?, 'v', 'now')",
                                 (f"{number}-{index}",))
        except Exception as error:  # collected and asserted on below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.read().execute("SELECT COUNT(*) FROM daemon_state").fetchone()[0] == 400
    assert db.stats.count >= 400
    db.close()


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_write_waits_out_another_process(tmp_path):
    path = tmp_path / "m.db"
    db = Database(str(path), busy_timeout=0.5).open()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "2"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with db.write() as conn:
        conn.execute("INSERT INTO daemon_state VALUES ('after', 'lock', 'now')")
    waited = time.monotonic() - started
    holder.wait(10)
    assert waited > 0.5  # it met the lock, beyond one busy timeout, and still succeeded
    assert db.read().execute("SELECT value FROM daemon_state WHERE key = 'after'").fetchone()
    db.close()


def test_write_gives_up_after_limit(tmp_path):
    from mitod.store import StoreLockedError

    path = tmp_path / "m.db"
    db = Database(str(path), busy_timeout=0.2, lock_wait_limit=0.5).open()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "3"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(StoreLockedError, match="stayed locked"):
        with db.write() as conn:
            conn.execute("INSERT INTO daemon_state VALUES ('x', 'y', 'z')")
    holder.kill()
    holder.wait(10)
    db.close()
