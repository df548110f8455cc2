"""The scheduler: coalescing, isolation of failing jobs, and wall-clock steps."""

import datetime
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mitod.engine.queue import TaskQueue
from mitod.engine.scheduler import JobSpec, Scheduler
from mitod.store import Database
from tests.harness import ROOT, wait_for


@pytest.fixture
def queue(tmp_path):
    db = Database(str(tmp_path / "s.db")).open()
    yield TaskQueue(db)
    db.close()


def count_tasks(queue, name):
    return queue.db.read().execute(
        "SELECT COUNT(*) FROM autonomous_tasks WHERE name = ?", (name,)).fetchone()[0]


def test_due_job_is_enqueued(queue):
    scheduler = Scheduler(queue, lambda: False)
    scheduler.set_jobs([JobSpec("site:a", "site_check", 2, 60, 30, {"site": "a"},
                                run_at_start=True)])
    scheduler.tick()
    task = queue.claim("w")
    assert task.name == "site:a"
    assert task.payload == {"site": "a"}
    assert task.timeout_s == 30


def test_job_without_run_at_start_waits_an_interval(queue):
    scheduler = Scheduler(queue, lambda: False)
    scheduler.set_jobs([JobSpec("report", "progress_report", 4, 60, 30)])
    scheduler.tick()
    assert count_tasks(queue, "report") == 0


def test_paused_scheduler_enqueues_nothing(queue):
    scheduler = Scheduler(queue, lambda: True)
    scheduler.set_jobs([JobSpec("site:a", "site_check", 2, 60, 30, run_at_start=True)])
    scheduler.tick()
    assert count_tasks(queue, "site:a") == 0


def test_coalesced_skips_logged_once_per_streak(queue, caplog):
    scheduler = Scheduler(queue, lambda: False)
    scheduler.set_jobs([JobSpec("site:a", "site_check", 2, 1, 30, run_at_start=True)])
    caplog.set_level(logging.INFO, logger="mitod.engine.scheduler")
    for _ in range(4):
        for job in scheduler._schedule.jobs:
            job.next_run = datetime.datetime.now()
        scheduler.tick()
    assert count_tasks(queue, "site:a") == 1
    skips = [r for r in caplog.records if "Skipped job site:a" in r.getMessage()]
    assert len(skips) == 1
    assert scheduler.job_table()[0]["skipped_runs"] == 3

    queue.complete(queue.claim("w"))
    for job in scheduler._schedule.jobs:
        job.next_run = datetime.datetime.now()
    scheduler.tick()
    assert count_tasks(queue, "site:a") == 2
    assert any("enqueued again after 3 skipped runs" in r.getMessage() for r in caplog.records)


def test_failing_job_does_not_stop_others(queue, caplog):
    scheduler = Scheduler(queue, lambda: False)
    # A payload that JSON cannot encode makes this job's enqueue raise every time.
    broken = JobSpec("broken", "site_check", 2, 60, 30, {"bad": object()}, run_at_start=True)
    fine = JobSpec("site:fine", "site_check", 2, 60, 30, run_at_start=True)
    scheduler.set_jobs([broken, fine])
    scheduler.tick()
    assert count_tasks(queue, "site:fine") == 1
    assert any("Could not enqueue job broken" in r.getMessage() for r in caplog.records)


def test_set_jobs_reports_changes_and_keeps_unchanged(queue):
    scheduler = Scheduler(queue, lambda: False)
    keep = JobSpec("site:keep", "site_check", 2, 60, 30)
    scheduler.set_jobs([keep, JobSpec("site:old", "site_check", 2, 60, 30),
                        JobSpec("site:change", "site_check", 2, 60, 30)])
    before = scheduler._jobs["site:keep"].job.next_run
    changes = scheduler.set_jobs([keep, JobSpec("site:change", "site_check", 2, 120, 30),
                                  JobSpec("site:new", "site_check", 2, 60, 30)])
    assert changes == {"added": ["site:new"], "removed": ["site:old"], "changed": ["site:change"]}
    assert scheduler._jobs["site:keep"].job.next_run == before
    assert [spec.name for spec in scheduler.specs()] == ["site:keep", "site:change", "site:new"]


