"""One ``[[site]]`` entry: a web site to check."""

import re
import urllib.parse
from dataclasses import dataclass

from mitod.config.table import Table

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
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
        return cls(
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
        parts.port  # raises ValueError for a port out of range
    except ValueError:
        table.expected("url", what, redact_url(url))
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        table.expected("url", what, redact_url(url))
        return ""
    return url


def _read_headers(table: Table) -> tuple[tuple[str, str], ...]:
    headers = table.raw("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in headers.items()):
        # Header values may hold credentials, so the error never repeats them.
        table.error("headers", 'expected a table of strings such as { Accept = "text/html" }')
        return ()
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


def redact_url(url: str) -> str:
    """Return ``url`` with any user-info password replaced, safe to log and store."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
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
