"""HTTP check of one configured site, used by the ``site_check`` job.

``probe(site)`` sends one request to ``site.url`` with requests and returns a
``ProbeResult``: whether the final response has a status that the site
expects, how long the whole check took, and, when it failed, a stable error
kind plus a reason that a person can act on.

Timeouts: requests only has per-operation timeouts. The connect timeout bounds
one TCP connect and the read timeout bounds one wait for data on the socket, so
a server that sends a byte every second never trips either of them. The probe
therefore also enforces an overall deadline of ``site.timeout`` seconds:

- The request runs in a worker thread, and the calling thread waits for it
  until the deadline.
- At the deadline the calling thread shuts down the sockets of the check's
  connections. That ends a read blocked in the response headers or body.
- The worker streams the body in chunks and stops at the deadline or after
  ``BODY_LIMIT`` bytes.

After the deadline the calling thread waits at most ``DEADLINE_GRACE`` more
seconds and then returns a timeout result. It does so even when the worker is
still blocked in a step that a socket shutdown cannot end. Such steps are a
name lookup in getaddrinfo, and a TCP connect or TLS handshake, which only the
connect timeout bounds. That worker is abandoned. It ends when the blocked
step returns, and it sends no request after the deadline.

Secrets: reasons, log lines and ``ProbeResult.to_details()`` never contain
the password of the URL's user-info (see ``redact_url``) or a configured
header value of 4 or more characters. Messages taken from exceptions are
scrubbed of both before use.

Sessions ignore the environment (``trust_env = False``): no proxy variables,
no ``.netrc`` credentials and no ``REQUESTS_CA_BUNDLE``, so a check goes
straight to the site and uses only its own configuration.
"""

import logging
import socket
import threading
import time
from dataclasses import asdict, dataclass

import requests
from urllib3.connection import HTTPConnection

from mitod.config.site import SiteConfig, redact_url
from mitod.jobs.http_errors import (  # noqa: F401 - ERROR_KINDS is part of this module's API
    ERROR_KINDS,
    HTTP_STATUS,
    TIMEOUT,
    DeadlineExpired,
    Scrubber,
    classify,
    clean_phrase,
    endpoint_of_url,
    exception_chain,
    format_endpoint,
    format_ranges,
    is_network_error,
    standard_phrase,
)
from mitod.jobs.http_session import (  # noqa: F401 - SessionPool and USER_AGENT are re-exported
    USER_AGENT,
    SessionPool,
    new_session,
    require_deadline_adapter,
    set_current_check,
)

log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024
"""Maximum number of body bytes read per response. The rest is not downloaded."""

CHUNK_SIZE = 64 * 1024
DEADLINE_GRACE = 1.0
"""Seconds the caller waits for the worker after shutting down its sockets at the deadline."""

