"""The ``system_health`` job: measure the host, compare with the thresholds, react to crossings.

Measures: CPU %, memory %, swap %, the 1-minute load average per logical CPU,
and the free-space percentage of each ``[system] disk_paths`` entry.

CPU % is measured over a blocking window of ``CPU_SAMPLE_SECONDS`` during
the check. psutil's non-blocking ``cpu_percent()`` compares with the previous
call made anywhere in the process, returns a meaningless 0.0 the first time,
and would measure a shorter span whenever another caller (such as a metrics
endpoint) read it in between. A window of its own avoids both.

Free disk % is 100 minus psutil's ``percent``, the Use% that ``df`` shows, so
space reserved for root counts as used.

Reactions:

- CPU or memory above its threshold enqueues ``emergency_optimization``
  (the queue keeps at most one queued or running).
- Free disk below ``disk_free_percent`` on any path enqueues ``disk_cleanup``.
- CPU and memory both back within their thresholds end resource pressure, if
  an emergency started it, and restore SQLite's page cache to its default size.

Each check stores one ``check_results`` row (job ``system_health``) and one
``metric_samples`` row per measure. A threshold crossing is logged at WARNING
and written to ``operation_log`` as ``threshold.exceeded`` once, when it
starts, and as ``threshold.cleared`` when it ends. The previous state comes
from the previous check's row, so a restart does not repeat the crossing.
"""

import json
import logging
import os
import time

import psutil

from mitod.engine.tasks import Task
from mitod.store.database import DEFAULT_CACHE_KIB
from mitod.store.oplog import add_event
from mitod.store.results import add_check_result, add_samples, latest_result

log = logging.getLogger(__name__)

JOB = "system_health"
CPU_SAMPLE_SECONDS = 1.0
CPU = "cpu_percent"
MEMORY = "memory_percent"
DISK_PREFIX = "disk_free_percent:"


def run(engine, task: Task) -> tuple[dict, str]:
    thresholds = engine.config.system
    started_at = engine.clock.timestamp()
    started = time.monotonic()
    measures = measure(thresholds.disk_paths)
    duration_ms = (time.monotonic() - started) * 1000

    crossed = find_crossings(measures, thresholds)
    details = dict(measures)
    details["thresholds"] = {CPU: thresholds.cpu_percent, MEMORY: thresholds.memory_percent,
                             "disk_free_percent": thresholds.disk_free_percent}
    details["crossed"] = crossed
    problems = list(crossed.values()) + list(measures["disk_errors"].values())
    details["ok"] = not problems

    with engine.db.write() as conn:
        previous = _previous_state(conn)
        add_check_result(conn, JOB, started_at, duration_ms, not problems, None,
                         "; ".join(problems) or None, details, task.id)
        add_samples(conn, engine.clock, "system", sample_values(measures))
        started_crossings, ended_crossings = _record_transitions(
            conn, engine.clock, task, previous["crossed"], crossed, measures, thresholds)

    engine.last_system_sample = _last_sample(measures, started_at)
    _log_transitions(task, started_crossings, ended_crossings, crossed, measures, thresholds)
    _log_disk_errors(task, previous["disk_errors"], measures["disk_errors"])

    result = dict(details)
    result["triggered"] = _react(engine, task, crossed, measures)
    result["pressure_left"] = _leave_pressure(engine, task, crossed)
    return result, "; ".join(problems) if problems else _within_text(measures)


# -- measuring --------------------------------------------------------------

def measure(disk_paths) -> dict:
    """Measure the host now. A disk path that cannot be read gets an entry in ``disk_errors``."""
    cpu = psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS)
    memory = psutil.virtual_memory().percent
    swap = psutil.swap_memory().percent
    load = os.getloadavg()
    cores = psutil.cpu_count() or 1
    disks: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for path in disk_paths:
        try:
            disks[path] = disk_free(path)
        except OSError as error:
            reason = error.strerror or str(error)
            errors[path] = f"disk path {path} could not be measured: {reason}"
    return {
        CPU: cpu,
        "cpu_sample_s": CPU_SAMPLE_SECONDS,
        MEMORY: memory,
        "swap_percent": swap,
        "load_average": [round(value, 2) for value in load],
        "cpu_count": cores,
        "load_per_core": round(load[0] / cores, 3),
        "disks": disks,
        "disk_errors": errors,
    }


def disk_free(path: str) -> dict:
    """Return free space on the file system that contains ``path``, or raise OSError."""
    usage = psutil.disk_usage(path)
    return {"free_percent": round(100.0 - usage.percent, 1), "free_bytes": usage.free,
            "total_bytes": usage.total}


def sample_values(measures: dict) -> dict[str, float]:
    values = {CPU: measures[CPU], MEMORY: measures[MEMORY],
              "swap_percent": measures["swap_percent"], "load_per_core": measures["load_per_core"]}
    for path, disk in measures["disks"].items():
        values[DISK_PREFIX + path] = disk["free_percent"]
    return values


def find_crossings(measures: dict, thresholds) -> dict[str, str]:
    """Map each crossed threshold's key to its message.

    For example ``"memory 91.2 % above threshold 80 %"``.
    """
    crossed = {}
    if measures[CPU] > thresholds.cpu_percent:
        crossed[CPU] = f"CPU {measures[CPU]:.1f} % above threshold {thresholds.cpu_percent:g} %"
    if measures[MEMORY] > thresholds.memory_percent:
        crossed[MEMORY] = (f"memory {measures[MEMORY]:.1f} % above threshold "
                           f"{thresholds.memory_percent:g} %")
    for path, disk in measures["disks"].items():
        if disk["free_percent"] < thresholds.disk_free_percent:
            crossed[DISK_PREFIX + path] = (f"free disk on {path} {disk['free_percent']:.1f} % "
                                           f"below {thresholds.disk_free_percent:g} %")
    return crossed


