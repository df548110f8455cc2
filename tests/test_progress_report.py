"""The progress report from hand-built history: tasks, uptime, response times, resources."""

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from mitod.clock import format_timestamp
from mitod.config import load_config
from mitod.engine.engine import Engine
from mitod.jobs import progress_report
from mitod.jobs.progress_report import percentile
from mitod.store import Database
from tests.harness import render_config

SITES = [{"name": "homepage", "url": "http://127.0.0.1:9/"},
         {"name": "quiet", "url": "http://127.0.0.1:9/quiet"}]


@pytest.fixture
def engine(tmp_path):
    sections = {
        "daemon": {"database": "mitod.db", "pidfile": "mitod.pid", "socket": "mitod.sock"},
        "log": {"file": ""},
        "report": {"interval": "15m"},
    }
    path = tmp_path / "mitod.toml"
    path.write_text(render_config(sections, SITES))
    config = load_config(str(path))
    db = Database(config.daemon.database).open()
    yield Engine(config, db)
    db.close()


def ago(minutes: float) -> str:
    return format_timestamp(datetime.now(timezone.utc) - timedelta(minutes=minutes))


def claim_report(engine):
    engine.queue.enqueue("progress_report", "progress_report", 4, coalesce=False)
    task = engine.queue.claim("test-worker")
    assert task is not None and task.name == "progress_report"
    return task


def add_check(engine, job, minutes_ago, ok, duration_ms):
    engine.db.read().execute(
        "INSERT INTO check_results (job, started_at, duration_ms, ok) VALUES (?, ?, ?, ?)",
        (job, ago(minutes_ago), duration_ms, 1 if ok else 0))


def add_event(engine, event_type, minutes_ago):
    engine.db.read().execute(
        "INSERT INTO operation_log (timestamp, event_type, message) VALUES (?, ?, 'test')",
        (ago(minutes_ago), event_type))


def add_sample(engine, name, minutes_ago, value):
    engine.db.read().execute(
        "INSERT INTO metric_samples (sampled_at, source, name, value) VALUES (?, 'test', ?, ?)",
        (ago(minutes_ago), name, value))


def add_task(engine, status, minutes_ago):
    completed = ago(minutes_ago) if status in ("completed", "failed") else None
    engine.db.read().execute(
        "INSERT INTO autonomous_tasks (id, name, kind, priority, status, created_at, "
        "completed_at) VALUES (lower(hex(randomblob(16))), 'site:homepage', 'site_check', 2, "
        "?, ?, ?)", (status, ago(minutes_ago), completed))


@pytest.fixture
def history(engine):
    """Twenty up checks of 10..200 ms and five down ones in the period, noise before it."""
    add_event(engine, "report.progress", 60)   # the previous report starts the period
    for number in range(1, 21):
        add_check(engine, "site:homepage", 30, True, number * 10.0)
    for _ in range(5):
        add_check(engine, "site:homepage", 20, False, 30000.0)
    add_check(engine, "site:homepage", 90, False, 5.0)   # before the period
    for _ in range(3):
        add_task(engine, "completed", 30)
    add_task(engine, "failed", 30)
    add_task(engine, "completed", 90)                    # before the period
    add_event(engine, "task.retrying", 30)
    add_event(engine, "task.retrying", 25)
    add_event(engine, "task.retrying", 90)               # before the period
    add_sample(engine, "cpu_percent", 30, 10.0)
    add_sample(engine, "cpu_percent", 20, 30.0)
    add_sample(engine, "cpu_percent", 90, 90.0)          # before the period
    add_sample(engine, "memory_percent", 30, 50.0)
    add_sample(engine, "mitod_rss_bytes", 30, 2.0 * 2**20)
    add_sample(engine, "mitod_rss_bytes", 20, 4.0 * 2**20)
    return engine


def test_site_uptime_and_response_times(history):
    task = claim_report(history)

    report, _ = progress_report.run(history, task)

    site = report["sites"]["homepage"]
    assert site["checks"] == 25
    assert site["up"] == 20
    assert site["uptime_percent"] == 80.0
    assert site["mean_response_ms"] == 105.0
    assert site["p95_response_ms"] == 190.0


def test_site_without_checks(history):
    task = claim_report(history)

    report, line = progress_report.run(history, task)

    assert report["sites"]["quiet"] == {"checks": 0, "up": 0, "uptime_percent": None,
                                        "mean_response_ms": None, "p95_response_ms": None}
    assert "site quiet: no checks" in line


def test_task_counts_and_success_rate(history):
    task = claim_report(history)

    report, _ = progress_report.run(history, task)

    tasks = report["tasks"]
    # The report's own task was created in the period too.
    assert tasks["by_status"] == {"completed": 3, "failed": 1, "running": 1}
    assert tasks["success_rate"] == 75.0
    assert tasks["retries"] == 2


def test_resource_averages(history):
    task = claim_report(history)

    report, _ = progress_report.run(history, task)

    resources = report["resources"]
    assert resources["cpu_percent"]["mean"] == 20.0
    assert resources["cpu_percent"]["samples"] == 2
    assert resources["memory_percent"]["mean"] == 50.0
    assert resources["mitod_rss_bytes"]["mean"] == 3.0 * 2**20


def test_report_written_and_logged(history, caplog):
    task = claim_report(history)

    with caplog.at_level(logging.INFO, logger="mitod.jobs.progress_report"):
        report, line = progress_report.run(history, task)

    row = history.db.read().execute(
        "SELECT * FROM operation_log WHERE event_type = 'report.progress' "
        "ORDER BY id DESC LIMIT 1").fetchone()
    assert row["message"] == line
    assert row["task_id"] == task.id
    assert json.loads(row["details"]) == report
    assert "homepage: 80.00 % up of 25 checks, mean 105 ms, p95 190 ms" in line
    assert "mean CPU 20.0 %, memory 50.0 %, mitod RSS 3.0 MiB" in line
    assert any(record.getMessage() == f"{line} (task {task.label})" for record in caplog.records)


def test_first_report_covers_one_interval(engine):
    add_check(engine, "site:homepage", 10, True, 50.0)
    add_check(engine, "site:homepage", 20, True, 70.0)   # older than the 15 min interval
    task = claim_report(engine)

    report, _ = progress_report.run(engine, task)

    assert report["sites"]["homepage"]["checks"] == 1
    assert report["sites"]["homepage"]["mean_response_ms"] == 50.0


def test_second_report_starts_at_first(history):
    first = claim_report(history)
    report, line = progress_report.run(history, first)
    history.queue.complete(first, report, line)
    second = claim_report(history)

    following, _ = progress_report.run(history, second)

    assert following["period"]["start"] > report["period"]["start"]
    assert following["sites"]["homepage"]["checks"] == 0


@pytest.mark.parametrize("values, percent, expected", [
    ([1.0], 95, 1.0),
    ([1.0, 2.0], 95, 2.0),
    ([float(n) for n in range(1, 101)], 95, 95.0),
    ([float(n) for n in range(1, 11)], 50, 5.0),
    ([], 95, None),
])
def test_percentile_nearest_rank(values, percent, expected):
    assert percentile(values, percent) == expected
