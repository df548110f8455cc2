"""The ``[log]`` section: level and the optional rotated log file."""

from dataclasses import dataclass

from mitod.config.table import Table

LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    file: str = "/var/log/mitod/mitod.log"
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5

    @classmethod
    def from_table(cls, table: Table) -> "LogConfig":
        return cls(
            level=table.string("level", cls.level, choices=LEVELS),
            file=table.path_value("file", cls.file, allow_empty=True),
            max_bytes=table.integer("max_bytes", cls.max_bytes, 0),
            backups=table.integer("backups", cls.backups, 0, 1000),
        )
