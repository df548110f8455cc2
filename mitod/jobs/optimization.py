"""The ``optimization`` job: routine maintenance of mitod's memory, database and cache folders.

One run, in this order:

1. ``gc.collect()``, recording how many unreachable objects it found.
2. Retention pruning: finished tasks older than ``keep_tasks`` (by
   ``completed_at``, or ``created_at`` when that is empty), check results and
   metric samples older than ``keep_results``, and operation-log rows older
   than ``keep_log``. Each batch of at most ``prune_batch`` rows is its own
   write transaction, and the write lock is released for a short pause
   between batches, so other writers get their turn in between.
3. ``PRAGMA optimize``, so the query planner's statistics follow the pruned
   tables.
4. ``PRAGMA incremental_vacuum``, which returns the pages freed by pruning to
   the file system (see :func:`vacuum_database`).
5. Removal of old files in the configured cleanup folders.

A database error fails the task, so the executor retries it; folder errors
are counted in the result and do not.
"""

import gc
import logging
import time
from datetime import timedelta

from mitod.clock import format_timestamp
from mitod.engine.tasks import FINISHED_STATUSES, Task
from mitod.jobs.file_cleanup import CleanupOutcome, remove_old_files
from mitod.store.database import Database

log = logging.getLogger(__name__)

# Pages returned per write transaction by incremental_vacuum (8 MiB at the
# default 4 KiB page size), so other writers wait for one batch at most.
# NOTE: the size is an estimate, not measured on slow disks.
VACUUM_PAGES_PER_BATCH = 2000

# Pause between two prune batches. Python's locks are not fair, so without a
# pause this thread would usually take the write lock straight back.
PRUNE_PAUSE = 0.01

AUTO_VACUUM_INCREMENTAL = 2
FINISHED_TASK = "status IN (" + ", ".join(f"'{status}'" for status in FINISHED_STATUSES) + ")"


def run(engine, task: Task) -> tuple[dict, str]:
    settings = engine.config.optimization
    started = time.monotonic()

    gc_collected = gc.collect()
    pruned, batches, cutoffs = prune_history(engine, task)
    with engine.db.write() as conn:
        conn.execute("PRAGMA optimize").fetchall()
    vacuum = vacuum_database(engine.db, task.label)
    folders = clean_folders(settings.cleanup, task.label)

    folder_bytes = sum(outcome.bytes_freed for outcome in folders)
    result = {
        "gc_collected": gc_collected,
        "pruned": pruned,
        "prune_batches": batches,
        "cutoffs": cutoffs,
        "vacuum": vacuum,
        "folders": [outcome.to_dict() for outcome in folders],
        "bytes_freed": {"folders": folder_bytes, "database": vacuum["bytes_freed"],
                        "total": folder_bytes + vacuum["bytes_freed"]},
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    summary = _summary(result)
    engine.record_event("maintenance.optimization", f"Optimization finished: {summary}", result,
                        task.id)
    log.info("Optimization by task %s finished: %s", task.label, summary)
    return result, summary


def prune_history(engine, task: Task) -> tuple[dict[str, int], int, dict[str, str]]:
    """Delete rows past their retention in batches; return rows per table, batches and cutoffs."""
    settings = engine.config.optimization
    now = engine.clock.now()

    def cutoff(seconds: float) -> str:
        return format_timestamp(now - timedelta(seconds=seconds))

    # (table, condition on :cutoff) pairs. Finished tasks are matched on
    # created_at as well, because completed_at is never before created_at and
    # that lets the (status, created_at) index narrow the search.
    rules = [
        ("autonomous_tasks", cutoff(settings.keep_tasks),
         f"{FINISHED_TASK} AND created_at < :cutoff "
         "AND COALESCE(completed_at, created_at) < :cutoff"),
        ("check_results", cutoff(settings.keep_results), "started_at < :cutoff"),
        ("metric_samples", cutoff(settings.keep_results), "sampled_at < :cutoff"),
        ("operation_log", cutoff(settings.keep_log), "timestamp < :cutoff"),
    ]
    pruned: dict[str, int] = {}
    batches = 0
    for table, when, condition in rules:
        count, table_batches = _prune_table(engine.db, table, condition, when,
                                            settings.prune_batch)
        pruned[table] = count
        batches += table_batches
        if count:
            log.info("Pruned %d rows older than %s from %s in %d batches (task %s)", count, when,
                     table, table_batches, task.label)
    return pruned, batches, {table: when for table, when, _ in rules}


def _prune_table(db: Database, table: str, condition: str, cutoff: str,
                 batch: int) -> tuple[int, int]:
    sql = (f"DELETE FROM {table} WHERE rowid IN "
           f"(SELECT rowid FROM {table} WHERE {condition} LIMIT :batch)")
    total = 0
    batches = 0
    while True:
        with db.write() as conn:
            deleted = conn.execute(sql, {"cutoff": cutoff, "batch": batch}).rowcount
        batches += 1
        total += deleted
        if deleted < batch:
            return total, batches
        time.sleep(PRUNE_PAUSE)


def vacuum_database(db: Database, task_label: str) -> dict:
    """Return free pages to the file system with ``PRAGMA incremental_vacuum``.

    The pragma frees one page per step of its statement, so each call is run
    to completion with ``fetchall()``. In WAL mode the database file shrinks
    only when a checkpoint copies the change back, so a passive checkpoint
    follows. A passive checkpoint does not wait for readers, so one that is
    busy can delay the shrinking to a later checkpoint.
    """
    conn = db.read()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    result = {"pages_freed": 0, "bytes_freed": 0, "free_pages_before": before,
              "free_pages_after": before, "page_size": page_size, "skipped": None}
    if mode != AUTO_VACUUM_INCREMENTAL:
        result["skipped"] = "auto_vacuum is not INCREMENTAL"
        log.info("Skipped incremental_vacuum (task %s): the database was created without "
                 "auto_vacuum = INCREMENTAL, so only a full VACUUM could shrink it", task_label)
        return result

    remaining = before
    while remaining:
        with db.write() as writer:
            writer.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_BATCH})").fetchall()
            after = writer.execute("PRAGMA freelist_count").fetchone()[0]
        if after >= remaining:
            break  # no progress: stop instead of looping
        remaining = after
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    result["free_pages_after"] = remaining
    result["pages_freed"] = max(0, before - remaining)
    result["bytes_freed"] = result["pages_freed"] * page_size
    if result["pages_freed"]:
        log.info("incremental_vacuum returned %d pages (%d bytes) to the file system (task %s)",
                 result["pages_freed"], result["bytes_freed"], task_label)
    return result


def clean_folders(folders, task_label: str) -> list[CleanupOutcome]:
    """Remove old files from each configured cleanup folder."""
    return [remove_old_files(folder.path, folder.older_than, task_label=task_label)
            for folder in folders]


def _summary(result: dict) -> str:
    rows = sum(result["pruned"].values())
    files = sum(folder["files_removed"] for folder in result["folders"])
    return (f"pruned {rows} rows, freed {result['bytes_freed']['total']} bytes "
            f"({result['vacuum']['pages_freed']} database pages, {files} files), "
            f"gc collected {result['gc_collected']} objects")
