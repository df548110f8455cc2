"""HTTP sessions whose connections a probe can shut down at its deadline.

``probe`` runs each request in a worker thread and registers itself as that
thread's current check. The connections made here report their connects and
requests to the current check, so at the deadline the check has the list of
sockets to shut down.
"""

import logging
import threading
from typing import Iterable

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

import mitod
from mitod.config.site import SiteConfig

log = logging.getLogger(__name__)

USER_AGENT = f"mitod/{mitod.__version__} (site check)"

_worker_state = threading.local()


def set_current_check(check) -> None:
    """Make ``check`` the current check of this thread (None to clear it)."""
    _worker_state.check = check


def current_check():
    """Return this thread's current check, or None outside ``probe``."""
    return getattr(_worker_state, "check", None)


class _DeadlineConnectionMixin:
    """Reports connects and requests of a urllib3 connection to the worker's ``_Check``.

    A connection with no check in its thread (used outside ``probe``)
    behaves like a plain urllib3 connection.

    NOTE: ``_new_conn`` is a private urllib3 method. These overrides were
    checked against urllib3 2.8.
    """

    requests_sent = 0
    """Count of requests sent since the socket was (re)connected. Above 0 means kept alive."""

    def _new_conn(self):
        self.requests_sent = 0
        check = current_check()
        if check is not None:
            check.begin_connect(self)
        return super()._new_conn()

    def request(self, method, url, *args, **kwargs):
        check = current_check()
        if check is not None:
            check.begin_request(self, reused=self.requests_sent > 0)
        # For plain HTTP, urllib3 connects inside request(), and _new_conn
        # resets the count, so it is raised only after the request went out.
        super().request(method, url, *args, **kwargs)
        self.requests_sent += 1

    def getresponse(self, *args, **kwargs):
        check = current_check()
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


class DeadlineAdapter(HTTPAdapter):
    """HTTPAdapter whose connections let ``probe`` shut them down at its deadline."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }


def require_deadline_adapter(session: requests.Session) -> None:
    for prefix in ("http://", "https://"):
        if not isinstance(session.get_adapter(prefix), DeadlineAdapter):
            raise ValueError("probe() needs a session from new_session() or SessionPool, "
                             f"but the {prefix} adapter is {type(session.get_adapter(prefix))}")




def new_session() -> requests.Session:
    """Create a session that ``probe`` accepts: deadline-aware adapters, no environment settings."""
    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = USER_AGENT
    adapter = DeadlineAdapter()
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

    def probe(self, site: SiteConfig):
        """Check ``site`` with its pooled session and return its ProbeResult."""
        from mitod.jobs.http_probe import probe

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