class SteppingClock:
    def __init__(self):
        self.offset = datetime.timedelta(0)

    def __call__(self):
        return datetime.datetime.now() + self.offset


@pytest.mark.parametrize("step_hours", [1, -1])
def test_clock_step_moves_next_runs(queue, step_hours):
    wall = SteppingClock()
    scheduler = Scheduler(queue, lambda: False, wall_clock=wall)
    scheduler.set_jobs([JobSpec("site:a", "site_check", 2, 60, 30)])
    before = scheduler._jobs["site:a"].job.next_run
    assert scheduler.check_clock_step() == 0.0
    wall.offset = datetime.timedelta(hours=step_hours)
    step = scheduler.check_clock_step()
    assert abs(step - step_hours * 3600) < 1.0
    moved = scheduler._jobs["site:a"].job.next_run - before
    assert abs(moved.total_seconds() - step_hours * 3600) < 1.0


def find_libfaketime() -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                   "/usr/lib/faketime"):
        candidate = Path(folder) / "libfaketime.so.1"
        if candidate.exists():
            return str(candidate)
    return None


SCHEDULER_UNDER_FAKETIME = """
import logging, sys, threading
from mitod.engine.queue import TaskQueue
from mitod.engine.scheduler import JobSpec, Scheduler
from mitod.store import Database

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
db = Database(sys.argv[1]).open()
queue = TaskQueue(db)
scheduler = Scheduler(queue, lambda: False)
scheduler.set_jobs([JobSpec("fast", "noop", 2, 1, 30, run_at_start=True),
                    JobSpec("slow", "noop", 2, 12, 30)])
stop = threading.Event()

def drain():
    while not stop.is_set():
        task = queue.claim("w")
        if task is None:
            stop.wait(0.05)
        else:
            queue.complete(task)

threading.Thread(target=drain, daemon=True).start()
scheduler.start()
sys.stdin.readline()
scheduler.stop()
stop.set()
"""


def test_wall_clock_steps_under_libfaketime(tmp_path):
    """A real process whose wall clock jumps an hour forward, then back (monotonic untouched)."""
    library = find_libfaketime()
    if library is None and os.environ.get("CI"):
        pytest.fail("libfaketime is missing; .ci/run installs the faketime package")
    if library is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    offset_file = tmp_path / "offset"
    offset_file.write_text("+0\n")
    database = tmp_path / "s.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LD_PRELOAD=library,
               FAKETIME_TIMESTAMP_FILE=str(offset_file), FAKETIME_NO_CACHE="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1")
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", SCHEDULER_UNDER_FAKETIME, str(database)],
            stdin=subprocess.PIPE, stderr=log_file, text=True, env=env)
    try:
        reader = Database(str(database))

        def count(name):
            try:
                return reader.read().execute(
                    "SELECT COUNT(*) FROM autonomous_tasks WHERE name = ?", (name,)).fetchone()[0]
            except sqlite3.OperationalError:  # the child has not created the table yet
                return 0

        wait_for(lambda: count("fast") >= 2, 15, message="the 1 s job to run twice")

        offset_file.write_text("+1h\n")
        fast_before = count("fast")
        wait_for(lambda: count("fast") >= fast_before + 3, 10,
                 message="the 1 s job to keep running after a forward step")
        assert count("slow") == 0  # a forward step must not make the 12 s job fire early

        offset_file.write_text("+0\n")
        fast_before = count("fast")
        wait_for(lambda: count("fast") >= fast_before + 3, 10,
                 message="the 1 s job to keep running after a backward step (no stall)")
        wait_for(lambda: count("slow") >= 1, 15, message="the 12 s job to run once")
    finally:
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(20)
        print(log_path.read_text())
    stderr = log_path.read_text()
    assert stderr.count("The wall clock stepped by") == 2, stderr
