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
seconds and then returns a timeout result, even when the worker is still
blocked in a step that a socket shutdown cannot end: a name lookup in
getaddrinfo, or a TCP connect or TLS handshake (both bounded only by the
connect timeout). That worker is abandoned. It ends when the blocked step
returns, and it sends no request after the deadline.

Secrets: reasons, log lines and ``ProbeResult.to_details()`` never contain
the password of the URL's user-info (see ``redact_url``) or a configured
header value of 4 or more characters. Messages taken from exceptions are
scrubbed of both before use.

Sessions ignore the environment (``trust_env = False``): no proxy variables,
no ``.netrc`` credentials and no ``REQUESTS_CA_BUNDLE``, so a check goes
straight to the site and uses only its own configuration.
"""

import http.client
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Iterable

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

import mitod
from mitod.config.site import SiteConfig, redact_url

log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024
"""Maximum number of body bytes read per response. The rest is not downloaded."""

CHUNK_SIZE = 64 * 1024
DEADLINE_GRACE = 1.0
"""Seconds the caller waits for the worker after shutting down its sockets at the deadline."""

USER_AGENT = f"mitod/{mitod.__version__} (site check)"

# Methods that RFC 9110 (section 9.2.2) defines as idempotent, so a request
# lost on a closed kept-alive connection may be sent again.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Header values shorter than this are not scrubbed from messages, because
# replacing every "1" or "no" in a message would garble it.
MIN_SCRUBBED_LENGTH = 4

# Values of ProbeResult.error_kind.
CONNECTION_REFUSED = "connection_refused"
DNS_FAILURE = "dns_failure"
TIMEOUT = "timeout"
TLS_ERROR = "tls_error"
HTTP_STATUS = "http_status"
CONNECTION_RESET = "connection_reset"
TOO_MANY_REDIRECTS = "too_many_redirects"
CONNECTION_ERROR = "connection_error"
INVALID_RESPONSE = "invalid_response"
ERROR_KINDS = frozenset({
    CONNECTION_REFUSED, DNS_FAILURE, TIMEOUT, TLS_ERROR, HTTP_STATUS, CONNECTION_RESET,
    TOO_MANY_REDIRECTS, CONNECTION_ERROR, INVALID_RESPONSE,
})

# Phases of a check, used to say where a timeout or reset happened.
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


def new_session() -> requests.Session:
    """Create a session that ``probe`` accepts: deadline-aware adapters, no environment settings."""
    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = USER_AGENT
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class SessionPool:
    """``requests.Session`` objects kept per site name, so repeated checks reuse connections.

    A site's session is closed and replaced when its ``SiteConfig`` changes.
    Cookies do not carry over between checks because ``probe`` clears them.

    Thread safety: the pool's methods may be called from several threads. A
    session is meant to serve one check at a time. The scheduler guarantees
    that by coalescing a site's checks: no check is queued while the previous
    one is queued or running. The exception is a check whose worker the probe
    abandoned after its deadline (see the module docstring). That worker may
    still be blocked in a name lookup, connect or TLS handshake while the next
    check runs, but it shares only urllib3's connection pool, which is
    thread-safe, and it sends no request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[SiteConfig, requests.Session]] = {}

    def session_for(self, site: SiteConfig) -> requests.Session:
        """Return the session for ``site``, creating it or replacing it after a config change."""
        with self._lock:
            entry = self._entries.get(site.name)
            if entry is not None and entry[0] == site:
                return entry[1]
            session = new_session()
            self._entries[site.name] = (site, session)
        if entry is not None:
            log.debug("site %s: config changed, replacing its HTTP session", site.name)
            entry[1].close()
        return session

    def probe(self, site: SiteConfig) -> "ProbeResult":
        """Check ``site`` with its pooled session."""
        return probe(site, self.session_for(site))

    def discard(self, name: str) -> None:
        """Close and forget the session of site ``name``, if there is one."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is not None:
            entry[1].close()

    def retain(self, names: Iterable[str]) -> None:
        """Close the sessions of all sites not in ``names``, for example after a config reload."""
        keep = set(names)
        with self._lock:
            removed = [name for name in self._entries if name not in keep]
            sessions = [self._entries.pop(name)[1] for name in removed]
        for session in sessions:
            session.close()

    def close(self) -> None:
        """Close every session."""
        self.retain(())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def probe(site: SiteConfig, session: requests.Session | None = None) -> ProbeResult:
    """Check ``site`` once and return the outcome; network errors never raise.

    ``session`` must come from ``new_session`` or ``SessionPool``, because the
    overall deadline depends on their adapters; any other session raises
    ValueError. Without a session the probe creates one and closes it after.

    Redirects: up to ``site.max_redirects`` are followed, and a response that
    is still a redirect after that many fails as ``too_many_redirects``. With
    ``max_redirects = 0`` redirects are not followed and the 3xx response is
    judged by ``expect_status`` like any other final response.

    Exceptions other than network, TLS and HTTP errors (programming errors)
    are raised in the caller's thread.
    """
    owned = session is None
    if session is None:
        session = new_session()
    else:
        _require_deadline_adapter(session)

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
            and not _is_network_error(check.error):
        raise check.error

    result = check.result(elapsed_ms, abandoned)
    log.debug("site %s: %s in %.1f ms", site.name,
              "ok" if result.ok else f"{result.error_kind}: {result.reason}", result.response_ms)
    return result


# -- one check ---------------------------------------------------------------

_worker_state = threading.local()


def _current_check() -> "_Check | None":
    return getattr(_worker_state, "check", None)


class _DeadlineExpired(Exception):
    """Raised in the worker when it notices that the overall deadline has passed."""


class _Check:
    """State of one probe, shared by its worker thread, its connections and the waiting caller."""

    def __init__(self, site: SiteConfig, session: requests.Session, deadline: float):
        self.site = site
        self.session = session
        self.deadline = deadline
        """time.monotonic() value at which the check times out."""
        self.expired = False
        self.phase = _CONNECTING
        self.phase_at_deadline: str | None = None
        self.endpoint = _endpoint_of_url(site.url)
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
        the request went out, which says nothing about the site's health.
        """
        _worker_state.check = self
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
            _worker_state.check = None

    def _send(self) -> None:
        site = self.site
        self.responses = 0
        self.status_code = self.status_phrase = self.url = None
        self.body_bytes = 0
        self.truncated = False
        self.session.cookies.clear()
        # With allow_redirects=False, requests still walks the redirect
        # generator once to set Response.next and raises TooManyRedirects
        # when max_redirects is 0, so 0 is stored as 1 (nothing is followed).
        self.session.max_redirects = max(site.max_redirects, 1)
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
        chain = _exception_chain(error)
        return any(isinstance(item, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))
                   for item in chain)

    def _read_response(self, response: requests.Response, **_kwargs) -> None:
        """Read the body of each response, redirects included, up to BODY_LIMIT.

        Runs as a requests response hook, so it also drains redirect responses
        before requests would read their whole body into memory.
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
                raise _DeadlineExpired()
        if self.truncated:
            # Closing drops the connection instead of reading the rest of the body.
            response.close()

    # Called from the deadline-aware urllib3 connections in the worker thread.

    def begin_connect(self, connection: HTTPConnection) -> None:
        remaining = self.deadline - time.monotonic()
        if self.expired or remaining <= 0:
            raise _DeadlineExpired()
        self.phase = _CONNECTING
        self.endpoint = _format_endpoint(connection.host, connection.port)
        if connection.timeout is None or connection.timeout > remaining:
            connection.timeout = remaining

    def begin_request(self, connection: HTTPConnection, reused: bool) -> None:
        with self._lock:
            if self.expired:
                raise _DeadlineExpired()
            if connection not in self._connections:
                self._connections.append(connection)
        self.endpoint = _format_endpoint(connection.host, connection.port)
        self.request_reused = reused
        self.response_started = False

    def begin_response(self) -> None:
        self.phase = _WAITING_FOR_HEADERS

    def expire(self) -> None:
        """Mark the deadline as passed and shut down the sockets of the check's connections."""
        with self._lock:
            self.expired = True
            self.phase_at_deadline = self.phase
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
        scrub = _Scrubber(self.site)
        final_url = redact_url(self.url) if self.url else None
        redirects = max(0, self.responses - 1)
        error = self.error
        status_code = self.status_code
        if self.expired or abandoned or isinstance(error, _DeadlineExpired):
            # After expire() even a response without error is suspect: http.client
            # takes the EOF of a shut-down socket as the end of the headers or of a
            # body without Content-Length.
            kind, reason = TIMEOUT, self._deadline_reason()
            if (self.phase_at_deadline or self.phase) != _READING_BODY:
                status_code, final_url = None, None
        elif error is not None:
            kind, reason = self._classify(error, final_url, redirects)
        elif self.site.expects(self.status_code):
            kind, reason = None, None
        else:
            kind, reason = HTTP_STATUS, self._status_reason()
        return ProbeResult(
            ok=kind is None,
            status_code=status_code,
            reason=scrub(reason) if reason is not None else None,
            error_kind=kind,
            response_ms=elapsed_ms,
            bytes=self.body_bytes,
            final_url=scrub(final_url) if final_url is not None else None,
            redirects=redirects,
            truncated=self.truncated,
        )

    def _deadline_reason(self) -> str:
        prefix = f"timed out after {self.site.timeout:g} s (overall deadline)"
        phase = self.phase_at_deadline or self.phase
        if phase == _CONNECTING:
            return (f"{prefix} while connecting to {self.endpoint} "
                    "(name resolution, TCP connect or TLS handshake)")
        if phase == _WAITING_FOR_HEADERS:
            return f"{prefix} while waiting for the response headers from {self.endpoint}"
        return f"{prefix} while reading the response body from {self.endpoint}"

    def _status_reason(self) -> str:
        phrase = _clean_phrase(self.status_phrase) or _standard_phrase(self.status_code)
        status = f"HTTP {self.status_code} {phrase}".rstrip()
        return f"{status}, expected {_format_ranges(self.site.expect_status)}"

    def _where(self) -> str:
        """Return the phase in words, for reasons of resets and read timeouts."""
        if self.phase == _READING_BODY:
            return "while reading the response body"
        if self.phase == _WAITING_FOR_HEADERS:
            return "while waiting for the response headers"
        return "while connecting"

    def _classify(self, error: BaseException, final_url: str | None,
                  redirects: int) -> tuple[str, str]:
        """Return the error kind and reason of a network, TLS or HTTP error."""
        chain = _exception_chain(error)
        endpoint = self.endpoint

        if _find(chain, requests.TooManyRedirects):
            return TOO_MANY_REDIRECTS, (
                f"too many redirects: the response after {redirects} redirects was another "
                f"redirect (max_redirects is {self.site.max_redirects}), last URL {final_url}")

        verify_error = _find(chain, ssl.SSLCertVerificationError)
        if verify_error is not None:
            message = verify_error.verify_message or _clean_ssl_message(verify_error)
            return TLS_ERROR, f"TLS error with {endpoint}: certificate verify failed: {message}"

        if _find(chain, ConnectionRefusedError):
            return CONNECTION_REFUSED, f"connection refused by {endpoint}"

        lookup_error = _find(chain, socket.gaierror)
        if lookup_error is not None or _find(chain, urllib3.exceptions.NameResolutionError):
            host = _host_of_endpoint(endpoint)
            detail = lookup_error.strerror if lookup_error is not None else "lookup failed"
            return DNS_FAILURE, f"name resolution failed for {host}: {detail}"

        ssl_error = _find(chain, ssl.SSLError)
        if ssl_error is not None:
            return TLS_ERROR, f"TLS error with {endpoint}: {_clean_ssl_message(ssl_error)}"
        if _find(chain, urllib3.exceptions.SSLError) or _find(chain, requests.exceptions.SSLError):
            return TLS_ERROR, f"TLS error with {endpoint}"

        if _is_connect_timeout(chain):
            return TIMEOUT, (f"timed out after {self.site.timeout:g} s (connect timeout) "
                             f"connecting to {endpoint}")
        if _find(chain, TimeoutError) or _find(chain, urllib3.exceptions.ReadTimeoutError) \
                or _find(chain, requests.Timeout):
            return TIMEOUT, (f"timed out after {self.site.timeout:g} s (read timeout) "
                             f"{self._where()} from {endpoint}")

        if _find(chain, http.client.RemoteDisconnected):
            return CONNECTION_RESET, f"{endpoint} closed the connection without sending a response"
        if _find(chain, ConnectionResetError) or _find(chain, ConnectionAbortedError) \
                or _find(chain, BrokenPipeError):
            return CONNECTION_RESET, f"connection reset by {endpoint} {self._where()}"

        invalid = _describe_invalid_response(chain)
        if invalid is not None:
            return INVALID_RESPONSE, f"invalid response from {endpoint}: {invalid}"

        if _find(chain, requests.exceptions.InvalidHeader):
            # requests' message repeats the header value, which may be a credential.
            return CONNECTION_ERROR, ("request not sent: a configured header name or value is "
                                      "invalid (leading whitespace, CR or LF)")
        if _find(chain, requests.exceptions.InvalidURL) or _find(chain, requests.URLRequired) \
                or _find(chain, requests.exceptions.InvalidSchema):
            return CONNECTION_ERROR, f"request not sent: invalid URL {redact_url(self.site.url)}"

        os_error = _find_os_error(chain)
        if os_error is not None:
            return CONNECTION_ERROR, f"connection to {endpoint} failed: {os_error.strerror}"
        return CONNECTION_ERROR, f"request to {endpoint} failed: {_innermost_message(chain)}"