# Methods that RFC 9110 (section 9.2.2) defines as idempotent, so a request
# lost on a closed kept-alive connection may be sent again.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_CONNECTING = "connecting"
_WAITING_FOR_HEADERS = "waiting for headers"
_READING_BODY = "reading body"


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one check of a site."""

    ok: bool
    status_code: int | None
    reason: str | None
    """Human-readable cause when the check failed, None when it passed."""
    error_kind: str | None
    """Stable token from ERROR_KINDS when the check failed, None when it passed."""
    response_ms: float
    """Wall time of the whole check in milliseconds, redirects and body included."""
    bytes: int
    """Body bytes of the final response that the probe read, after content decoding.

    After a timeout or reset this can be less than what arrived, because a
    chunk that was still being filled is lost.
    """
    final_url: str | None
    """URL of the last response, with any user-info password redacted."""
    redirects: int
    truncated: bool = False
    """True when the body was longer than BODY_LIMIT and was not read to the end."""

    def to_details(self) -> dict:
        """Return the fields as a JSON-safe dict for storing."""
        details = asdict(self)
        details["response_ms"] = round(self.response_ms, 3)
        return details


def probe(site: SiteConfig, session: requests.Session | None = None) -> ProbeResult:
    """Check ``site`` once and return the outcome.

    Network, TLS and HTTP errors are returned in the result. Other exceptions
    (programming errors) are raised in the caller's thread.

    ``session`` must come from ``new_session`` or ``SessionPool``, because the
    overall deadline depends on their adapters. Any other session raises
    ValueError. Without a session the probe creates one and closes it after.

    Redirects: up to ``site.max_redirects`` are followed, and a response that
    is still a redirect after that many fails as ``too_many_redirects``. With
    ``max_redirects = 0`` redirects are not followed and the 3xx response is
    judged by ``expect_status`` like any other final response.
    """
    owned = session is None
    if session is None:
        session = new_session()
    else:
        require_deadline_adapter(session)

    started = time.monotonic()
    check = _Check(site, session, deadline=started + site.timeout)
    log.debug("site %s: %s %s, timeout %g s", site.name, site.method, redact_url(site.url),
              site.timeout)
    worker = threading.Thread(target=check.run, name=f"mitod-probe-{site.name}", daemon=True)
    worker.start()
    worker.join(max(0.0, check.deadline - time.monotonic()))
    if worker.is_alive():
        check.expire()
        worker.join(DEADLINE_GRACE)
    abandoned = worker.is_alive()
    elapsed_ms = (time.monotonic() - started) * 1000.0
    if abandoned:
        log.debug("site %s: worker still %s after the deadline, abandoned", site.name, check.phase)
    if owned:
        session.close()

    if check.error is not None and not abandoned and not check.expired \
            and not is_network_error(check.error):
        raise check.error

    result = check.result(elapsed_ms, abandoned)
    log.debug("site %s: %s in %.1f ms", site.name,
              "ok" if result.ok else f"{result.error_kind}: {result.reason}", result.response_ms)
    return result


# -- one check ---------------------------------------------------------------

class _Check:
    """State of one probe, shared by its worker thread, its connections and the waiting caller."""

    def __init__(self, site: SiteConfig, session: requests.Session, deadline: float):
        self.site = site
        self.session = session
        self.deadline = deadline
        """time.monotonic() value at which the check times out."""
        self.expired = False
        self.phase = _CONNECTING
        self.state_at_deadline: tuple[str, int, bool] | None = None
        """Phase, responses and response_started when expire() ran."""
        self.endpoint = endpoint_of_url(site.url)
        self.error: BaseException | None = None
        self.responses = 0
        self.status_code: int | None = None
        self.status_phrase: str | None = None
        self.url: str | None = None
        self.body_bytes = 0
        self.truncated = False
        self.request_reused = False
        """Whether the current request went out on a kept-alive connection."""
        self.response_started = False
        """Whether a response to the current request arrived."""
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []

    def run(self) -> None:
        """Send the request and read the responses; runs in the worker thread.

        A request that fails on a kept-alive connection before any response
        byte arrived is sent once more on a new connection, if its method is
        idempotent. The server most likely closed the idle connection just as
        the request went out, which is no sign of a problem with the site.
        """
        set_current_check(self)
        try:
            for attempt in (1, 2):
                try:
                    self._send()
                    return
                except Exception as error:  # noqa: BLE001 - handed to the caller, which sorts it
                    if attempt == 1 and self._failed_on_stale_connection(error):
                        log.debug("site %s: server closed the kept-alive connection to %s, "
                                  "retrying on a new connection", self.site.name, self.endpoint)
                        continue
                    self.error = error
                    return
        finally:
            set_current_check(None)

    def _send(self) -> None:
        site = self.site
        self.response_started = False
        self.responses = 0
        self.status_code = self.status_phrase = self.url = None
        self.body_bytes = 0
        self.truncated = False
        self.session.cookies.clear()
        # With allow_redirects=False, requests still walks the redirect
        # generator once to set Response.next and raises TooManyRedirects
        # when max_redirects is 0, so 0 is stored as 1 (nothing is followed).
        self.session.max_redirects = max(site.max_redirects, 1)
        # The connect and read timeouts equal the deadline, so a server that
        # sends nothing trips the read timeout or the deadline, whichever fires first.
        response = self.session.request(
            site.method,
            site.url,
            headers=dict(site.headers),
            timeout=(site.timeout, site.timeout),
            verify=_verify_setting(site),
            stream=True,
            allow_redirects=site.max_redirects > 0,
            hooks={"response": self._read_response},
        )
        response.close()

    def _failed_on_stale_connection(self, error: Exception) -> bool:
        if self.expired or not self.request_reused or self.response_started:
            return False
        if self.site.method not in IDEMPOTENT_METHODS:
            return False
        chain = exception_chain(error)
        return any(isinstance(item, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))
                   for item in chain)

    def _read_response(self, response: requests.Response, **_kwargs) -> None:
        """Read the body of each response, redirects included, up to BODY_LIMIT.

        Runs as a requests response hook, so it also drains redirect responses
        before requests would read their whole body into memory.

        NOTE: this relies on requests running the hook before it consumes a
        redirect's body, as requests 2.34 does (Session.send). The test of a
        stalled redirect body fails if that changes.
        """
        self.response_started = True
        self.responses += 1
        self.status_code = response.status_code
        self.status_phrase = response.reason
        self.url = response.url
        self.phase = _READING_BODY
        self.body_bytes = 0
        self.truncated = False
        for chunk in response.iter_content(CHUNK_SIZE):
            self.body_bytes += len(chunk)
            if self.body_bytes >= BODY_LIMIT:
                self.truncated = True
                break
            if time.monotonic() >= self.deadline:
                raise DeadlineExpired()
        if self.truncated:
            # Closing drops the connection instead of reading the rest of the body.
            response.close()

    # Called from the deadline-aware urllib3 connections in the worker thread.

    def begin_connect(self, connection: HTTPConnection) -> None:
        self.response_started = False
        remaining = self.deadline - time.monotonic()
        if self.expired or remaining <= 0:
            raise DeadlineExpired()
        self.phase = _CONNECTING
        self.endpoint = format_endpoint(connection.host, connection.port)
        timeout = connection.timeout
        if not isinstance(timeout, (int, float)) or timeout > remaining:
            connection.timeout = remaining

    def begin_request(self, connection: HTTPConnection, reused: bool) -> None:
        self.response_started = False
        with self._lock:
            if self.expired:
                raise DeadlineExpired()
            if connection not in self._connections:
                self._connections.append(connection)
        self.endpoint = format_endpoint(connection.host, connection.port)
        self.request_reused = reused

    def begin_response(self) -> None:
        self.phase = _WAITING_FOR_HEADERS

    def expire(self) -> None:
        """Mark the deadline as passed and shut down the sockets of the check's connections."""
        with self._lock:
            self.expired = True
            self.state_at_deadline = (self.phase, self.responses, self.response_started)
            connections = list(self._connections)
        for connection in connections:
            sock = connection.sock
            if sock is None or sock.fileno() == -1:
                continue
            try:
                # The base class method shuts down the file descriptor without
                # touching the state of an ssl.SSLSocket that the worker is reading.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed or never connected

    # Building the result in the caller's thread.

    def result(self, elapsed_ms: float, abandoned: bool) -> ProbeResult:
        error = self.error
        # After expire() only the state saved at the deadline counts. http.client
        # takes the EOF of a shut-down socket as the end of the headers, so a
        # response that "arrived" after the deadline may be a truncated one.
        if self.state_at_deadline is not None:
            phase, responses, has_response = self.state_at_deadline
        else:
            phase, responses, has_response = self.phase, self.responses, self.response_started

        # Every response before the last request's was a redirect that was followed.
        if has_response:
            redirects = responses - 1
            status_code = self.status_code
            final_url = redact_url(self.url) if self.url else None
            body_bytes, truncated = self.body_bytes, self.truncated
        else:
            redirects = responses
            status_code, final_url, body_bytes, truncated = None, None, 0, False

        if self.expired or abandoned or isinstance(error, DeadlineExpired):
            kind, reason = TIMEOUT, self._deadline_reason(phase)
        elif error is not None:
            kind, reason = classify(error, self.site, self.endpoint, self._where(),
                                    final_url, redirects)
        elif self.site.expects(self.status_code):
            kind, reason = None, None
        else:
            kind, reason = HTTP_STATUS, self._status_reason()
        scrub = Scrubber(self.site)
        return ProbeResult(
            ok=kind is None,
            status_code=status_code,
            reason=scrub(reason) if reason is not None else None,
            error_kind=kind,
            response_ms=elapsed_ms,
            bytes=body_bytes,
            final_url=scrub(final_url) if final_url is not None else None,
            redirects=redirects,
            truncated=truncated,
        )

    def _deadline_reason(self, phase: str) -> str:
        prefix = f"timed out after {self.site.timeout:g} s (overall deadline)"
        if phase == _CONNECTING:
            return (f"{prefix} while connecting to {self.endpoint} "
                    "(name resolution, TCP connect or TLS handshake)")
        if phase == _WAITING_FOR_HEADERS:
            return f"{prefix} while waiting for the response headers from {self.endpoint}"
        return f"{prefix} while reading the response body from {self.endpoint}"

    def _status_reason(self) -> str:
        phrase = clean_phrase(self.status_phrase) or standard_phrase(self.status_code)
        status = f"HTTP {self.status_code} {phrase}".rstrip()
        return f"{status}, expected {format_ranges(self.site.expect_status)}"

    def _where(self) -> str:
        """Return the phase in words, for reasons of resets and read timeouts."""
        if self.phase == _READING_BODY:
            return "while reading the response body"
        if self.phase == _WAITING_FOR_HEADERS:
            return "while waiting for the response headers"
        return "while connecting"


def _verify_setting(site: SiteConfig) -> bool | str:
    if not site.verify_tls:
        return False
    return site.ca_file or True
