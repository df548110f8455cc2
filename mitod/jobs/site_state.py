"""Each configured site's current state (up, down or unknown), kept in memory.

The state is rebuilt from ``check_results`` at start, then updated by every
check, so ``status`` never needs a query per site.
"""

import threading
from dataclasses import asdict, dataclass

from mitod.store.database import Database
from mitod.store.results import latest_result, streak_start


@dataclass
class SiteState:
    name: str
    state: str = "unknown"
    since: str | None = None
    last_check_at: str | None = None
    last_response_ms: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None


class SiteStates:
    """Thread-safe map from site name to :class:`SiteState`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._states: dict[str, SiteState] = {}

    def load(self, db: Database, names: list[str]) -> None:
        """Rebuild the states of ``names`` from their latest check results."""
        conn = db.read()
        states = {}
        for name in names:
            row = latest_result(conn, f"site:{name}")
            if row is None:
                states[name] = SiteState(name)
                continue
            ok = bool(row["ok"])
            states[name] = SiteState(
                name, "up" if ok else "down", streak_start(conn, f"site:{name}", ok),
                row["started_at"], row["duration_ms"], row["status_code"], row["error"])
        with self._lock:
            self._states = states

    def keep_only(self, names: list[str]) -> None:
        """Add unknown states for new sites and forget removed ones."""
        with self._lock:
            self._states = {name: self._states.get(name, SiteState(name)) for name in names}

    def record(self, name: str, ok: bool, checked_at: str, response_ms: float,
               status_code: int | None, error: str | None) -> str:
        """Store a check's outcome; return the state the site had before it."""
        new_state = "up" if ok else "down"
        with self._lock:
            current = self._states.setdefault(name, SiteState(name))
            previous = current.state
            if previous != new_state:
                current.state = new_state
                current.since = checked_at
            current.last_check_at = checked_at
            current.last_response_ms = round(response_ms, 3)
            current.last_status_code = status_code
            current.last_error = error
            return previous

    def get(self, name: str) -> SiteState | None:
        with self._lock:
            state = self._states.get(name)
            return SiteState(**asdict(state)) if state else None

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [asdict(state) for state in self._states.values()]
