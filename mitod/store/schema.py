"""The database schema as a list of forward migrations.

Each migration runs once, in order, inside the write transaction that records
it in ``schema_version``. A database whose highest version is above the last
migration here was written by a newer mitod, and this one refuses to touch it.
"""

APPLICATION_ID = 0x6D69746F  # "mito": marks the file as a mitod database

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE autonomous_tasks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    priority      INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 4),
    status        TEXT NOT NULL CHECK (status IN
                      ('queued', 'running', 'retrying', 'completed', 'failed', 'cancelled')),
    origin        TEXT NOT NULL DEFAULT 'schedule',
    created_at    TEXT NOT NULL,
    scheduled_at  TEXT,
    started_at    TEXT,
    completed_at  TEXT,
    worker        TEXT,
    error_message TEXT,
    retry_count   INTEGER NOT NULL DEFAULT 0,
    max_retries   INTEGER NOT NULL DEFAULT 3,
    timeout_s     REAL,
    payload       TEXT,
    result        TEXT
);
CREATE INDEX tasks_due ON autonomous_tasks (priority, scheduled_at)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX tasks_aging ON autonomous_tasks (scheduled_at)
    WHERE status IN ('queued', 'retrying') AND priority >= 3;
CREATE INDEX tasks_by_status ON autonomous_tasks (status, created_at);
CREATE INDEX tasks_by_name ON autonomous_tasks (name, created_at);
CREATE INDEX tasks_by_created ON autonomous_tasks (created_at);

CREATE TABLE operation_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    message    TEXT NOT NULL,
    details    TEXT,
    task_id    TEXT
);
CREATE INDEX operation_log_by_time ON operation_log (timestamp);
CREATE INDEX operation_log_by_type ON operation_log (event_type, id);

CREATE TABLE check_results (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT,
    job         TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    status_code INTEGER,
    error       TEXT,
    details     TEXT
);
CREATE INDEX check_results_by_job ON check_results (job, started_at);
CREATE INDEX check_results_by_time ON check_results (started_at);

CREATE TABLE metric_samples (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sampled_at TEXT NOT NULL,
    source     TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      REAL NOT NULL
);
CREATE INDEX metric_samples_by_name ON metric_samples (name, sampled_at);
CREATE INDEX metric_samples_by_time ON metric_samples (sampled_at);

CREATE TABLE daemon_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""),
]

LATEST_VERSION = MIGRATIONS[-1][0]

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""
