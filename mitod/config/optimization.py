"""The ``[optimization]`` section: maintenance, cleanup folders and history retention."""

from dataclasses import dataclass

from mitod.config.durations import parse_duration
from mitod.config.table import Table, resolve_path


@dataclass(frozen=True)
class CleanupFolder:
    """A folder whose files older than ``older_than`` seconds maintenance may delete."""

    path: str
    older_than: float


@dataclass(frozen=True)
class OptimizationConfig:
    interval: float = 7200.0
    timeout: float = 600.0
    cleanup: tuple[CleanupFolder, ...] = (CleanupFolder("/var/cache/mitod", 7 * 86400.0),)
    keep_tasks: float = 30 * 86400.0
    keep_results: float = 30 * 86400.0
    keep_log: float = 90 * 86400.0
    prune_batch: int = 5000

    @classmethod
    def from_table(cls, table: Table) -> "OptimizationConfig":
        return cls(
            interval=table.duration("interval", "2h", minimum=1),
            timeout=table.duration("timeout", "10m", minimum=0.1),
            cleanup=_read_cleanup(table),
            keep_tasks=table.duration("keep_tasks", "30d", minimum=60),
            keep_results=table.duration("keep_results", "30d", minimum=60),
            keep_log=table.duration("keep_log", "90d", minimum=60),
            prune_batch=table.integer("prune_batch", cls.prune_batch, 1, 1_000_000),
        )


def _read_cleanup(table: Table) -> tuple[CleanupFolder, ...]:
    if not table.has("cleanup"):
        return OptimizationConfig.cleanup
    entries = table.raw("cleanup")
    what = 'a list of tables such as { path = "/var/cache/mitod", older_than = "7d" }'
    if not isinstance(entries, list):
        table.expected("cleanup", what, entries)
        return OptimizationConfig.cleanup
    base = table.origin("cleanup").parent
    folders = []
    for index, entry in enumerate(entries):
        folder = _read_cleanup_entry(table, f"cleanup[{index}]", entry, base)
        if folder is not None:
            folders.append(folder)
    return tuple(folders)


def _read_cleanup_entry(table: Table, key: str, entry, base) -> CleanupFolder | None:
    if not isinstance(entry, dict):
        table.expected(key, "a table with path and older_than", entry)
        return None
    unknown = sorted(set(entry) - {"path", "older_than"})
    for name in unknown:
        table.error(f"{key}.{name}", "unknown key; a cleanup entry has path and older_than")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        table.expected(f"{key}.path", "a folder path", path)
        return None
    resolved = resolve_path(path, base)
    if resolved == "/":
        table.error(f"{key}.path", 'refusing to clean "/"; name a cache or temporary folder')
        return None
    try:
        older_than = parse_duration(entry.get("older_than", "7d"))
    except ValueError:
        table.expected(f"{key}.older_than", 'a duration such as "7d"',
                       entry.get("older_than"))
        return None
    return CleanupFolder(resolved, older_than)

