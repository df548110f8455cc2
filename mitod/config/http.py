"""The ``[http]`` section: where the HTTP status endpoint listens."""

import ipaddress
from dataclasses import dataclass

from mitod.config.table import Table


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8787"
    enabled: bool = True

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @classmethod
    def from_table(cls, table: Table) -> "HttpConfig":
        listen = table.string("listen", cls.listen)
        try:
            split_listen(listen)
        except ValueError as error:
            table.expected("listen", f'HOST:PORT such as "127.0.0.1:8787" or "[::1]:8787" ({error})',
                           listen)
            listen = cls.listen
        return cls(listen=listen, enabled=table.boolean("enabled", cls.enabled))


def split_listen(listen: str) -> tuple[str, int]:
    """Split "HOST:PORT" or "[V6]:PORT" into host and port; raise ValueError if invalid."""
    if listen.startswith("["):
        host, bracket, rest = listen[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("an IPv6 address needs the form [ADDRESS]:PORT")
        port_text = rest[1:]
        ipaddress.IPv6Address(host)
    else:
        host, colon, port_text = listen.rpartition(":")
        if not colon or not host:
            raise ValueError("missing host or port")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not from 1 to 65535")
    return host, int(port_text)
