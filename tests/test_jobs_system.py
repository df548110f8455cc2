"""The system_health job against the real host: thresholds, triggers, pressure and records.

CPU use cannot be forced either way, so crossings come from thresholds set
where the host must cross them (memory above 1 %, free disk below 100 %).
"""

import json
import logging

import pytest

from mitod.config import load_config
from mitod.engine.engine import Engine
from mitod.jobs import catalog, system_health
from mitod.store import Database
from mitod.store.database import DEFAULT_CACHE_KIB
from tests.harness import render_config


@pytest.fixture(autouse=True)
def short_cpu_window(monkeypatch):
    # The real window is 1 s; a shorter one measures the same way, only faster.
    monkeypatch.setattr(system_health, "CPU_SAMPLE_SECONDS", 0.1)


def write_config(tmp_path, name="mitod.toml", **system):
    settings = {"cpu_percent": 100, "memory_percent": 100, "disk_free_percent": 0,
                "disk_paths": [str(tmp_path)]}
    settings.update(system)
    sections = {
        "daemon": {"database": "mitod.db", "pidfile": "mitod.pid", "socket": "mitod.sock"},
        "log": {"file": "logs/mitod.log"},
        "system": settings,
        "optimization": {"cleanup": [{"path": "cache", "older_than": "1d"}]},
    }
    path = tmp_path / name
    path.write_text(render_config(sections, []))
    return load_config(str(path))


@pytest.fixture
def make_engine(tmp_path):
    engines = []

    def make(**system) -> Engine:
        config = write_config(tmp_path, **system)
        engine = Engine(config, Database(config.daemon.database).open())
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        # Entering pressure renices this test process. Leaving restores the nice
        # value where the user may lower it again (root or CAP_SYS_NICE).
        engine.pressure.leave()
        engine.db.close()


def claim(engine, name):
    spec = catalog.find_job(engine.config, name)
    engine.queue.enqueue(spec.name, spec.kind, spec.priority, coalesce=False)
    task = engine.queue.claim("test-worker")
    assert task is not None and task.name == name, f"claimed {task} instead of {name}"
    return task


def rows(engine, sql, params=()):
    return engine.db.read().execute(sql, params).fetchall()


def tasks_named(engine, name):
    return rows(engine, "SELECT * FROM autonomous_tasks WHERE name = ?", (name,))


def events(engine, event_type):
    return rows(engine, "SELECT * FROM operation_log WHERE event_type = ? ORDER BY id",
                (event_type,))


def health_rows(engine):
    return rows(engine, "SELECT * FROM check_results WHERE job = 'system_health' ORDER BY id")


def test_within_thresholds_records_ok(make_engine, tmp_path):
    engine = make_engine()
    task = claim(engine, "system_health")

    result, summary = system_health.run(engine, task)

    [row] = health_rows(engine)
    assert row["ok"] == 1
    assert row["error"] is None
    assert row["task_id"] == task.id
    assert summary.startswith("within thresholds")
    assert result["crossed"] == {}
    assert result["triggered"] == {}
    assert tasks_named(engine, "emergency_optimization") == []
    assert tasks_named(engine, "disk_cleanup") == []


def test_details_and_samples_hold_every_measure(make_engine, tmp_path):
    engine = make_engine()
    task = claim(engine, "system_health")

    system_health.run(engine, task)

    [row] = health_rows(engine)
    details = json.loads(row["details"])
    for key in ("cpu_percent", "memory_percent", "swap_percent", "load_per_core",
                "load_average", "disks", "thresholds"):
        assert key in details, key
    assert str(tmp_path) in details["disks"]
    names = {row["name"] for row in rows(engine, "SELECT name FROM metric_samples "
                                                 "WHERE source = 'system'")}
    assert names == {"cpu_percent", "memory_percent", "swap_percent", "load_per_core",
                     f"disk_free_percent:{tmp_path}"}


def test_last_system_sample_set(make_engine, tmp_path):
    engine = make_engine()
    task = claim(engine, "system_health")

    result, _ = system_health.run(engine, task)

    sample = engine.last_system_sample
    assert sample["memory_percent"] == result["memory_percent"]
    assert sample["cpu_percent"] == result["cpu_percent"]
    assert sample["load_per_core"] == result["load_per_core"]
    assert sample["swap_percent"] == result["swap_percent"]
    assert sample["disk_free_percent"] == {str(tmp_path): result["disks"][str(tmp_path)]
                                           ["free_percent"]}
    assert sample["sampled_at"] == health_rows(engine)[0]["started_at"]


