"""The ``progress_report`` job: summarise the period since the previous report.

The period starts at the previous ``report.progress`` row in
``operation_log``, or one ``[report] interval`` ago when there is none, and
ends now. The report holds:

- tasks created in the period, by their current status;
- tasks finished in the period, and the success rate
  completed / (completed + failed) among them;
- retries: ``task.retrying`` rows written in the period;
- per configured site: checks, uptime % (checks that found it up), and the
  mean and 95th-percentile response time of the checks that found it up,
  because a timed-out check measures the timeout, not the site;
- averages of the ``cpu_percent``, ``memory_percent`` and
  ``mitod_rss_bytes`` samples.

It writes one ``report.progress`` row (a readable line as the message, the
full report as details) and logs the line at INFO.
"""

import logging
import math
from datetime import timedelta

from mitod.clock import format_timestamp
from mitod.engine.tasks import Task
from mitod.store.oplog import add_event

log = logging.getLogger(__name__)

EVENT = "report.progress"
RESOURCE_METRICS = ("cpu_percent", "memory_percent", "mitod_rss_bytes")


def run(engine, task: Task) -> tuple[dict, str]:
    conn = engine.db.read()
    now = engine.clock.now()
    end = format_timestamp(now)
    start = previous_report_time(conn) or format_timestamp(
        now - timedelta(seconds=engine.config.report.interval))

    report = {
        "period": {"start": start, "end": end},
        "tasks": task_summary(conn, start, end),
        "sites": {site.name: site_summary(conn, site.job, start, end)
                  for site in engine.config.sites},
        "resources": resource_summary(conn, start, end),
    }
    line = report_line(report)
    with engine.db.write() as writer:
        add_event(writer, engine.clock, EVENT, line, report, task.id)
    log.info("%s (task %s)", line, task.label)
    return report, line


def previous_report_time(conn) -> str | None:
    row = conn.execute("SELECT timestamp FROM operation_log WHERE event_type = ? "
                       "ORDER BY id DESC LIMIT 1", (EVENT,)).fetchone()
    return row[0] if row else None


def task_summary(conn, start: str, end: str) -> dict:
    created = dict(conn.execute(
        "SELECT status, COUNT(*) FROM autonomous_tasks "
        "WHERE created_at >= ? AND created_at < ? GROUP BY status", (start, end)).fetchall())
    finished = dict(conn.execute(
        "SELECT status, COUNT(*) FROM autonomous_tasks "
        "WHERE completed_at >= ? AND completed_at < ? GROUP BY status", (start, end)).fetchall())
    retries = conn.execute(
        "SELECT COUNT(*) FROM operation_log WHERE event_type = 'task.retrying' "
        "AND timestamp >= ? AND timestamp < ?", (start, end)).fetchone()[0]
    completed = finished.get("completed", 0)
    failed = finished.get("failed", 0)
    rate = round(100.0 * completed / (completed + failed), 1) if completed + failed else None
    return {"created": sum(created.values()), "by_status": created, "finished": finished,
            "success_rate": rate, "retries": retries}


def site_summary(conn, job: str, start: str, end: str) -> dict:
    rows = conn.execute(
        "SELECT ok, duration_ms FROM check_results WHERE job = ? "
        "AND started_at >= ? AND started_at < ?", (job, start, end)).fetchall()
    up_times = sorted(row["duration_ms"] for row in rows if row["ok"])
    checks = len(rows)
    return {
        "checks": checks,
        "up": len(up_times),
        "uptime_percent": round(100.0 * len(up_times) / checks, 2) if checks else None,
        "mean_response_ms": round(sum(up_times) / len(up_times), 1) if up_times else None,
        "p95_response_ms": percentile(up_times, 95),
    }


def percentile(sorted_values: list[float], percent: float) -> float | None:
    """Return the nearest-rank percentile: the smallest value with ``percent`` % at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def resource_summary(conn, start: str, end: str) -> dict:
    placeholders = ", ".join("?" for _ in RESOURCE_METRICS)
    rows = conn.execute(
        f"SELECT name, AVG(value), MAX(value), COUNT(*) FROM metric_samples "
        f"WHERE name IN ({placeholders}) AND sampled_at >= ? AND sampled_at < ? GROUP BY name",
        (*RESOURCE_METRICS, start, end)).fetchall()
    found = {row[0]: row for row in rows}
    summary = {}
    for name in RESOURCE_METRICS:
        row = found.get(name)
        summary[name] = {
            "mean": round(row[1], 2) if row else None,
            "max": row[2] if row else None,
            "samples": row[3] if row else 0,
        }
    return summary


def report_line(report: dict) -> str:
    tasks = report["tasks"]
    by_status = sorted(tasks["by_status"].items())
    statuses = ", ".join(f"{count} {status}" for status, count in by_status)
    rate = tasks["success_rate"]
    parts = [f"Progress since {report['period']['start']}: {tasks['created']} tasks"
             + (f" ({statuses})" if statuses else "")
             + (f", success rate {rate:.1f} %" if rate is not None else "")
             + f", {tasks['retries']} retries"]
    for name, site in report["sites"].items():
        if not site["checks"]:
            parts.append(f"site {name}: no checks")
            continue
        text = f"site {name}: {site['uptime_percent']:.2f} % up of {site['checks']} checks"
        if site["mean_response_ms"] is not None:
            text += (f", mean {site['mean_response_ms']:.0f} ms, "
                     f"p95 {site['p95_response_ms']:.0f} ms")
        parts.append(text)
    resources = report["resources"]
    averages = []
    for name, label, scale, unit in (("cpu_percent", "CPU", 1, "%"),
                                     ("memory_percent", "memory", 1, "%"),
                                     ("mitod_rss_bytes", "mitod RSS", 2**20, "MiB")):
        mean = resources[name]["mean"]
        if mean is not None:
            averages.append(f"{label} {mean / scale:.1f} {unit}")
    if averages:
        parts.append("mean " + ", ".join(averages))
    return "; ".join(parts)
