"""Typed reading of one TOML table, collecting errors instead of stopping at the first.

Every section of the configuration reads its keys through a :class:`Table`. Each
read names the key it consumed, so :meth:`Table.finish` can report the keys
no reader consumed as unknown (typos are errors, not silently ignored settings). Every
error message has the form ``FILE: KEY.PATH: expected WHAT, got VALUE``.
"""

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable

from mitod.config.durations import parse_duration

_MISSING = object()


def describe_value(value: Any) -> str:
    """Render a configuration value the way it would appear in TOML."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)) and any(isinstance(item, dict) for item in value):
        return "a list of tables"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class Table:
    """One TOML table plus where each of its keys came from.

    ``origins`` maps a key to the file that set it; keys from included files
    resolve relative paths against their own file's folder.
    """

    def __init__(self, values: dict, path: str, origins: dict[str, Path],
                 default_origin: Path, errors: list[str]):
        self.values = values
        self.path = path
        self.origins = origins
        self.default_origin = default_origin
        self.errors = errors
        self._read: set[str] = set()

    # -- bookkeeping -----------------------------------------------------

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def origin(self, key: str) -> Path:
        return self.origins.get(key, self.default_origin)

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.origin(key)}: {self.key_path(key)}: {message}")

    def expected(self, key: str, what: str, value: Any) -> None:
        self.error(key, f"expected {what}, got {describe_value(value)}")

    def finish(self) -> None:
        """Report every key that no reader consumed as unknown."""
        for key in self.values:
            if key in self._read:
                continue
            close = difflib.get_close_matches(key, sorted(self._read), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "see etc/mitod.toml for the keys"
            self.error(key, f"unknown key; {hint}")

    def _take(self, key: str) -> Any:
        self._read.add(key)
        return self.values.get(key, _MISSING)

    def has(self, key: str) -> bool:
        return key in self.values

    # -- typed readers ---------------------------------------------------

    def _typed(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> Any:
        value = self._take(key)
        if value is _MISSING:
            return default
        if not check(value):
            self.expected(key, what, value)
            return default
        return value

    def string(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        what = "a string" if not choices else "one of " + ", ".join(f'"{c}"' for c in choices)
        value = self._typed(key, default, lambda v: isinstance(v, str), what)
        if choices and value not in choices:
            self.expected(key, what, value)
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return self._typed(key, default, lambda v: isinstance(v, bool), "true or false")

    def integer(self, key: str, default: int, minimum: int | None = None,
                maximum: int | None = None) -> int:
        what = _range_text("an integer", minimum, maximum)
        value = self._typed(key, default, _is_int, what)
        if not _in_range(value, minimum, maximum):
            self.expected(key, what, value)
            return default
        return value

    def number(self, key: str, default: float, minimum: float | None = None,
               maximum: float | None = None) -> float:
        what = _range_text("a number", minimum, maximum)
        value = self._typed(key, default, _is_number, what)
        if not _in_range(value, minimum, maximum):
            self.expected(key, what, value)
            return default
        return float(value)

    def duration(self, key: str, default: str, minimum: float = 0.0) -> float:
        """Return the duration at ``key`` in seconds; ``default`` is written like "30s"."""
        value = self._take(key)
        if value is _MISSING:
            return parse_duration(default)
        what = 'a duration such as "30s", "5m" or "2h"'
        if minimum > 0:
            what += f" of at least {_seconds_text(minimum)}"
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.expected(key, what, value)
            return parse_duration(default)
        if seconds < minimum:
            self.expected(key, what, value)
            return parse_duration(default)
        return seconds

    def path_value(self, key: str, default: str, allow_empty: bool = False) -> str:
        """Return an absolute path; a relative one resolves against its file's folder."""
        value = self._take(key)
        if value is _MISSING:
            value = default
            base = self.default_origin.parent
        else:
            base = self.origin(key).parent
            if not isinstance(value, str) or (not value and not allow_empty):
                what = "a path" + (' or ""' if allow_empty else "")
                self.expected(key, what, value)
                return default
        if value == "":
            return ""
        return resolve_path(value, base)

    def path_list(self, key: str, default: list[str]) -> list[str]:
        """Return a list of absolute paths; relative ones resolve against their file's folder."""
        base = self.origin(key).parent if self.has(key) else self.default_origin.parent
        return [resolve_path(path, base) for path in self.string_list(key, default)]

    def string_list(self, key: str, default: list[str]) -> list[str]:
        return list(self._typed(key, default, _is_string_list, "a list of strings"))

    def raw(self, key: str, default: Any = None) -> Any:
        value = self._take(key)
        return default if value is _MISSING else value

    def subtable(self, key: str, path: str | None = None) -> "Table | None":
        """Return the nested table at ``key`` (an error if it is not a table)."""
        value = self._take(key)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.expected(key, "a table", value)
            return None
        origin = self.origin(key)
        return Table(value, path or self.key_path(key), {}, origin, self.errors)


def resolve_path(value: str, base: Path) -> str:
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(os.path.abspath(base), expanded))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _in_range(value: float, minimum: float | None, maximum: float | None) -> bool:
    if minimum is not None and value < minimum:
        return False
    return maximum is None or value <= maximum


def _range_text(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{kind} of at least {minimum:g}"
    if maximum is not None:
        return f"{kind} of at most {maximum:g}"
    return kind


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}s"
