"""The ``site_check`` job: probe one configured site and record the result.

A site found down is not a failed task: the check did its work. The task
completes, and ``check_results`` records the site as down with the reason.
A change of state (up to down, down to up) is logged and written to
``operation_log`` as ``site.down`` or ``site.up``.
"""

import logging

from mitod.engine.tasks import Task
from mitod.jobs.http_probe import ProbeResult, SessionPool, probe
from mitod.store.oplog import add_event
from mitod.store.results import add_check_result

log = logging.getLogger(__name__)

SESSIONS = SessionPool()


def run(engine, task: Task) -> tuple[dict, str]:
    name = task.payload.get("site", "")
    site = engine.config.site(name)
    if site is None:
        return {"skipped": True}, f"site {name!r} is no longer configured; nothing checked"

    started_at = engine.clock.timestamp()
    result = probe(site, SESSIONS.session_for(site))
    details = result.to_details()
    with engine.db.write() as conn:
        add_check_result(conn, site.job, started_at, result.response_ms, result.ok,
                         result.status_code, result.reason, details, task.id)
        previous = engine.sites.record(name, result.ok, started_at, result.response_ms,
                                       result.status_code, result.reason)
        current = "up" if result.ok else "down"
        if previous != current:
            add_event(conn, engine.clock, f"site.{current}", _transition_text(name, previous,
                                                                              result),
                      {"site": name, "previous": previous, "status_code": result.status_code,
                       "error_kind": result.error_kind, "reason": result.reason,
                       "response_ms": round(result.response_ms, 1)}, task.id)
    if previous != current:
        level = logging.WARNING if not result.ok else logging.INFO
        log.log(level, "%s (task %s)", _transition_text(name, previous, result), task.short_id)
    return details, _summary(result)


def _transition_text(name: str, previous: str, result: ProbeResult) -> str:
    if result.ok:
        after = "" if previous == "unknown" else f" again (was {previous})"
        return f"Site {name} is UP{after}: HTTP {result.status_code} in {result.response_ms:.0f} ms"
    return f"Site {name} is DOWN: {result.reason}"


def _summary(result: ProbeResult) -> str:
    if result.ok:
        return f"up, HTTP {result.status_code} in {result.response_ms:.0f} ms"
    return f"down: {result.reason}"
