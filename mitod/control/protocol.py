"""The control socket's wire format: newline-delimited JSON, one message per line.

A client writes requests and reads responses on one Unix stream connection::

    -> {"v": 1, "id": 7, "command": "tasks", "args": {"status": "failed", "limit": 5}}
    <- {"v": 1, "id": 7, "ok": true, "result": {"tasks": [...]}}
    -> {"v": 1, "id": 8, "command": "run", "args": {"job": "nope"}}
    <- {"v": 1, "id": 8, "ok": false, "error": {"code": "not_found", "message": "..."}}

Each message is one UTF-8 JSON object followed by ``\\n``; JSON escapes every
newline inside strings, so a line is always exactly one message. The server
sends responses in the order the requests arrive. A streaming command (``logs`` with
``follow``) sends several responses with the request's id: every one but the
last carries ``"stream": true``, and the last, if the server ends the stream,
carries ``"stream": false``. docs/protocol.md describes every command.

This module has no socket or daemon code beyond :class:`LineReader`, so the
client and the server share it without importing each other.
"""

import json
import socket
import time

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# A request line longer than this (without its newline) is rejected and the
# connection closed. Responses have a far larger limit, because a task list
# with results can be big.
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# Error codes (the "code" of an error response).
BAD_REQUEST = "bad_request"
UNKNOWN_COMMAND = "unknown_command"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
BUSY = "busy"
INTERNAL = "internal"
ERROR_CODES = (BAD_REQUEST, UNKNOWN_COMMAND, PERMISSION_DENIED, NOT_FOUND, BUSY, INTERNAL)

_RECV_CHUNK = 65536


class ProtocolError(Exception):
    """A request or response that breaks the wire format, with the code to report."""

    def __init__(self, code: str, message: str, details: dict | None = None,
                 request_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id


class LineTooLong(ProtocolError):
    """A line grew past the reader's limit before its newline arrived."""


class Request:
    """One decoded, validated request."""

    __slots__ = ("id", "command", "args")

    def __init__(self, request_id, command: str, args: dict):
        self.id = request_id
        self.command = command
        self.args = args

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, command={self.command!r})"


def encode(message: dict) -> bytes:
    """Serialise one message as a compact JSON line (ASCII-only, so any byte limit is exact)."""
    return (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode("ascii")


def request_message(request_id, command: str, args: dict | None = None) -> dict:
    return {"v": PROTOCOL_VERSION, "id": request_id, "command": command, "args": args or {}}


def ok_response(request_id, result, stream: bool | None = None) -> dict:
    message = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}
    if stream is not None:
        message["stream"] = stream
    return message


def error_response(request_id, code: str, message: str, details: dict | None = None,
                   stream: bool | None = None) -> dict:
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    response = {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error}
    if stream is not None:
        response["stream"] = stream
    return response


def decode_request(line: bytes) -> Request:
    """Parse and validate one request line; raise ProtocolError(bad_request) on any fault."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(BAD_REQUEST, f"request is not valid UTF-8 (byte {error.start}); "
                            "send one JSON object per line") from None
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(BAD_REQUEST, f"request is not valid JSON: {error.msg} at "
                            f"column {error.colno}; send one JSON object per line") from None
    except ValueError as error:  # an integer of more than 4,300 digits (sys.int_info)
        raise ProtocolError(BAD_REQUEST, f"request is not valid JSON: {error}") from None
    except RecursionError:
        raise ProtocolError(BAD_REQUEST, "request is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, f"request must be a JSON object, got "
                            f"{_json_type(message)}")

    request_id = message.get("id")
    if not _valid_id(request_id):
        raise ProtocolError(BAD_REQUEST, "id must be a string, an integer or null, got "
                            f"{_json_type(request_id)}")
    _check_version(message, request_id)

    command = message.get("command")
    if not isinstance(command, str) or not command:
        raise ProtocolError(BAD_REQUEST, "command must be a non-empty string, got "
                            f"{_json_type(command)}", request_id=request_id)
    args = message.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, f"args must be a JSON object, got {_json_type(args)}",
                            request_id=request_id)
    unknown = sorted(set(message) - {"v", "id", "command", "args"})
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"unknown request keys: {', '.join(unknown)}; a "
                            "request has v, id, command and args", request_id=request_id)
    return Request(request_id, command, args)


def _check_version(message: dict, request_id) -> None:
    supported = list(SUPPORTED_VERSIONS)
    if "v" not in message:
        raise ProtocolError(BAD_REQUEST, f"missing protocol version \"v\"; this server speaks "
                            f"versions {supported}", {"supported_versions": supported},
                            request_id)
    version = message["v"]
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise ProtocolError(BAD_REQUEST, f"unsupported protocol version {version!r}; this "
                            f"server speaks versions {supported}",
                            {"supported_versions": supported}, request_id)


def decode_response(line: bytes) -> dict:
    """Parse one response line; raise ProtocolError(internal) if it is not a response."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ProtocolError(INTERNAL, f"invalid response from the server: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("ok"), bool):
        raise ProtocolError(INTERNAL, "invalid response from the server: not a response object")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(INTERNAL, f"the server responded with protocol version "
                            f"{message.get('v')!r}; this client speaks {PROTOCOL_VERSION}")
    return message


def _valid_id(value) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class LineReader:
    """Read newline-terminated lines from a socket, at most ``max_bytes`` each.

    :meth:`read_line` returns the line without its newline, or None at end of
    file. It raises :class:`LineTooLong` when ``max_bytes`` arrive without a
    newline, and ``TimeoutError`` (``socket.timeout``) when ``deadline`` (a
    ``time.monotonic()`` value) passes first, so a client that sends one byte
    at a time cannot keep a read open past the deadline.
    """

    def __init__(self, sock: socket.socket, max_bytes: int):
        self.sock = sock
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._scanned = 0

    @property
    def pending(self) -> int:
        """Count the bytes received but not yet returned as a line."""
        return len(self._buffer)

    def read_line(self, deadline: float | None = None) -> bytes | None:
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                self._scanned = 0
                if len(line) > self.max_bytes:
                    raise LineTooLong(BAD_REQUEST, _too_long(self.max_bytes))
                return line
            self._scanned = len(self._buffer)
            if len(self._buffer) > self.max_bytes:
                raise LineTooLong(BAD_REQUEST, _too_long(self.max_bytes))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("timed out")
                self.sock.settimeout(remaining)
            chunk = self.sock.recv(_RECV_CHUNK)
            if not chunk:
                return None
            self._buffer += chunk


def _too_long(limit: int) -> str:
    return f"line longer than {limit} bytes; the connection is closed"
