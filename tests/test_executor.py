"""The executor: handler errors, timeouts with replacement workers, wake-ups, revival."""

import logging
import threading
import time

import pytest

from mitod.engine.executor import ClaimPolicy, Executor
from mitod.engine.queue import TaskQueue
from mitod.engine.tasks import Priority
from mitod.store import Database
from tests.harness import wait_for


@pytest.fixture
def queue(tmp_path):
    db = Database(str(tmp_path / "e.db")).open()
    # A long idle wait: a test that passes quickly proves a condition woke the workers.
    yield TaskQueue(db, max_idle_wait=60.0)
    db.close()


def make_executor(queue, handlers, size=2, default_timeout=30.0):
    executor = Executor(queue, handlers, size, lambda: ClaimPolicy(), default_timeout)
    executor.start()
    return executor


def status_of(queue, task_id):
    return queue.get(task_id).status


def test_completes_task_with_result(queue):
    executor = make_executor(queue, {"noop": lambda task: ({"value": 42}, "done")})
    try:
        task = queue.enqueue("job", "noop", Priority.HIGH)
        wait_for(lambda: status_of(queue, task.id) == "completed", 5)
        assert queue.get(task.id).result == {"value": 42}
    finally:
        executor.stop(2)


def test_enqueue_wakes_idle_workers(queue):
    executor = make_executor(queue, {"noop": lambda task: (None, "")})
    try:
        wait_for(lambda: executor.busy_count() == 0 and all(
            w.is_alive() for w in executor.workers.values()), 5)
        time.sleep(0.2)  # let every worker reach its idle wait (up to 60 s long)
        task = queue.enqueue("job", "noop", Priority.HIGH)
        wait_for(lambda: status_of(queue, task.id) == "completed", 5,
                 message="an idle worker to be woken by the enqueue")
    finally:
        executor.stop(2)


def test_handler_exception_is_failed_attempt(queue, caplog):
    def broken(task):
        raise ValueError("disk is on fire")

    executor = make_executor(queue, {"broken": broken})
    caplog.set_level(logging.ERROR)
    try:
        task = queue.enqueue("job", "broken", Priority.HIGH, max_retries=0)
        wait_for(lambda: status_of(queue, task.id) == "failed", 5)
        assert queue.get(task.id).error_message == "disk is on fire"
        assert any("Traceback" in record.getMessage() for record in caplog.records)
        assert all(worker.is_alive() for worker in executor.workers.values())
    finally:
        executor.stop(2)


def test_unknown_kind_fails_with_clear_message(queue):
    executor = make_executor(queue, {})
    try:
        task = queue.enqueue("job", "mystery", Priority.HIGH, max_retries=0)
        wait_for(lambda: status_of(queue, task.id) == "failed", 5)
        assert "no handler for task kind 'mystery'" in queue.get(task.id).error_message
    finally:
        executor.stop(2)


def test_timeout_abandons_worker_and_keeps_pool_size(queue):
    release = threading.Event()
    calls = []

    def stuck(task):
        calls.append(task.retry_count)
        if task.retry_count == 0:
            release.wait(30)  # stuck past its 0.3 s timeout on the first attempt
            return {"late": True}, "late"
        return {"late": False}, "second attempt"

    executor = make_executor(queue, {"stuck": stuck}, size=2)
    try:
        first_workers = set(executor.workers)
        task = queue.enqueue("job", "stuck", Priority.HIGH, timeout=0.3, max_retries=2)
        wait_for(lambda: status_of(queue, task.id) == "completed", 10)
        row = queue.get(task.id)
        assert row.retry_count == 1
        assert row.result == {"late": False}
        assert len(executor.workers) == 2
        assert set(executor.workers) != first_workers  # a replacement took the stuck one's place
        assert len(executor.abandoned) == 1
        events = [r[0] for r in queue.db.read().execute(
            "SELECT event_type FROM operation_log WHERE task_id = ? ORDER BY id", (task.id,))]
        assert "task.retrying" in events
        release.set()
        wait_for(lambda: not executor.abandoned[0].is_alive(), 5)
        assert queue.get(task.id).result == {"late": False}  # the late result was discarded
    finally:
        release.set()
        executor.stop(2)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_system_exit_in_handler_kills_only_that_worker(queue):
    def exits(task):
        raise SystemExit(3)

    executor = make_executor(queue, {"exits": exits}, size=2)
    events = []
    executor.on_thread_event = lambda kind, message, details: events.append(kind)
    try:
        task = queue.enqueue("job", "exits", Priority.HIGH, max_retries=0)
        wait_for(lambda: status_of(queue, task.id) == "failed", 5)
        wait_for(lambda: executor.dead_workers(), 5)
        replaced = executor.revive()
        assert len(replaced) == 1
        assert events == ["thread.restarted"]
        assert executor.dead_workers() == []
        assert len(executor.workers) == 2
    finally:
        executor.stop(2)


def test_stop_returns_tasks_still_running(queue):
    release = threading.Event()

    def slow(task):
        release.wait(30)
        return None, ""

    executor = make_executor(queue, {"slow": slow}, size=1)
    try:
        task = queue.enqueue("job", "slow", Priority.HIGH)
        wait_for(lambda: status_of(queue, task.id) == "running", 5)
        unfinished = executor.stop(0.2)
        assert [t.id for t in unfinished] == [task.id]
    finally:
        release.set()


def test_paused_policy_claims_only_operator_tasks(queue):
    executor = Executor(queue, {"noop": lambda task: (None, "")}, 1,
                        lambda: ClaimPolicy(operator_only=True))
    executor.start()
    try:
        scheduled = queue.enqueue("a", "noop", Priority.HIGH)
        operator = queue.enqueue("b", "noop", Priority.HIGH, origin="operator")
        wait_for(lambda: status_of(queue, operator.id) == "completed", 5)
        assert status_of(queue, scheduled.id) == "queued"
    finally:
        executor.stop(2)
