"""A small client for mitod's control socket, used by ``mitoctl``, tests and scripts.

    with Client("/run/mitod/mitod.sock") as client:
        state = client.call("status")["state"]
        task = client.call("run", job="system_health", wait=True)["task"]
        for message in client.stream("logs", follow=True):
            ...

One connection is opened on first use and reused for later calls. Errors:
:class:`NotRunningError` when no daemon listens on the path,
:class:`ControlError` when the daemon returns an error response (``code``
is one of the protocol's error codes), and :class:`ClientError` for local
failures such as a timeout. This module imports only the standard library,
so ``mitoctl status`` starts fast.
"""

import select
import socket
import time
from typing import Iterator

from mitod.control import protocol

DEFAULT_TIMEOUT = 10.0
# Added to a command's own ``timeout`` argument when it waits, so the daemon's
# "timed out" response arrives before the client gives up on the connection.
WAIT_MARGIN = 5.0
DEFAULT_WAIT = 60.0


class ClientError(Exception):
    """The request could not be completed; ``code`` names the reason."""

    def __init__(self, message: str, code: str = "client_error"):
        super().__init__(message)
        self.message = message
        self.code = code


class NotRunningError(ClientError):
    """No daemon accepts connections on ``path``; ``reason`` is ``missing`` or ``refused``."""

    def __init__(self, path: str, reason: str):
        if reason == "missing":
            message = f"mitod is not running (no socket at {path})"
        else:
            message = (f"mitod is not running (connection refused at {path}: the socket file "
                       "exists but no process accepts connections on it)")
        super().__init__(message, "not_running")
        self.path = path
        self.reason = reason


class ControlError(ClientError):
    """The daemon returned an error response, or the socket refused access."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message, code)
        self.details = details or {}


class Client:
    """A connection to the control socket at ``path``.

    ``timeout`` (seconds) bounds the connect and the wait for each response.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: protocol.LineReader | None = None
        self._next_id = 1

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- connection ------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (calls open it on demand)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise NotRunningError(self.path, "missing") from None
        except ConnectionRefusedError:
            sock.close()
            raise NotRunningError(self.path, "refused") from None
        except PermissionError:
            sock.close()
            raise ControlError(
                protocol.PERMISSION_DENIED,
                f"permission denied opening the control socket {self.path}; join the group "
                "that owns it ([control] group in the daemon's configuration) or run as "
                "root") from None
        except socket.timeout:
            sock.close()
            raise ClientError(f"mitod did not accept a connection on {self.path} within "
                              f"{self.timeout:g} s", "timeout") from None
        except OSError as error:
            sock.close()
            raise ClientError(f"cannot connect to {self.path}: {error.strerror or error}",
                              "connection_failed") from None
        self._sock = sock
        self._reader = protocol.LineReader(sock, protocol.MAX_RESPONSE_BYTES)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._reader = None

    def _ensure_connected(self) -> None:
        if self._sock is not None and self._closed_by_server():
            self.close()
        if self._sock is None:
            self.connect()

    def _closed_by_server(self) -> bool:
        """Return True if the server closed this idle connection ([control] idle_timeout)."""
        # NOTE: a request sent in the instant before the server's idle timeout
        # closes the connection is lost; the call then raises ClientError.
        poller = select.poll()
        poller.register(self._sock, select.POLLIN | select.POLLRDHUP)
        return bool(poller.poll(0))

    # -- requests --------------------------------------------------------

    def call(self, command: str, **args):
        """Send ``command`` with ``args`` and return its result.

        When ``wait`` is true, the reply may take the command's own ``timeout``
        argument (60 s by default) plus a margin, instead of the client's timeout.
        """
        timeout = self.timeout
        if args.get("wait"):
            timeout = float(args.get("timeout") or DEFAULT_WAIT) + WAIT_MARGIN
        return self.request(command, args, timeout)

    def request(self, command: str, args: dict | None = None, timeout: float | None = None):
        """Send one request and return its result; ``timeout`` (s) bounds the wait for the reply."""
        request_id = self._send(command, args)
        response = self._read_response(request_id, self.timeout if timeout is None else timeout)
        return self._result(response)

    def stream(self, command: str, **args) -> Iterator[dict]:
        """Send a streaming request (``logs`` with ``follow=True``) and yield each result.

        The first result arrives within the client's timeout; later ones may
        take any time. The iterator ends when the daemon ends the stream, and
        closing the client ends it from this side.
        """
        request_id = self._send(command, args)
        timeout: float | None = self.timeout
        try:
            while True:
                response = self._read_response(request_id, timeout)
                timeout = None
                yield self._result(response)
                if not response.get("stream"):
                    return
        finally:
            self.close()

    def _send(self, command: str, args: dict | None) -> int:
        self._ensure_connected()
        request_id = self._next_id
        self._next_id += 1
        data = protocol.encode(protocol.request_message(request_id, command, args))
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError as error:
            refusal = self._read_refusal()
            self.close()
            if refusal is not None:
                raise refusal from None
            raise ClientError(f"sending {command} to {self.path} failed: "
                              f"{error.strerror or error}", "connection_lost") from None
        return request_id

    def _read_refusal(self) -> "ControlError | None":
        """Return the error a server sent before closing on us (busy), if one arrived."""
        try:
            line = self._reader.read_line(time.monotonic() + 0.5)
            response = protocol.decode_response(line) if line else None
        except (OSError, protocol.ProtocolError):
            return None
        if response is None or response["ok"]:
            return None
        try:
            self._result(response)
        except ControlError as error:
            return error
        return None

    def _read_response(self, request_id: int, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is None:
            self._sock.settimeout(None)
        try:
            line = self._reader.read_line(deadline)
        except socket.timeout:
            self.close()
            raise ClientError(f"no response from mitod on {self.path} within {timeout:g} s",
                              "timeout") from None
        except protocol.ProtocolError as error:
            self.close()
            raise ClientError(error.message, "invalid_response") from None
        except OSError as error:
            self.close()
            raise ClientError(f"reading from {self.path} failed: {error.strerror or error}",
                              "connection_lost") from None
        if line is None:
            self.close()
            raise ClientError(f"mitod closed the connection on {self.path} without a response",
                              "connection_lost")
        try:
            response = protocol.decode_response(line)
        except protocol.ProtocolError as error:
            self.close()
            raise ClientError(error.message, "invalid_response") from None
        # A response without an id rejects the connection itself (busy, or a request
        # line too long). The server closes the connection after sending it.
        if response.get("id") is None and not response["ok"]:
            self.close()
            return response
        if response.get("id") != request_id:
            self.close()
            raise ClientError(f"response id {response.get('id')!r} does not match request "
                              f"{request_id}", "invalid_response")
        return response

    @staticmethod
    def _result(response: dict):
        if response["ok"]:
            return response.get("result")
        error = response.get("error") or {}
        raise ControlError(error.get("code", protocol.INTERNAL),
                           error.get("message", "the daemon returned an error without a message"),
                           error.get("details"))
