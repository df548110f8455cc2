"""The SQLite database: opening checks, per-thread connections and serialised writes.

SQLite allows one writer at a time. When several connections of one process
try to write at once, the losers sleep in SQLite's busy handler. It backs off
in steps of up to 100 ms, so a thread can wait for seconds, or fail with
"database is locked" even under a 5 s busy timeout. Every write in this
process therefore goes through one lock first (:meth:`Database.write`), and
only the holder of that lock ever meets another process's lock.

A write that meets another process's lock (a script holding a transaction
open) is retried until ``lock_wait_limit`` runs out, logging once per wait,
so a slow neighbour slows mitod down but does not make it drop work.

mitod never deletes, recreates or "repairs" a database file: a file that is
not a mitod database, or one written by a newer mitod, stops the start.
"""

import logging
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from mitod.clock import SYSTEM_CLOCK, Clock
from mitod.store.errors import StoreError, StoreLockedError
from mitod.store.schema import APPLICATION_ID, LATEST_VERSION, MIGRATIONS, VERSION_TABLE

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_CACHE_KIB = 4096  # per connection; SQLite grows each cache up to this as pages are read


class WriteStats:
    """Counts of serialised writes and the longest wait for the write lock, in seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.max_wait = 0.0
        self.total_wait = 0.0

    def record(self, waited: float) -> None:
        with self.lock:
            self.count += 1
            self.total_wait += waited
            if waited > self.max_wait:
                self.max_wait = waited


class Database:
    """A mitod SQLite database file; one connection per thread, one writer at a time."""

    def __init__(self, path: str, busy_timeout: float = 5.0, lock_wait_limit: float = 300.0,
                 clock: Clock = SYSTEM_CLOCK):
        self.path = path
        self.busy_timeout = busy_timeout
        self.lock_wait_limit = lock_wait_limit
        self.clock = clock
        self.stats = WriteStats()
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._cache_kib = DEFAULT_CACHE_KIB
        self._cache_generation = 0
        self._closed = False

    # -- opening ---------------------------------------------------------

    def open(self) -> "Database":
        """Check the file, create or migrate the schema, and return self."""
        self._check_folder()
        existed = self._check_existing_file()
        if existed:
            self._inspect_read_only()
        conn = self.connection()
        try:
            if not existed:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("Database %s runs in journal mode %s, not WAL; "
                            "its file system may not support WAL", self.path, mode)
            self._migrate(conn)
        except sqlite3.DatabaseError as error:
            self.close()
            raise StoreError(self._describe(error)) from error
        log.info("Opened database %s (schema version %d)", self.path, LATEST_VERSION)
        return self

    def _check_folder(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, mode=0o750, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"database {self.path}: a path component of {folder} is a file, "
                             "not a folder; set [daemon] database to a path in a folder") from None
        except PermissionError:
            raise StoreError(f"database {self.path}: cannot create folder {folder}: "
                             "permission denied; create it for the mitod user") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"database {self.path}: folder {folder} is not writable by uid "
                             f"{os.getuid()}; SQLite needs to create its -wal and -shm files "
                             "there, so make the folder writable for the mitod user")

    def _check_existing_file(self) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"database {self.path} is not a regular file; "
                             "set [daemon] database to a file path")
        if info.st_size == 0:
            return False
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except PermissionError:
            raise StoreError(f"database {self.path}: permission denied; make it readable and "
                             "writable for the mitod user") from None
        if header != SQLITE_HEADER:
            raise StoreError(f"database {self.path} is not a SQLite database; mitod leaves it "
                             "untouched: move it away or set [daemon] database to another path")
        return True

    def _inspect_read_only(self) -> None:
        """Check application id, schema version and integrity without writing a byte."""
        uri = "file:" + self._uri_path() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as error:
            raise StoreError(self._describe(error)) from error
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app_id not in (0, APPLICATION_ID) or (
                    tables and "schema_version" not in tables):
                raise StoreError(f"database {self.path} is a SQLite database of another program; "
                                 "mitod leaves it untouched: set [daemon] database to another path")
            if "schema_version" in tables:
                version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
                if version is not None and version > LATEST_VERSION:
                    raise StoreError(
                        f"database {self.path} has schema version {version}, written by a newer "
                        f"mitod; this one knows versions up to {LATEST_VERSION}. Upgrade mitod, "
                        "or point [daemon] database at another file")
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise StoreError(f"database {self.path} is corrupt ({check}); mitod leaves it "
                                 "untouched: restore a backup or move it away")
        except sqlite3.DatabaseError as error:
            raise StoreError(self._describe(error)) from error
        finally:
            conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self.write() as writer:
            writer.execute(VERSION_TABLE)
            current = writer.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > LATEST_VERSION:
                raise StoreError(f"database {self.path} has schema version {current}; this mitod "
                                 f"knows versions up to {LATEST_VERSION}. Upgrade mitod")
            for version, script in MIGRATIONS:
                if version <= current:
                    continue
                for statement in _split_statements(script):
                    writer.execute(statement)
                writer.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                               (version, self.clock.timestamp()))
                log.info("Migrated database %s to schema version %d", self.path, version)

    def _uri_path(self) -> str:
        from urllib.parse import quote
        return quote(os.path.abspath(self.path))

    def _describe(self, error: Exception) -> str:
        text = str(error)
        if "malformed" in text or "not a database" in text:
            return (f"database {self.path} is corrupt ({text}); mitod leaves it untouched: "
                    "restore a backup or move it away")
        if "readonly" in text or "read-only" in text:
            return (f"database {self.path} is read-only ({text}); make the file and its folder "
                    "writable for the mitod user")
        return f"database {self.path}: {text}"

    # -- connections -----------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        if self._closed:
            raise StoreError(f"database {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.cache_generation = self._cache_generation
        elif self._local.cache_generation != self._cache_generation:
            conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
            self._local.cache_generation = self._cache_generation
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
        except sqlite3.Error as error:
            raise StoreError(self._describe(error)) from error
        with self._registry_lock:
            self._close_connections_of_dead_threads()
            self._connections.append((threading.current_thread(), conn))
        return conn

    def _close_connections_of_dead_threads(self) -> None:
        alive = []
        for thread, conn in self._connections:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                conn.close()
        self._connections = alive

    def set_cache_size(self, kib: int) -> None:
        """Set every connection's page cache to ``kib`` KiB, applied at each one's next use."""
        self._cache_kib = kib
        self._cache_generation += 1

    def close(self) -> None:
        """Close every connection; later calls of :meth:`connection` raise StoreError."""
        with self._registry_lock:
            for _thread, conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error as error:
                    log.warning("Closing a connection to %s failed: %s", self.path, error)
            self._connections = []
            self._closed = True

    # -- transactions ----------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one ``BEGIN IMMEDIATE`` transaction, serialised in this process."""
        conn = self.connection()
        started = time.monotonic()
        with self._write_lock:
            self._begin_immediate(conn, started)
            self.stats.record(time.monotonic() - started)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself after some errors (a full disk, for one).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _begin_immediate(self, conn: sqlite3.Connection, started: float) -> None:
        warned = False
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.ProgrammingError as error:
                raise StoreError(f"database {self.path} is closed") from error
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                waited = time.monotonic() - started
                if waited >= self.lock_wait_limit:
                    raise StoreLockedError(
                        f"database {self.path} stayed locked by another process for "
                        f"{waited:.0f} s; find the process holding a transaction open "
                        "(fuser or lsof on the file) and end it") from error
                if not warned:
                    log.warning("Database %s is locked by another process; waiting for it "
                                "(%.1f s so far)", self.path, waited)
                    warned = True
                continue
            if warned:
                log.warning("Database %s is writable again after %.1f s", self.path,
                            time.monotonic() - started)
            return

    def read(self) -> sqlite3.Connection:
        """Return this thread's connection for reads; in WAL mode a writer does not block them."""
        return self.connection()


def _split_statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]
