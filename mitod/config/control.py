"""The ``[control]`` section: who may reach and steer the control socket."""

from dataclasses import dataclass

from mitod.config.table import Table


@dataclass(frozen=True)
class ControlConfig:
    socket_mode: int = 0o660
    group: str = "mitod"
    max_connections: int = 64
    idle_timeout: float = 10.0

    @classmethod
    def from_table(cls, table: Table) -> "ControlConfig":
        return cls(
            socket_mode=_read_mode(table),
            group=table.string("group", cls.group),
            max_connections=table.integer("max_connections", cls.max_connections, 1, 4096),
            idle_timeout=table.duration("idle_timeout", "10s", minimum=0.1),
        )


def _read_mode(table: Table) -> int:
    what = 'an octal file mode as a string, such as "0660"'
    text = table.raw("socket_mode", "0660")
    if not isinstance(text, str):
        table.expected("socket_mode", what, text)
        return ControlConfig.socket_mode
    try:
        mode = int(text, 8)
    except ValueError:
        table.expected("socket_mode", what, text)
        return ControlConfig.socket_mode
    if not 0 <= mode <= 0o777:
        table.expected("socket_mode", what, text)
        return ControlConfig.socket_mode
    return mode
