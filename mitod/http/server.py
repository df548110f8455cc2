"""The HTTP server thread: ``GET /healthz`` and ``GET /api/autonomous/status``.

Built on the standard library's ``ThreadingHTTPServer``, with two of its
defaults changed. The listen backlog is raised from 5, because a full backlog
makes clients wait for SYN retransmits, about a second, under load. Each
connection sets ``TCP_NODELAY``, because HTTP/1.1 keep-alive otherwise meets
Nagle's algorithm and delayed ACKs, which add about 40 ms per response.
"""

import errno
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mitod import __version__
from mitod.config.http import HttpConfig

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128
REQUEST_TIMEOUT = 10.0


class HttpServerError(Exception):
    """The HTTP port could not be bound; the message names the address and the fix."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True

    def __init__(self, address, handler, family, daemon):
        self.address_family = family
        self.mitod = daemon
        super().__init__(address, handler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class StatusHttpServer:
    def __init__(self, config: HttpConfig, daemon):
        self.config = config
        self.daemon = daemon
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.server = _Server((host, port), StatusHandler, family, self.daemon)
        except OSError as error:
            raise HttpServerError(_bind_message(self.config.listen, error)) from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="http",
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        log.info("HTTP status endpoint listening on %s", self.config.listen)

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        log.info("HTTP status endpoint stopped")

    def is_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def _bind_message(listen: str, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (f"cannot listen on {listen}: the address is already in use by another "
                "program; stop it or set [http] listen to a free port")
    if error.errno == errno.EACCES:
        return (f"cannot listen on {listen}: permission denied; use a port above 1023 or "
                "run with CAP_NET_BIND_SERVICE")
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {listen}: no such local address; check [http] listen"
    return f"cannot listen on {listen}: {error.strerror}"


class StatusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"mitod/{__version__}"
    timeout = REQUEST_TIMEOUT
    # Errors found before the request line is parsed still get a status line and headers.
    default_request_version = "HTTP/1.0"

    routes = {
        "/healthz": "healthz",
        "/api/autonomous/status": "status",
    }

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            self._send_json(404, {"error": {"code": "not_found",
                                            "message": f"no such path: {path}; try /healthz "
                                                       "or /api/autonomous/status"}})
            return
        if method not in ("GET", "HEAD"):
            self._send_json(405, {"error": {"code": "method_not_allowed",
                                            "message": f"{method} is not allowed on {path}; "
                                                       "use GET"}},
                            extra_headers={"Allow": "GET, HEAD"})
            return
        try:
            status, body = getattr(self, f"_{route}")()
        except Exception:  # an error building the response is a 500, never a dead server
            log.exception("HTTP %s %s failed", method, path)
            status, body = 500, {"error": {"code": "internal",
                                           "message": "internal error; see the daemon's log"}}
        self._send_json(status, body, head_only=method == "HEAD")

    def _healthz(self) -> tuple[int, dict]:
        daemon = self.server.mitod
        problems = daemon.health_problems()
        body = {
            "status": "ok" if not problems else "degraded",
            "state": "paused" if daemon.engine.paused else "running",
            "problems": problems,
        }
        return (200 if not problems else 503), body

    def _status(self) -> tuple[int, dict]:
        return 200, self.server.mitod.status.build()

    def _send_json(self, status: int, body: dict, head_only: bool = False,
                   extra_headers: dict | None = None) -> None:
        data = (json.dumps(body, default=str) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Send protocol errors (bad request line, unsupported method) as JSON, then close."""
        self.close_connection = True
        codes = {400: "bad_request", 404: "not_found", 408: "timeout", 414: "bad_request",
                 431: "bad_request", 501: "method_not_allowed"}
        text = message or self.responses.get(code, ("error",))[0]
        self._send_json(code, {"error": {"code": codes.get(code, "bad_request"),
                                         "message": text}},
                        head_only=self.command == "HEAD")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (name fixed by the base class)
        log.debug("HTTP %s %s", self.address_string(), format % args)
