"""The persistent queue: order, maintenance slot, retries with backoff, claims, recovery."""

import random
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from mitod.clock import Clock, parse_timestamp
from mitod.engine.backoff import Backoff
from mitod.engine.queue import TaskQueue
from mitod.engine.tasks import Priority
from mitod.store import Database
from tests.harness import ROOT


class FakeClock(Clock):
    """A wall clock that only moves when the test moves it."""

    def __init__(self):
        self.current = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)

    def now(self):
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "q.db")).open()
    yield database
    database.close()


@pytest.fixture
def queue(db, clock):
    return TaskQueue(db, clock, Backoff(2.0, 60.0, random.Random(7)), priority_aging=600)


def events(db, task_id=None):
    sql = "SELECT event_type FROM operation_log"
    params = ()
    if task_id:
        sql += " WHERE task_id = ?"
        params = (task_id,)
    return [row[0] for row in db.read().execute(sql + " ORDER BY id", params)]


def test_claims_lowest_priority_number_first(queue):
    queue.enqueue("report", "progress_report", Priority.LOW)
    queue.enqueue("opt", "optimization", Priority.MEDIUM)
    queue.enqueue("site:a", "site_check", Priority.HIGH)
    queue.enqueue("emergency", "emergency_optimization", Priority.CRITICAL)
    order = []
    while (task := queue.claim("w")) is not None:
        order.append(task.name)
        queue.complete(task)
    assert order == ["emergency", "site:a", "opt", "report"]


def test_same_priority_oldest_first(queue, clock):
    for name in ("first", "second", "third"):
        queue.enqueue(name, "site_check", Priority.HIGH)
        clock.advance(1)
    names = []
    while (task := queue.claim("w")) is not None:
        names.append(task.name)
        queue.complete(task)
    assert names == ["first", "second", "third"]


def test_task_not_claimed_before_due(queue, clock):
    queue.enqueue("later", "site_check", Priority.HIGH, delay=30)
    assert queue.claim("w") is None
    clock.advance(31)
    assert queue.claim("w").name == "later"


def test_one_maintenance_task_at_a_time(queue):
    queue.enqueue("opt", "optimization", Priority.MEDIUM)
    queue.enqueue("report", "progress_report", Priority.LOW)
    queue.enqueue("site:a", "site_check", Priority.HIGH)
    first = queue.claim("w1")
    second = queue.claim("w2")
    third = queue.claim("w3")
    assert first.name == "site:a"
    assert second.name == "opt"
    assert third is None  # the LOW report waits while optimisation runs
    queue.complete(second)
    assert queue.claim("w3").name == "report"


def test_aged_maintenance_outranks_fresh_checks(queue, clock):
    queue.enqueue("report", "progress_report", Priority.LOW)
    clock.advance(601)
    queue.enqueue("site:a", "site_check", Priority.HIGH)
    assert queue.claim("w").name == "report"


def test_aged_maintenance_still_yields_to_critical(queue, clock):
    queue.enqueue("report", "progress_report", Priority.LOW)
    clock.advance(601)
    queue.enqueue("emergency", "emergency_optimization", Priority.CRITICAL)
    assert queue.claim("w").name == "emergency"


def test_paused_claims_only_operator_tasks(queue):
    queue.enqueue("site:a", "site_check", Priority.HIGH)
    queue.enqueue("site:b", "site_check", Priority.HIGH, origin="operator")
    assert queue.claim("w", operator_only=True).name == "site:b"
    assert queue.claim("w", operator_only=True) is None


def test_skip_low_leaves_low_work(queue):
    queue.enqueue("report", "progress_report", Priority.LOW)
    assert queue.claim("w", skip_low=True) is None
    assert queue.claim("w").name == "report"


def test_coalesce_skips_active_job(queue):
    assert queue.enqueue("site:a", "site_check", Priority.HIGH) is not None
    assert queue.enqueue("site:a", "site_check", Priority.HIGH) is None
    task = queue.claim("w")
    assert queue.enqueue("site:a", "site_check", Priority.HIGH) is None  # still running
    queue.complete(task)
    assert queue.enqueue("site:a", "site_check", Priority.HIGH) is not None


def test_backoff_is_capped_full_jitter():
    backoff = Backoff(2.0, 60.0, random.Random(1))
    assert backoff.ceiling(0) == 2.0
    assert backoff.ceiling(3) == 16.0
    assert backoff.ceiling(10) == 60.0
    delays = [backoff.delay(3) for _ in range(500)]
    assert min(delays) >= 0.0
    assert max(delays) <= 16.0
    assert min(delays) < 2.0  # full jitter: delays spread down to zero
    assert max(delays) > 14.0


