"""The ``[daemon]`` section: the process, its files, the queue and the workers."""

from dataclasses import dataclass

from mitod.config.table import Table


@dataclass(frozen=True)
class DaemonConfig:
    database: str = "/var/lib/mitod/mitod.db"
    pidfile: str = "/run/mitod/mitod.pid"
    socket: str = "/run/mitod/mitod.sock"
    workers: int = 4
    max_retries: int = 3
    retry_backoff: float = 2.0
    retry_backoff_max: float = 300.0
    shutdown_timeout: float = 20.0
    start_timeout: float = 30.0
    monitor_interval: float = 300.0
    queue_high_water: int = 100
    priority_aging: float = 600.0

    @classmethod
    def from_table(cls, table: Table) -> "DaemonConfig":
        return cls(
            database=table.path_value("database", cls.database),
            pidfile=table.path_value("pidfile", cls.pidfile),
            socket=table.path_value("socket", cls.socket),
            workers=table.integer("workers", cls.workers, 1, 64),
            max_retries=table.integer("max_retries", cls.max_retries, 0, 100),
            retry_backoff=table.duration("retry_backoff", "2s", minimum=0.001),
            retry_backoff_max=table.duration("retry_backoff_max", "5m", minimum=0.001),
            shutdown_timeout=table.duration("shutdown_timeout", "20s"),
            start_timeout=table.duration("start_timeout", "30s", minimum=1),
            monitor_interval=table.duration("monitor_interval", "5m", minimum=1),
            queue_high_water=table.integer("queue_high_water", cls.queue_high_water, 1),
            priority_aging=table.duration("priority_aging", "10m", minimum=1),
        )
