"""The ``emergency_optimization`` job: ease resource pressure and record its likely cause.

``system_health`` enqueues it when CPU or memory is above its threshold, and
an operator may run it by name. One run:

1. ``gc.collect()``, recording how many unreachable objects it found.
2. Shrinks the page cache of every SQLite connection to ``EMERGENCY_CACHE_KIB``.
   ``system_health`` restores the default size when it ends the pressure.
3. Enters resource pressure: LOW work is deferred and mitod's threads run at
   a higher nice value (see :mod:`mitod.jobs.pressure`).
4. Records the five processes using the most CPU and the five using the most
   memory, so an operator can see the cause.

It never signals, kills or renices another process. The command lines of
processes are left out of the record because they may contain secrets.
"""

import gc
import logging
import os
import time

import psutil

from mitod.engine.tasks import Task

log = logging.getLogger(__name__)

EMERGENCY_CACHE_KIB = 1024
TOP_COUNT = 5

# psutil computes a process's CPU % from two readings; this is the time between them.
CPU_SAMPLE_SECONDS = 0.5

_PROCESS_ATTRS = ["pid", "name", "username", "memory_info", "memory_percent"]


def run(engine, task: Task) -> tuple[dict, str]:
    reason = task.payload.get("reason") or f"requested ({task.origin})"

    gc_collected = gc.collect()
    engine.db.set_cache_size(EMERGENCY_CACHE_KIB)
    entered = engine.pressure.enter(engine.clock.timestamp(), reason)
    top = top_processes(TOP_COUNT, CPU_SAMPLE_SECONDS)

    result = {
        "reason": reason,
        "trigger": task.payload,
        "gc_collected": gc_collected,
        "cache_kib": EMERGENCY_CACHE_KIB,
        "pressure_entered": entered,
        "pressure": engine.pressure.snapshot(),
        "system": engine.last_system_sample,
        **top,
    }
    summary = _summary(result)
    engine.record_event("maintenance.emergency", f"Emergency optimization: {summary}", result,
                        task.id)
    log.warning("Emergency optimization by task %s (%s): %s", task.label, reason, summary)
    return result, summary


def top_processes(count: int, interval: float) -> dict:
    """Return the ``count`` processes with the highest CPU % and the highest resident memory.

    CPU % is taken over ``interval`` seconds and may exceed 100 for a process
    with threads on several CPUs. Processes that end during the sampling, or
    that this user may not inspect, are counted in ``processes_skipped``.
    """
    processes = []
    skipped = 0
    for process in psutil.process_iter(_PROCESS_ATTRS):
        try:
            process.cpu_percent(None)  # the first reading only sets the baseline
        except psutil.Error:
            skipped += 1
            continue
        processes.append(process)

    time.sleep(interval)

    own_pid = os.getpid()
    rows = []
    for process in processes:
        try:
            cpu = process.cpu_percent(None)
        except psutil.Error:
            skipped += 1
            continue
        rows.append(_process_row(process, cpu, own_pid))

    by_cpu = sorted(rows, key=lambda row: row["cpu_percent"], reverse=True)[:count]
    by_memory = sorted(rows, key=lambda row: row["rss_bytes"], reverse=True)[:count]
    return {"top_cpu": by_cpu, "top_memory": by_memory, "processes_seen": len(rows),
            "processes_skipped": skipped, "cpu_sample_s": interval}


def _process_row(process: psutil.Process, cpu: float, own_pid: int) -> dict:
    # process_iter stored these attributes, with None for any it was denied.
    info = process.info
    memory = info.get("memory_info")
    memory_percent = info.get("memory_percent")
    return {
        "pid": process.pid,
        "name": info.get("name"),
        "username": info.get("username"),
        "cpu_percent": round(cpu, 1),
        "rss_bytes": memory.rss if memory is not None else 0,
        "memory_percent": round(memory_percent, 1) if memory_percent is not None else None,
        "is_mitod": process.pid == own_pid,
    }


def _describe(row: dict | None, field: str, unit: str) -> str:
    if row is None:
        return "none"
    value = row[field] / 2**20 if field == "rss_bytes" else row[field]
    return f"{row['name']} (pid {row['pid']}) {value:.1f} {unit}"


def _summary(result: dict) -> str:
    top_cpu = result["top_cpu"][0] if result["top_cpu"] else None
    top_memory = result["top_memory"][0] if result["top_memory"] else None
    state = "entered resource pressure" if result["pressure_entered"] else "already under pressure"
    return (f"{state}, gc collected {result['gc_collected']} objects, SQLite cache "
            f"{result['cache_kib']} KiB; top CPU {_describe(top_cpu, 'cpu_percent', '%')}, "
            f"top memory {_describe(top_memory, 'rss_bytes', 'MiB')}")