def test_retry_schedules_with_backoff_then_fails(queue, clock):
    task = queue.enqueue("site:a", "site_check", Priority.HIGH, max_retries=3)
    for attempt in range(3):
        claimed = queue.claim("w")
        assert claimed.id == task.id
        assert claimed.retry_count == attempt
        assert queue.fail(claimed, f"boom {attempt}") == "retrying"
        row = queue.get(task.id)
        delay = (parse_timestamp(row.scheduled_at) - clock.now()).total_seconds()
        assert 0.0 <= delay <= queue.backoff.ceiling(attempt)
        assert row.status == "retrying"
        assert row.error_message == f"boom {attempt}"
        clock.advance(queue.backoff.ceiling(attempt) + 0.001)
    last = queue.claim("w")
    assert queue.fail(last, "boom final") == "failed"
    row = queue.get(task.id)
    assert row.status == "failed"
    assert row.error_message == "boom final"
    assert row.retry_count == 3
    assert events(queue.db, task.id).count("task.retrying") == 3
    assert events(queue.db, task.id)[-1] == "task.failed"


def test_late_completion_by_old_worker_is_stale(queue):
    queue.enqueue("site:a", "site_check", Priority.HIGH)
    task = queue.claim("w1")
    assert queue.fail(task, "timed out", timed_out=True) == "retrying"
    assert queue.complete(task) is False
    assert queue.fail(task, "again") == "stale"


def test_every_change_writes_an_audit_row(queue):
    task = queue.enqueue("site:a", "site_check", Priority.HIGH)
    queue.complete(queue.claim("w"), {"ok": True}, "up")
    assert events(queue.db, task.id) == ["task.enqueued", "task.started", "task.completed"]


def test_recover_running_requeues_and_logs(queue, db):
    first = queue.enqueue("site:a", "site_check", Priority.HIGH)
    second = queue.enqueue("site:b", "site_check", Priority.HIGH)
    queue.claim("w1")
    queue.claim("w2")
    recovered = queue.recover_running()
    assert {task.id for task in recovered} == {first.id, second.id}
    assert queue.counts() == {"queued": 2}
    row = db.read().execute("SELECT details FROM operation_log WHERE event_type = "
                            "'daemon.recovered'").fetchone()
    assert first.id in row[0]
    assert second.id in row[0]


def test_recover_fails_task_that_always_crashes(queue):
    task = queue.enqueue("site:a", "site_check", Priority.HIGH, max_retries=1)
    queue.claim("w")
    queue.recover_running()
    queue.claim("w")
    queue.recover_running()
    assert queue.get(task.id).status == "failed"


def test_no_duplicate_claims_with_eight_threads(db):
    queue = TaskQueue(db)
    for index in range(400):
        queue.enqueue(f"job-{index}", "noop", Priority.HIGH, coalesce=False)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name):
        while (task := queue.claim(name)) is not None:
            with lock:
                claimed.append(task.id)
            queue.complete(task)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 400
    assert len(set(claimed)) == 400


CLAIMER = """
import sys
from mitod.store import Database
from mitod.engine.queue import TaskQueue
db = Database(sys.argv[1]).open()
queue = TaskQueue(db)
print("ready", flush=True)
sys.stdin.readline()  # both processes start claiming together
ids = []
while (task := queue.claim(sys.argv[2])) is not None:
    ids.append(task.id)
    queue.complete(task)
print("\\n".join(ids))
"""


def test_no_duplicate_claims_with_two_processes(db, tmp_path):
    queue = TaskQueue(db)
    for index in range(600):
        queue.enqueue(f"job-{index}", "noop", Priority.HIGH, coalesce=False)
    env = {"PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, db.path, f"proc{n}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env)
                 for n in range(2)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert all(outputs)  # both processes claimed some tasks
    everything = outputs[0] + outputs[1]
    assert len(everything) == 600
    assert len(set(everything)) == 600


def test_rebalance_coalesces_duplicates_and_defers_low(queue, clock):
    from mitod.engine.rebalance import LOW_DEFER, Rebalancer

    for index in range(60):
        queue.enqueue(f"site:s{index}", "site_check", Priority.HIGH, coalesce=False)
        queue.enqueue(f"site:s{index}", "site_check", Priority.HIGH, coalesce=False)
    for index in range(10):
        queue.enqueue(f"report{index}", "progress_report", Priority.LOW)
    rebalancer = Rebalancer(queue, high_water=100)
    summary = rebalancer.check()
    assert summary["depth"] == 130
    assert summary["coalesced"] == 60
    assert summary["deferred_low"] == 10
    assert queue.depth() == 70
    assert rebalancer.check() is None  # at most one rebalance per MIN_GAP
    clock.advance(LOW_DEFER - 1)
    claimed = []
    while (task := queue.claim("w")) is not None:
        claimed.append(task.name)
        queue.complete(task)
    assert len(claimed) == 60
    assert not any(name.startswith("report") for name in claimed)
    clock.advance(2)
    assert queue.claim("w").name.startswith("report")


def test_rebalance_below_high_water_does_nothing(queue):
    from mitod.engine.rebalance import Rebalancer

    queue.enqueue("a", "site_check", Priority.HIGH)
    assert Rebalancer(queue, high_water=100).check() is None


def test_shift_due_times_follows_clock_step(queue, clock):
    task = queue.enqueue("later", "site_check", Priority.HIGH, delay=60)
    clock.advance(-3600)  # the wall clock stepped back an hour
    queue.shift_due_times(-3600)
    clock.advance(61)
    assert queue.claim("w").id == task.id
