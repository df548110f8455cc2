"""The ``[report]`` section: the periodic progress report."""

from dataclasses import dataclass

from mitod.config.table import Table


@dataclass(frozen=True)
class ReportConfig:
    interval: float = 900.0
    timeout: float = 60.0

    @classmethod
    def from_table(cls, table: Table) -> "ReportConfig":
        return cls(
            interval=table.duration("interval", "15m", minimum=1),
            timeout=table.duration("timeout", "1m", minimum=0.1),
        )
