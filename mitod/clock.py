"""Wall-clock and monotonic time behind one object, so tests can inject their own.

Stored timestamps are UTC ISO 8601 with microseconds and ``+00:00``
(``2026-12-04T21:01:55.123456+00:00``): always the same width, so comparing
the strings in SQL orders them by time.
"""

import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Clock:
    """The real clocks; subclass and override for tests."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def timestamp(self, offset_seconds: float = 0.0) -> str:
        """Return the stored form of now plus ``offset_seconds``."""
        moment = self.now()
        if offset_seconds:
            moment += timedelta(seconds=offset_seconds)
        return format_timestamp(moment)


SYSTEM_CLOCK = Clock()
