"""The ``[system]`` section: the host health check and its thresholds."""

from dataclasses import dataclass

from mitod.config.table import Table


@dataclass(frozen=True)
class SystemConfig:
    interval: float = 1800.0
    timeout: float = 60.0
    cpu_percent: float = 80.0
    memory_percent: float = 80.0
    disk_free_percent: float = 20.0
    disk_paths: tuple[str, ...] = ("/",)

    @classmethod
    def from_table(cls, table: Table) -> "SystemConfig":
        paths = table.path_list("disk_paths", list(cls.disk_paths))
        if table.has("disk_paths") and not paths:
            table.expected("disk_paths", "a list of at least one folder", paths)
            paths = list(cls.disk_paths)
        return cls(
            interval=table.duration("interval", "30m", minimum=1),
            timeout=table.duration("timeout", "1m", minimum=0.1),
            cpu_percent=table.number("cpu_percent", cls.cpu_percent, 1, 100),
            memory_percent=table.number("memory_percent", cls.memory_percent, 1, 100),
            disk_free_percent=table.number("disk_free_percent", cls.disk_free_percent, 0, 100),
            disk_paths=tuple(paths),
        )
