"""Benchmark the queue on the real store: enqueue to completion of no-op tasks.

Each task writes its row and its three audit rows (enqueued, started,
completed), as in the daemon. Reports tasks per second and the longest wait
for the write lock.

With ``--batch 1`` the producer enqueues one task per transaction, as
``mitoctl run`` and threshold triggers do. With a larger batch it enqueues
several per transaction, as the scheduler does with the jobs due in one tick.

    .venv/bin/python scripts/bench_queue.py [--tasks N] [--workers N] [--batch N]
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitod.engine.executor import ClaimPolicy, Executor  # noqa: E402
from mitod.engine.queue import TaskQueue, TaskRequest  # noqa: E402
from mitod.engine.tasks import Priority  # noqa: E402
from mitod.store import Database  # noqa: E402


def run_once(tasks: int, workers: int, producers: int, batch: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="mitod-bench-") as folder:
        db = Database(str(Path(folder) / "bench.db")).open()
        queue = TaskQueue(db)
        done = threading.Event()
        finished = [0]
        lock = threading.Lock()

        def noop(task):
            with lock:
                finished[0] += 1
                if finished[0] == tasks:
                    done.set()
            return None, ""

        executor = Executor(queue, {"noop": noop}, workers, lambda: ClaimPolicy())
        executor.start()
        db.stats.max_wait = 0.0

        def produce(count: int, offset: int) -> None:
            for first in range(0, count, batch):
                queue.enqueue_many([
                    TaskRequest(f"bench-{offset + index}", "noop", Priority.HIGH, coalesce=False)
                    for index in range(first, min(first + batch, count))])

        per_producer = tasks // producers
        threads = [threading.Thread(target=produce, args=(per_producer, n * per_producer))
                   for n in range(producers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.wait(600)
        elapsed = time.perf_counter() - started
        executor.stop(5)
        completed = db.read().execute(
            "SELECT COUNT(*) FROM autonomous_tasks WHERE status = 'completed'").fetchone()[0]
        audit = db.read().execute("SELECT COUNT(*) FROM operation_log").fetchone()[0]
        result = {"tasks": tasks, "completed": completed, "audit_rows": audit,
                  "seconds": elapsed, "tasks_per_s": tasks / elapsed,
                  "max_write_wait_ms": db.stats.max_wait * 1000}
        db.close()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per run")
    parser.add_argument("--workers", type=int, default=4, help="executor workers")
    parser.add_argument("--producers", type=int, default=1, help="threads that enqueue")
    parser.add_argument("--batch", type=int, default=1,
                        help="tasks enqueued per transaction by each producer")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    args = parser.parse_args()
    results = [run_once(args.tasks, args.workers, args.producers, args.batch)
               for _ in range(args.runs)]
    for result in results:
        print(f"  {result['tasks']} tasks ({result['completed']} completed, "
              f"{result['audit_rows']} audit rows) in {result['seconds']:.2f} s: "
              f"{result['tasks_per_s']:.0f} tasks/s, longest write wait "
              f"{result['max_write_wait_ms']:.1f} ms")
    print(f"queue throughput, {args.workers} workers, {args.producers} producer(s), "
          f"batch {args.batch}: median "
          f"{statistics.median(r['tasks_per_s'] for r in results):.0f} tasks/s; longest write "
          f"wait {max(r['max_write_wait_ms'] for r in results):.1f} ms")


if __name__ == "__main__":
    main()
