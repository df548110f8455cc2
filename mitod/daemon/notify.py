"""A minimal sd_notify client for ``Type=notify`` units, on the standard library.

``NOTIFY_SOCKET`` names a datagram socket: a path, or an abstract name
written with a leading ``@`` that stands for a NUL byte. Without it every
call is a no-op, so the same code runs under systemd and elsewhere.
"""

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_interval = _watchdog_interval(environ)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; return False if not sent."""
        if not self.address:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                # Non-blocking, so a notify socket that no process reads cannot stall the daemon.
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._socket.sendto(message, self.address)
            return True
        except BlockingIOError:
            log.warning("systemd's notify socket %r is full; dropped %r", self.address,
                        message.split(b"\n", 1)[0].decode())
            return False
        except OSError as error:
            log.warning("Could not notify systemd through %r: %s", self.address, error)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ) -> float | None:
    """Return how often to ping the watchdog (half of WATCHDOG_USEC), or None if disabled."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner.isdigit() and int(owner) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2
