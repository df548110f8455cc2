"""Describe what changed between two configurations, for reload summaries."""

from dataclasses import fields

from mitod.config.durations import format_duration
from mitod.config.loader import Config

# Keys that only take effect when the daemon restarts: they name resources it
# opened at start (files, sockets, ports).
RESTART_KEYS = (
    ("daemon", "database"), ("daemon", "pidfile"), ("daemon", "socket"),
    ("control", "socket_mode"), ("control", "group"),
    ("http", "listen"), ("http", "enabled"),
)

SECTIONS = ("daemon", "control", "log", "http", "system", "optimization", "report")


def describe_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Return (changes applied, changes that need a restart), each as short phrases."""
    applied, restart = [], []
    restart_keys = set(RESTART_KEYS)
    for section in SECTIONS:
        old_section, new_section = getattr(old, section), getattr(new, section)
        for field in fields(old_section):
            before = getattr(old_section, field.name)
            after = getattr(new_section, field.name)
            if before == after:
                continue
            phrase = f"{section}.{field.name} {_show(field.name, before)} -> " \
                     f"{_show(field.name, after)}"
            (restart if (section, field.name) in restart_keys else applied).append(phrase)
    applied.extend(_site_changes(old, new))
    return applied, restart


def _site_changes(old: Config, new: Config) -> list[str]:
    before = {site.name: site for site in old.sites}
    after = {site.name: site for site in new.sites}
    phrases = [f"site {name} added" for name in after if name not in before]
    phrases += [f"site {name} removed" for name in before if name not in after]
    phrases += [f"site {name} changed" for name in after
                if name in before and before[name] != after[name]]
    return phrases


def _show(name: str, value) -> str:
    if isinstance(value, float) and name in ("interval", "timeout", "shutdown_timeout",
                                             "start_timeout", "monitor_interval",
                                             "retry_backoff", "retry_backoff_max",
                                             "priority_aging", "idle_timeout", "keep_tasks",
                                             "keep_results", "keep_log"):
        return format_duration(value)
    if name == "socket_mode":
        return oct(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(str(getattr(item, "path", item)) for item in value) + "]"
    return str(value)
