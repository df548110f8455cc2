"""Text output for ``mitoctl``: aligned tables, relative times and optional colour.

Colour is used only when stdout is a terminal and ``NO_COLOR`` is unset or
empty (https://no-color.org).
"""

import os
import sys
from datetime import datetime, timezone

import click

# Colours of states and statuses; anything not listed stays plain.
STYLES = {
    "running": "green", "up": "green", "completed": "green", "ok": "green",
    "paused": "yellow", "queued": "cyan", "retrying": "yellow", "unknown": "yellow",
    "down": "red", "failed": "red", "cancelled": "magenta", "dead": "red",
}


def use_color(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Renderer:
    """Formats values for people; ``color`` switches ANSI styles on or off."""

    def __init__(self, color: bool, now: datetime | None = None):
        self.color = color
        self.now = now or datetime.now(timezone.utc)

    def style(self, text: str, key: str | None = None, bold: bool = False) -> str:
        """Colour ``text`` by ``key`` (a state or status), or by the text itself."""
        if not self.color:
            return text
        colour = STYLES.get(key if key is not None else text)
        if colour is None and not bold:
            return text
        return click.style(text, fg=colour, bold=bold)

    def ago(self, timestamp: str | None) -> str:
        return relative_time(timestamp, self.now)

    def table(self, headers: list[str], rows: list[list[str]],
              styles: list[list[str | None]] | None = None) -> str:
        """Align ``rows`` under ``headers``; ``styles`` gives a colour key per cell (or None).

        Widths are measured before colouring, so ANSI codes never break the alignment.
        """
        widths = [len(header) for header in headers]
        for row in rows:
            for index, cell in enumerate(row):
                widths[index] = max(widths[index], len(cell))
        header_cells = [self.style(header.ljust(width), bold=True)
                        for header, width in zip(headers, widths)]
        lines = ["  ".join(header_cells).rstrip()]
        for row_index, row in enumerate(rows):
            cells = []
            for index, cell in enumerate(row):
                padded = cell.ljust(widths[index]) if index < len(row) - 1 else cell
                key = styles[row_index][index] if styles else None
                cells.append(self.style(padded, key) if key else padded)
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def parse_time(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def relative_time(timestamp: str | None, now: datetime) -> str:
    """Return "3 min ago", "in 12 s", "now" or "-" for a missing time."""
    if not timestamp:
        return "-"
    seconds = (parse_time(timestamp) - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    span = format_span(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def format_span(seconds: float) -> str:
    """Write a length of time in its largest whole unit: "45 s", "3 min", "2 h", "5 d"."""
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 48 * 3600:
        hours, rest = divmod(int(seconds), 3600)
        minutes = rest // 60
        return f"{hours} h {minutes} min" if minutes and hours < 10 else f"{hours} h"
    return f"{int(seconds // 86400)} d"


def format_interval(seconds: float | None) -> str:
    """Write a job interval compactly: "30s", "5m", "2h", "1h30m"; "-" when there is none."""
    if seconds is None:
        return "-"
    remaining = int(round(seconds))
    if remaining == 0:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def local_time(timestamp: str | None) -> str:
    """Write a stored UTC time in the local time zone, to the second."""
    if not timestamp:
        return "-"
    return parse_time(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def task_duration(task: dict) -> str:
    """Return how long a task ran (or has run so far), or "-" if it never started."""
    if not task.get("started_at"):
        return "-"
    end = parse_time(task["completed_at"]) if task.get("completed_at") else \
        datetime.now(timezone.utc)
    seconds = (end - parse_time(task["started_at"])).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    return format_span(seconds)


def shorten(text: str | None, width: int) -> str:
    """Return ``text`` on one line, cut to ``width`` characters ending in "..."."""
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 3] + "..."
