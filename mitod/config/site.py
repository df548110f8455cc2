"""One ``[[site]]`` entry: a web site to check."""

import re
import urllib.parse
from dataclasses import dataclass

from mitod.config.table import Table

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_EXPECT = ((200, 399),)


@dataclass(frozen=True)
class SiteConfig:
    name: str
    url: str
    interval: float = 300.0
    timeout: float = 30.0
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: tuple[tuple[int, int], ...] = DEFAULT_EXPECT
    verify_tls: bool = True
    ca_file: str = ""
    max_redirects: int = 10

    @property
    def job(self) -> str:
        return f"site:{self.name}"

    def expects(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect_status)

    @classmethod
    def from_table(cls, table: Table) -> "SiteConfig | None":
        name = table.string("name", "")
        if not NAME_PATTERN.match(name):
            table.expected("name", "a name of 1 to 64 letters, digits, '-', '_' or '.'", name
                           if table.has("name") else None)
        url = _read_url(table)
        site = cls(
            name=name,
            url=url,
            interval=table.duration("interval", "5m", minimum=1),
            timeout=table.duration("timeout", "30s", minimum=0.1),
            method=table.string("method", "GET", choices=METHODS),
            headers=_read_headers(table),
            expect_status=_read_expect(table),
            verify_tls=table.boolean("verify_tls", True),
            ca_file=table.path_value("ca_file", "", allow_empty=True),
            max_redirects=table.integer("max_redirects", 10, 0, 100),
        )
        if site.ca_file and not site.verify_tls:
            table.error("ca_file", "is ignored because verify_tls = false; remove one of the two")
        return site


def _read_url(table: Table) -> str:
    url = table.raw("url")
    what = "an http:// or https:// URL with a host"
    if url is None:
        table.error("url", f"missing; {what} is required")
        return ""
    if not isinstance(url, str):
        table.expected("url", what, url)
        return ""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError:
        table.expected("url", what, redact_url(url))
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        table.expected("url", what, redact_url(url))
        return ""
    if port == 0:
        table.expected("url", f"{what} and a port from 1 to 65535", redact_url(url))
        return ""
    return url


def _read_headers(table: Table) -> tuple[tuple[str, str], ...]:
    headers = table.raw("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in headers.items()):
        # Header values may hold credentials, so the errors never repeat them.
        table.error("headers", 'expected a table of strings such as { Accept = "text/html" }')
        return ()
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            table.error(f"headers.{name}", "invalid header name; use letters, digits and "
                        "!#$%&'*+-.^_`|~ only")
        elif value != value.strip() or any(char in value for char in "\r\n\0"):
            table.error(f"headers.{name}", "invalid header value: it starts or ends with "
                        "white space or contains a line break; the value is not shown "
                        "because it may be a secret")
    return tuple(sorted(headers.items()))


def _read_expect(table: Table) -> tuple[tuple[int, int], ...]:
    entries = table.raw("expect_status")
    if entries is None:
        return DEFAULT_EXPECT
    what = 'a list of status codes and ranges such as [200, "300-399"]'
    if not isinstance(entries, list) or not entries:
        table.expected("expect_status", what, entries)
        return DEFAULT_EXPECT
    ranges = []
    for index, entry in enumerate(entries):
        parsed = _parse_status(entry)
        if parsed is None:
            table.expected(f"expect_status[{index}]", "a status code from 100 to 599 or a range "
                           'such as "200-299"', entry)
            continue
        ranges.append(parsed)
    return tuple(ranges) or DEFAULT_EXPECT


def _parse_status(entry) -> tuple[int, int] | None:
    if isinstance(entry, int) and not isinstance(entry, bool):
        low = high = entry
    elif isinstance(entry, str) and re.fullmatch(r"\d{3}-\d{3}", entry.strip()):
        low, high = (int(part) for part in entry.strip().split("-"))
    elif isinstance(entry, str) and re.fullmatch(r"\d{3}", entry.strip()):
        low = high = int(entry)
    else:
        return None
    if not 100 <= low <= high <= 599:
        return None
    return low, high


SECRET_QUERY_KEYS = re.compile(
    r"(token|secret|password|passwd|pwd|key|signature|sig|auth|credential|session)", re.I)


def redact_url(url: str) -> str:
    """Return ``url`` safe to log and store.

    The user-info password and the values of query parameters whose names
    suggest a secret (token, key, password, signature and the like) become ``***``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:
        query = _redact_query(parts.query)
        if query != parts.query:
            parts = parts._replace(query=query)
            url = urllib.parse.urlunsplit(parts)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                    parts.fragment))


def _redact_query(query: str) -> str:
    pieces = []
    for piece in query.split("&"):
        name, equals, _value = piece.partition("=")
        if equals and SECRET_QUERY_KEYS.search(urllib.parse.unquote_plus(name)):
            piece = f"{name}=***"
        pieces.append(piece)
    return "&".join(pieces)
