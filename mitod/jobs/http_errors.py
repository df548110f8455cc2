"""Error kinds of a site check, and how network, TLS and HTTP errors map to them.

requests and urllib3 wrap the error that really happened (a refused connect,
a certificate that failed verification, a reset) in several layers of their
own exceptions. :func:`classify` walks that chain and returns a stable error
kind plus a reason a person can act on. :class:`Scrubber` then removes the
site's secrets from any text taken from an exception.
"""

import http
import http.client
import re
import socket
import ssl
import urllib.parse

import requests
import urllib3

from mitod.config.site import SiteConfig, redact_url

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

# Header values shorter than this are not scrubbed from messages, because
# replacing every "1" or "no" in a message would garble it.
MIN_SCRUBBED_LENGTH = 4


class DeadlineExpired(Exception):
    """Raised in the worker when it notices that the overall deadline has passed."""


def classify(error: BaseException, site: SiteConfig, endpoint: str, where: str,
             final_url: str | None, redirects: int) -> tuple[str, str]:
    """Return the error kind and reason of a network, TLS or HTTP error.

    ``endpoint`` is the host and port the check last talked to, ``where`` the
    phase in words ("while reading the response body").
    """
    chain = exception_chain(error)

    if find_error(chain, requests.TooManyRedirects):
        return TOO_MANY_REDIRECTS, (
            f"too many redirects: the response after {redirects} redirects was another "
            f"redirect (max_redirects is {site.max_redirects}), last URL {final_url}")

    verify_error = find_error(chain, ssl.SSLCertVerificationError)
    if verify_error is not None:
        message = verify_error.verify_message or clean_ssl_message(verify_error)
        return TLS_ERROR, f"TLS error with {endpoint}: certificate verify failed: {message}"

    if find_error(chain, ConnectionRefusedError):
        return CONNECTION_REFUSED, f"connection refused by {endpoint}"

    lookup_error = find_error(chain, socket.gaierror)
    if lookup_error is not None or find_error(chain, urllib3.exceptions.NameResolutionError):
        host = host_of_endpoint(endpoint)
        detail = lookup_error.strerror if lookup_error is not None else "lookup failed"
        return DNS_FAILURE, f"name resolution failed for {host}: {detail}"

    ssl_error = find_error(chain, ssl.SSLError)
    if ssl_error is not None:
        return TLS_ERROR, f"TLS error with {endpoint}: {clean_ssl_message(ssl_error)}"
    if find_error(chain, urllib3.exceptions.SSLError) or find_error(chain, requests.exceptions.SSLError):
        return TLS_ERROR, f"TLS error with {endpoint}"

    if is_connect_timeout(chain):
        return TIMEOUT, (f"timed out after {site.timeout:g} s (connect timeout) "
                         f"connecting to {endpoint}")
    if find_error(chain, TimeoutError) or find_error(chain, urllib3.exceptions.ReadTimeoutError) \
            or find_error(chain, requests.Timeout):
        return TIMEOUT, (f"timed out after {site.timeout:g} s (read timeout) "
                         f"{where} from {endpoint}")

    if find_error(chain, http.client.RemoteDisconnected):
        return CONNECTION_RESET, f"{endpoint} closed the connection without sending a response"
    if find_error(chain, ConnectionResetError) or find_error(chain, ConnectionAbortedError) \
            or find_error(chain, BrokenPipeError):
        return CONNECTION_RESET, f"connection reset by {endpoint} {where}"

    invalid = describe_invalid_response(chain)
    if invalid is not None:
        return INVALID_RESPONSE, f"invalid response from {endpoint}: {invalid}"

    if find_error(chain, requests.exceptions.InvalidHeader):
        # requests' message repeats the header value, which may be a credential.
        return CONNECTION_ERROR, ("request not sent: a configured header name or value is "
                                  "invalid (leading whitespace, CR or LF)")
    if find_error(chain, requests.exceptions.InvalidURL) \
            or find_error(chain, requests.exceptions.MissingSchema) \
            or find_error(chain, requests.exceptions.InvalidSchema):
        return CONNECTION_ERROR, f"request not sent: invalid URL {redact_url(site.url)}"

    os_error = find_os_error(chain)
    if os_error is not None:
        return CONNECTION_ERROR, f"connection to {endpoint} failed: {os_error.strerror}"
    return CONNECTION_ERROR, f"request to {endpoint} failed: {innermost_message(chain)}"


NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    DeadlineExpired,
)


def is_network_error(error: BaseException) -> bool:
    return isinstance(error, NETWORK_ERRORS)


def exception_chain(error: BaseException) -> list[BaseException]:
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


def find_error(chain: list[BaseException], kind: type) -> BaseException | None:
    return next((error for error in chain if isinstance(error, kind)), None)


def is_connect_timeout(chain: list[BaseException]) -> bool:
    # urllib3's NewConnectionError subclasses ConnectTimeoutError although it
    # is raised for every failed connect, so it must not count as a timeout.
    for error in chain:
        if isinstance(error, requests.ConnectTimeout):
            return True
        if isinstance(error, urllib3.exceptions.ConnectTimeoutError) \
                and not isinstance(error, urllib3.exceptions.NewConnectionError):
            return True
    return False


def find_os_error(chain: list[BaseException]) -> OSError | None:
    for error in chain:
        if isinstance(error, OSError) and error.strerror:
            return error
    return None


def describe_invalid_response(chain: list[BaseException]) -> str | None:
    """Return what is wrong with the response, or None when the error is not about it."""
    chunk_error = find_error(chain, urllib3.exceptions.InvalidChunkLength)
    if chunk_error is not None:
        return f"invalid chunk length {shorten(repr(chunk_error.length), 40)}"
    incomplete = find_error(chain, http.client.IncompleteRead)
    if incomplete is not None:
        # urllib3's subclass stores a byte count in ``partial``, http.client the bytes.
        partial = incomplete.partial
        received = partial if isinstance(partial, int) else len(partial)
        if incomplete.expected is not None:
            return f"body ended after {received} bytes, {incomplete.expected} more expected"
        return f"body ended early after {received} bytes"
    bad_line = find_error(chain, http.client.BadStatusLine)
    if bad_line is not None:
        return f"invalid status line {shorten(str(bad_line))}"
    too_long = find_error(chain, http.client.LineTooLong)
    if too_long is not None:
        return shorten(str(too_long))
    if find_error(chain, urllib3.exceptions.DecodeError) \
            or find_error(chain, requests.exceptions.ContentDecodingError):
        return "the body could not be decoded as its Content-Encoding says"
    other = find_error(chain, http.client.HTTPException) \
        or find_error(chain, urllib3.exceptions.ProtocolError) \
        or find_error(chain, requests.exceptions.ChunkedEncodingError)
    if other is not None:
        return innermost_message(chain)
    return None


def innermost_message(chain: list[BaseException]) -> str:
    for error in reversed(chain):
        text = str(error).strip()
        if text:
            return shorten(f"{type(error).__name__}: {text}")
    return type(chain[-1]).__name__


_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def clean_ssl_message(error: BaseException) -> str:
    """Return an ssl error's text without the ``(_ssl.c:1006)`` source position."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return _SSL_SOURCE.sub("", text).strip()


def shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clean_phrase(phrase: str | None) -> str:
    if not phrase:
        return ""
    return shorten("".join(char for char in phrase if char.isprintable()), 80)


def standard_phrase(status: int | None) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def format_endpoint(host: str, port: int | None) -> str:
    host = host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def endpoint_of_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "<invalid URL>"
    return format_endpoint(parts.hostname or "", port)


def host_of_endpoint(endpoint: str) -> str:
    host, _, port = endpoint.rpartition(":")
    return host if port.isdigit() else endpoint


class Scrubber:
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