# -- deadline-aware transport --------------------------------------------------


class _DeadlineConnectionMixin:
    """Reports connects and requests of a urllib3 connection to the worker's ``_Check``.

    A connection with no check in its thread (used outside ``probe``)
    behaves like a plain urllib3 connection.
    """

    requests_sent = 0
    """Requests sent since the socket was (re)connected; above 0 means kept alive."""

    def _new_conn(self):
        self.requests_sent = 0
        check = _current_check()
        if check is not None:
            check.begin_connect(self)
        return super()._new_conn()

    def request(self, method, url, *args, **kwargs):
        check = _current_check()
        if check is not None:
            check.begin_request(self, reused=self.requests_sent > 0)
        # For plain HTTP, urllib3 connects inside request(), and _new_conn
        # resets the count, so it is raised only after the request went out.
        super().request(method, url, *args, **kwargs)
        self.requests_sent += 1

    def getresponse(self, *args, **kwargs):
        check = _current_check()
        if check is not None:
            check.begin_response()
        return super().getresponse(*args, **kwargs)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, HTTPSConnection):
    pass


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """HTTPAdapter whose connections let ``probe`` shut them down at its deadline."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }


def _require_deadline_adapter(session: requests.Session) -> None:
    for prefix in ("http://", "https://"):
        if not isinstance(session.get_adapter(prefix), _DeadlineAdapter):
            raise ValueError("probe() needs a session from new_session() or SessionPool, "
                             f"but the {prefix} adapter is {type(session.get_adapter(prefix))}")


def _verify_setting(site: SiteConfig) -> bool | str:
    if not site.verify_tls:
        return False
    return site.ca_file or True


# -- error classification ----------------------------------------------------

_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    _DeadlineExpired,
)


def _is_network_error(error: BaseException) -> bool:
    return isinstance(error, _NETWORK_ERRORS)


def _exception_chain(error: BaseException) -> list[BaseException]:
    """Return ``error`` and every exception wrapped in it, outermost first.

    requests and urllib3 wrap causes in ``args``, in ``MaxRetryError.reason``
    and in ``__cause__`` or ``__context__``, so all of them are followed.
    """
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner.extend(current.args)
        pending.extend(item for item in inner if isinstance(item, BaseException))
    return found


def _find(chain: list[BaseException], kind: type) -> BaseException | None:
    return next((error for error in chain if isinstance(error, kind)), None)


def _is_connect_timeout(chain: list[BaseException]) -> bool:
    # urllib3's NewConnectionError subclasses ConnectTimeoutError although it
    # is raised for every failed connect, so it must not count as a timeout.
    for error in chain:
        if isinstance(error, requests.ConnectTimeout):
            return True
        if isinstance(error, urllib3.exceptions.ConnectTimeoutError) \
                and not isinstance(error, urllib3.exceptions.NewConnectionError):
            return True
    return False


def _find_os_error(chain: list[BaseException]) -> OSError | None:
    for error in chain:
        if isinstance(error, OSError) and error.strerror:
            return error
    return None


def _describe_invalid_response(chain: list[BaseException]) -> str | None:
    """Return what is wrong with the response, or None when the error is not about it."""
    chunk_error = _find(chain, urllib3.exceptions.InvalidChunkLength)
    if chunk_error is not None:
        return f"invalid chunk length {_shorten(repr(chunk_error.length), 40)}"
    incomplete = _find(chain, http.client.IncompleteRead)
    if incomplete is not None:
        # urllib3's subclass stores a byte count in ``partial``, http.client the bytes.
        partial = incomplete.partial
        received = partial if isinstance(partial, int) else len(partial)
        if incomplete.expected is not None:
            return f"body ended after {received} bytes, {incomplete.expected} more expected"
        return f"body ended early after {received} bytes"
    bad_line = _find(chain, http.client.BadStatusLine)
    if bad_line is not None:
        return f"invalid status line {_shorten(str(bad_line))}"
    too_long = _find(chain, http.client.LineTooLong)
    if too_long is not None:
        return _shorten(str(too_long))
    if _find(chain, urllib3.exceptions.DecodeError) \
            or _find(chain, requests.exceptions.ContentDecodingError):
        return "the body could not be decoded as its Content-Encoding says"
    other = _find(chain, http.client.HTTPException) \
        or _find(chain, urllib3.exceptions.ProtocolError) \
        or _find(chain, requests.exceptions.ChunkedEncodingError)
    if other is not None:
        return _innermost_message(chain)
    return None


def _innermost_message(chain: list[BaseException]) -> str:
    for error in reversed(chain):
        text = str(error).strip()
        if text:
            return _shorten(f"{type(error).__name__}: {text}")
    return type(chain[-1]).__name__


_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def _clean_ssl_message(error: BaseException) -> str:
    """Return an ssl error's text without the ``(_ssl.c:1006)`` source position."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return _SSL_SOURCE.sub("", text).strip()


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _clean_phrase(phrase: str | None) -> str:
    if not phrase:
        return ""
    return _shorten("".join(char for char in phrase if char.isprintable()), 80)


def _standard_phrase(status: int | None) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def _format_endpoint(host: str, port: int | None) -> str:
    host = host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def _endpoint_of_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "<invalid URL>"
    return _format_endpoint(parts.hostname or "", port)


def _host_of_endpoint(endpoint: str) -> str:
    host, _, port = endpoint.rpartition(":")
    return host if port.isdigit() else endpoint


class _Scrubber:
    """Replaces a site's secrets in text: the raw URL, its password and header values."""

    def __init__(self, site: SiteConfig):
        self._replacements: list[tuple[str, str]] = []
        if site.url:
            self._replacements.append((site.url, redact_url(site.url)))
        try:
            password = urllib.parse.urlsplit(site.url).password
        except ValueError:
            password = None
        secrets = []
        if password:
            secrets += [password, urllib.parse.unquote(password)]
        secrets += [value for _name, value in site.headers if len(value) >= MIN_SCRUBBED_LENGTH]
        # Longest first, so a secret that contains another is replaced whole.
        for secret in sorted(set(secrets), key=len, reverse=True):
            self._replacements.append((secret, "***"))

    def __call__(self, text: str) -> str:
        for secret, replacement in self._replacements:
            text = text.replace(secret, replacement)
        return text