# -- recording --------------------------------------------------------------

def _previous_state(conn) -> dict:
    row = latest_result(conn, JOB)
    details = json.loads(row["details"]) if row is not None and row["details"] else {}
    return {"crossed": details.get("crossed", {}), "disk_errors": details.get("disk_errors", {})}


def _record_transitions(conn, clock, task: Task, previous: dict, crossed: dict, measures: dict,
                        thresholds) -> tuple[list[str], list[str]]:
    started = [key for key in crossed if key not in previous]
    ended = [key for key in previous if key not in crossed]
    for key in started:
        add_event(conn, clock, "threshold.exceeded", f"Threshold crossed: {crossed[key]}",
                  _event_details(key, measures, thresholds), task.id)
    for key in ended:
        add_event(conn, clock, "threshold.cleared",
                  f"Back within threshold: {_current_text(key, measures, thresholds)}",
                  _event_details(key, measures, thresholds), task.id)
    return started, ended


def _event_details(key: str, measures: dict, thresholds) -> dict:
    return {"measure": key, "value": _value(key, measures),
            "threshold": _threshold(key, thresholds)}


def _value(key: str, measures: dict) -> float | None:
    if key.startswith(DISK_PREFIX):
        disk = measures["disks"].get(key[len(DISK_PREFIX):])
        return disk["free_percent"] if disk else None
    return measures.get(key)


def _threshold(key: str, thresholds) -> float:
    if key.startswith(DISK_PREFIX):
        return thresholds.disk_free_percent
    return getattr(thresholds, key)


def _current_text(key: str, measures: dict, thresholds) -> str:
    value = _value(key, measures)
    threshold = _threshold(key, thresholds)
    if key.startswith(DISK_PREFIX):
        path = key[len(DISK_PREFIX):]
        if value is None:
            return f"free disk on {path} is no longer measured"
        return f"free disk on {path} {value:.1f} % (threshold {threshold:g} %)"
    name = "CPU" if key == CPU else "memory"
    return f"{name} {value:.1f} % (threshold {threshold:g} %)"


def _last_sample(measures: dict, sampled_at: str) -> dict:
    return {
        CPU: measures[CPU],
        MEMORY: measures[MEMORY],
        "swap_percent": measures["swap_percent"],
        "load_per_core": measures["load_per_core"],
        "disk_free_percent": {path: disk["free_percent"]
                              for path, disk in measures["disks"].items()},
        "disk_errors": dict(measures["disk_errors"]),
        "sampled_at": sampled_at,
    }


def _log_transitions(task: Task, started: list[str], ended: list[str], crossed: dict,
                     measures: dict, thresholds) -> None:
    for key in started:
        log.warning("Threshold crossed (task %s): %s", task.label, crossed[key])
    for key in ended:
        log.info("Back within threshold (task %s): %s", task.label,
                 _current_text(key, measures, thresholds))


def _log_disk_errors(task: Task, previous: dict, current: dict) -> None:
    for path, message in current.items():
        if path not in previous:
            log.warning("%s (task %s); check [system] disk_paths", message, task.label)
    for path in previous:
        if path not in current:
            log.info("Disk path %s can be measured again (task %s)", path, task.label)


def _within_text(measures: dict) -> str:
    disks = ", ".join(f"free disk {path} {disk['free_percent']:.1f} %"
                      for path, disk in measures["disks"].items())
    text = (f"within thresholds: CPU {measures[CPU]:.1f} %, memory {measures[MEMORY]:.1f} %, "
            f"swap {measures['swap_percent']:.1f} %, load {measures['load_per_core']:.2f} per CPU")
    return f"{text}, {disks}" if disks else text


# -- reacting ---------------------------------------------------------------

def _react(engine, task: Task, crossed: dict, measures: dict) -> dict[str, str | None]:
    """Enqueue the on-demand jobs that the crossings call for; map each to its task id.

    A job mapped to None was not enqueued because one is already queued or running.
    """
    triggered: dict[str, str | None] = {}
    pressure = [crossed[key] for key in (CPU, MEMORY) if key in crossed]
    if pressure:
        reason = "; ".join(pressure)
        emergency = engine.trigger("emergency_optimization", reason, {
            "reason": reason, CPU: measures[CPU], MEMORY: measures[MEMORY],
            "check_task": task.id})
        triggered["emergency_optimization"] = emergency.id if emergency else None
    low_disks = [message for key, message in crossed.items() if key.startswith(DISK_PREFIX)]
    if low_disks:
        reason = "; ".join(low_disks)
        cleanup = engine.trigger("disk_cleanup", reason, {
            "reason": reason, "check_task": task.id,
            "disk_free_percent": {path: disk["free_percent"]
                                  for path, disk in measures["disks"].items()}})
        triggered["disk_cleanup"] = cleanup.id if cleanup else None
    return triggered


def _leave_pressure(engine, task: Task, crossed: dict) -> bool:
    """End resource pressure once CPU and memory are within their thresholds."""
    if CPU in crossed or MEMORY in crossed or not engine.pressure.active:
        return False
    if not engine.pressure.leave():
        return False
    # emergency_optimization shrank the page cache when the pressure began.
    engine.db.set_cache_size(DEFAULT_CACHE_KIB)
    log.info("CPU and memory are within their thresholds (task %s); SQLite's page cache is "
             "back to %d KiB", task.label, DEFAULT_CACHE_KIB)
    return True