def test_memory_above_threshold_enqueues_emergency(make_engine, caplog):
    engine = make_engine(memory_percent=1)
    task = claim(engine, "system_health")

    with caplog.at_level(logging.WARNING, logger="mitod.jobs.system_health"):
        result, _ = system_health.run(engine, task)

    [row] = health_rows(engine)
    assert row["ok"] == 0
    assert row["error"].startswith("memory ")
    assert "% above threshold 1 %" in row["error"]
    [emergency] = tasks_named(engine, "emergency_optimization")
    assert emergency["priority"] == 1
    assert emergency["origin"] == "threshold"
    assert result["triggered"] == {"emergency_optimization": emergency["id"]}
    assert len(events(engine, "threshold.exceeded")) == 1
    [warning] = [record.getMessage() for record in caplog.records
                 if record.getMessage().startswith("Threshold crossed")]
    assert task.short_id in warning
    assert "memory " in warning


def test_two_crossing_checks_enqueue_one_emergency(make_engine, caplog):
    engine = make_engine(memory_percent=1)
    # Claim both checks first: once the emergency is queued it would be claimed first.
    first = claim(engine, "system_health")
    second = claim(engine, "system_health")

    with caplog.at_level(logging.WARNING, logger="mitod.jobs.system_health"):
        system_health.run(engine, first)
        result, _ = system_health.run(engine, second)

    assert len(tasks_named(engine, "emergency_optimization")) == 1
    assert result["triggered"] == {"emergency_optimization": None}
    assert len(events(engine, "threshold.exceeded")) == 1
    crossing_logs = [record for record in caplog.records
                     if record.getMessage().startswith("Threshold crossed")]
    assert len(crossing_logs) == 1
    assert [row["ok"] for row in health_rows(engine)] == [0, 0]


def test_low_disk_enqueues_disk_cleanup(make_engine, tmp_path):
    engine = make_engine(disk_free_percent=100)
    task = claim(engine, "system_health")

    result, _ = system_health.run(engine, task)

    [cleanup] = tasks_named(engine, "disk_cleanup")
    assert cleanup["priority"] == 3
    assert json.loads(cleanup["payload"])["check_task"] == task.id
    assert result["triggered"] == {"disk_cleanup": cleanup["id"]}
    assert tasks_named(engine, "emergency_optimization") == []
    [row] = health_rows(engine)
    assert row["error"].startswith(f"free disk on {tmp_path} ")
    assert row["error"].endswith("% below 100 %")


def test_error_names_every_crossed_threshold(make_engine, tmp_path):
    engine = make_engine(memory_percent=1, disk_free_percent=100)
    task = claim(engine, "system_health")

    system_health.run(engine, task)

    [row] = health_rows(engine)
    parts = row["error"].split("; ")
    assert len(parts) == 2
    assert parts[0].startswith("memory ")
    assert parts[1].startswith(f"free disk on {tmp_path} ")
    assert len(events(engine, "threshold.exceeded")) == 2


def test_missing_disk_path_reported_per_path(make_engine, tmp_path):
    missing = tmp_path / "missing"
    engine = make_engine(disk_paths=[str(tmp_path), str(missing)])
    task = claim(engine, "system_health")

    result, summary = system_health.run(engine, task)

    assert str(missing) in result["disk_errors"]
    assert "could not be measured" in result["disk_errors"][str(missing)]
    assert str(tmp_path) in result["disks"]
    assert str(missing) not in result["disks"]
    [row] = health_rows(engine)
    assert row["ok"] == 0
    assert str(missing) in row["error"]
    assert tasks_named(engine, "disk_cleanup") == []
    assert engine.last_system_sample["disk_errors"] == result["disk_errors"]


def test_recovery_leaves_pressure_and_restores_cache(make_engine):
    engine = make_engine()
    # What an emergency optimization leaves behind.
    engine.db.set_cache_size(1024)
    engine.pressure.enter(engine.clock.timestamp(), "test pressure")
    task = claim(engine, "system_health")

    result, _ = system_health.run(engine, task)

    assert result["pressure_left"] is True
    assert engine.pressure.active is False
    cache = engine.db.read().execute("PRAGMA cache_size").fetchone()[0]
    assert cache == -DEFAULT_CACHE_KIB


def test_pressure_kept_while_memory_high(make_engine):
    engine = make_engine(memory_percent=1)
    engine.pressure.enter(engine.clock.timestamp(), "test pressure")
    task = claim(engine, "system_health")

    result, _ = system_health.run(engine, task)

    assert result["pressure_left"] is False
    assert engine.pressure.active is True


def test_crossing_cleared_when_back_within(make_engine, tmp_path, caplog):
    engine = make_engine(memory_percent=1)
    first = claim(engine, "system_health")
    second = claim(engine, "system_health")
    system_health.run(engine, first)
    engine.config = write_config(tmp_path, name="relaxed.toml", memory_percent=100)

    with caplog.at_level(logging.INFO, logger="mitod.jobs.system_health"):
        result, _ = system_health.run(engine, second)

    assert result["ok"] is True
    [cleared] = events(engine, "threshold.cleared")
    assert json.loads(cleared["details"])["measure"] == "memory_percent"
    assert cleared["message"].startswith("Back within threshold: memory ")
    assert any(record.getMessage().startswith("Back within threshold") for record in
               caplog.records)
    assert [row["ok"] for row in health_rows(engine)] == [0, 1]
