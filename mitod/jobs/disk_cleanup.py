"""The ``disk_cleanup`` job: free disk space that mitod itself may free.

``system_health`` enqueues it when free disk on a ``[system] disk_paths``
entry falls below ``disk_free_percent``, and an operator may run it by name.
It frees space from three sources and records the bytes freed by each:

1. Files older than each configured cleanup folder's ``older_than`` (see
   :mod:`mitod.jobs.file_cleanup` for what is never touched).
2. mitod's own rotated log files next to ``[log] file``: ``<file>.1``,
   ``<file>.2`` and so on, also compressed ones such as ``<file>.2.gz``. The
   newest backup (the lowest number) is kept, because an operator reads it
   to see what happened. When free disk on the log's own file system is
   below ``disk_free_percent``, every backup goes. The live log file always
   stays.
3. Free pages of the database, returned with ``PRAGMA incremental_vacuum``.

It writes a ``maintenance.disk_cleanup`` row to ``operation_log``.
"""

import logging
import os
import re

from mitod.engine.tasks import Task
from mitod.jobs.file_cleanup import remove_named_files
from mitod.jobs.optimization import clean_folders, vacuum_database
from mitod.jobs.system_health import disk_free

log = logging.getLogger(__name__)

# The suffix after "<log file>." of a backup: a rotation number, optionally compressed.
_BACKUP_SUFFIX = re.compile(r"(\d+)(?:\.(?:gz|bz2|xz|zst))?")


def run(engine, task: Task) -> tuple[dict, str]:
    config = engine.config
    folders = clean_folders(config.optimization.cleanup, task.label)
    logs = remove_rotated_logs(config.log.file, config.system.disk_free_percent, task.label)
    vacuum = vacuum_database(engine.db, task.label)

    folder_bytes = sum(outcome.bytes_freed for outcome in folders)
    total = folder_bytes + logs["bytes_freed"] + vacuum["bytes_freed"]
    result = {
        "reason": task.payload.get("reason"),
        "trigger": task.payload,
        "folders": [outcome.to_dict() for outcome in folders],
        "logs": logs,
        "vacuum": vacuum,
        "bytes_freed": {"folders": folder_bytes, "logs": logs["bytes_freed"],
                        "database": vacuum["bytes_freed"], "total": total},
        "disk_free_percent": _free_after(config.system.disk_paths),
    }
    summary = _summary(result)
    engine.record_event("maintenance.disk_cleanup", f"Disk cleanup finished: {summary}", result,
                        task.id)
    log.info("Disk cleanup by task %s finished: %s", task.label, summary)
    _warn_if_still_low(task, result["disk_free_percent"], config.system.disk_free_percent)
    return result, summary


def remove_rotated_logs(log_file: str, low_free_percent: float, task_label: str) -> dict:
    """Remove mitod's rotated log backups; keep the newest unless its disk is low."""
    result = {"folder": None, "policy": "none", "removed": [], "kept": [], "bytes_freed": 0,
              "errors": 0}
    if not log_file:
        return result
    folder, base = os.path.split(log_file)
    result["folder"] = folder
    backups = find_rotated_logs(folder, base, task_label)
    if not backups:
        return result

    if _disk_low(folder, low_free_percent, task_label):
        to_remove, to_keep = backups, []
        result["policy"] = "all backups (free disk is low)"
    else:
        to_remove, to_keep = backups[1:], backups[:1]
        result["policy"] = "all but the newest backup"
    outcome = remove_named_files(folder, to_remove, task_label)
    result.update(removed=outcome.removed, kept=to_keep, bytes_freed=outcome.bytes_freed,
                  errors=outcome.errors)
    return result


def find_rotated_logs(folder: str, base: str, task_label: str = "") -> list[str]:
    """Return the backups of log file ``base`` in ``folder``, newest (lowest number) first."""
    try:
        names = os.listdir(folder)
    except OSError as error:
        log.warning("Cannot list log folder %s to find rotated logs (task %s): %s", folder,
                    task_label, error)
        return []
    prefix = base + "."
    numbered = []
    for name in names:
        if not name.startswith(prefix):
            continue
        match = _BACKUP_SUFFIX.fullmatch(name[len(prefix):])
        if match:
            numbered.append((int(match.group(1)), name))
    return [name for _number, name in sorted(numbered)]


def _disk_low(folder: str, low_free_percent: float, task_label: str) -> bool:
    try:
        return disk_free(folder)["free_percent"] < low_free_percent
    except OSError as error:
        log.warning("Cannot measure free disk for log folder %s (task %s): %s; keeping the "
                    "newest rotated log", folder, task_label, error)
        return False


def _free_after(paths) -> dict[str, float | None]:
    free = {}
    for path in paths:
        try:
            free[path] = disk_free(path)["free_percent"]
        except OSError:
            free[path] = None  # system_health reports why
    return free


def _warn_if_still_low(task: Task, free: dict, threshold: float) -> None:
    for path, percent in free.items():
        if percent is not None and percent < threshold:
            log.warning("Free disk on %s is still %.1f %% (threshold %g %%) after disk cleanup "
                        "by task %s; mitod has freed what it may, the rest needs an operator",
                        path, percent, threshold, task.label)


def _summary(result: dict) -> str:
    freed = result["bytes_freed"]
    files = sum(folder["files_removed"] for folder in result["folders"])
    return (f"freed {freed['total']} bytes: {freed['folders']} from {files} old files, "
            f"{freed['logs']} from {len(result['logs']['removed'])} rotated logs, "
            f"{freed['database']} from the database")
