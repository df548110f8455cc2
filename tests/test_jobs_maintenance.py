"""Maintenance jobs on a real database and real folders: emergency, disk cleanup, optimization."""

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from mitod.clock import format_timestamp
from mitod.config import load_config
from mitod.engine.engine import Engine
from mitod.jobs import catalog, disk_cleanup, emergency, optimization
from mitod.store import Database
from tests.harness import render_config

DAY = 86400.0


def write_config(tmp_path, system=None, optimization_settings=None):
    sections = {
        "daemon": {"database": "mitod.db", "pidfile": "mitod.pid", "socket": "mitod.sock"},
        "log": {"file": "logs/mitod.log"},
        "system": {"disk_free_percent": 0, "disk_paths": [str(tmp_path)], **(system or {})},
        "optimization": {"cleanup": [{"path": "cache", "older_than": "1d"}],
                         **(optimization_settings or {})},
    }
    path = tmp_path / "mitod.toml"
    path.write_text(render_config(sections, []))
    return load_config(str(path))


@pytest.fixture
def make_engine(tmp_path):
    engines = []

    def make(system=None, optimization_settings=None) -> Engine:
        config = write_config(tmp_path, system, optimization_settings)
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


def make_file(path, age_days=0.0, size=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def ago(days: float) -> str:
    return format_timestamp(datetime.now(timezone.utc) - timedelta(days=days))


def count(engine, sql, params=()):
    return engine.db.read().execute(sql, params).fetchone()[0]


def events(engine, event_type):
    return engine.db.read().execute(
        "SELECT * FROM operation_log WHERE event_type = ?", (event_type,)).fetchall()


# -- emergency_optimization --------------------------------------------------

@pytest.fixture
def sleeper():
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def test_emergency_kills_nothing(make_engine, sleeper):
    engine = make_engine()
    task = claim(engine, "emergency_optimization")

    emergency.run(engine, task)

    assert sleeper.poll() is None


def test_emergency_records_top_processes(make_engine, sleeper):
    engine = make_engine()
    task = claim(engine, "emergency_optimization")

    result, summary = emergency.run(engine, task)

    expected = min(5, result["processes_seen"])
    assert result["processes_seen"] >= 2  # at least pytest and the sleeper
    assert len(result["top_cpu"]) == expected
    assert len(result["top_memory"]) == expected
    cpu = [row["cpu_percent"] for row in result["top_cpu"]]
    assert cpu == sorted(cpu, reverse=True)
    memory = [row["rss_bytes"] for row in result["top_memory"]]
    assert memory == sorted(memory, reverse=True)
    assert set(result["top_memory"][0]) >= {"pid", "name", "username", "cpu_percent",
                                            "rss_bytes", "memory_percent", "is_mitod"}
    assert "top CPU" in summary


def test_emergency_enters_pressure_and_shrinks_cache(make_engine):
    engine = make_engine()
    task = claim(engine, "emergency_optimization")

    result, _ = emergency.run(engine, task)

    assert engine.pressure.active is True
    assert result["pressure_entered"] is True
    assert isinstance(result["gc_collected"], int)
    cache = engine.db.read().execute("PRAGMA cache_size").fetchone()[0]
    assert cache == -emergency.EMERGENCY_CACHE_KIB
    [event] = events(engine, "maintenance.emergency")
    assert event["task_id"] == task.id
    assert json.loads(event["details"])["top_cpu"] == result["top_cpu"]


# -- disk_cleanup ----------------------------------------------------------

@pytest.fixture
def log_folder(tmp_path):
    folder = tmp_path / "logs"
    make_file(folder / "mitod.log", size=11)
    make_file(folder / "mitod.log.1", size=20)
    make_file(folder / "mitod.log.2", size=30)
    make_file(folder / "mitod.log.3.gz", size=40)
    make_file(folder / "mitod.log.notes", size=5)
    make_file(folder / "other.log.2", size=5)
    return folder


def test_disk_cleanup_keeps_newest_backup(make_engine, log_folder):
    engine = make_engine(system={"disk_free_percent": 0})
    task = claim(engine, "disk_cleanup")

    result, _ = disk_cleanup.run(engine, task)

    assert sorted(os.listdir(log_folder)) == ["mitod.log", "mitod.log.1", "mitod.log.notes",
                                              "other.log.2"]
    assert result["logs"]["removed"] == ["mitod.log.2", "mitod.log.3.gz"]
    assert result["bytes_freed"]["logs"] == 70


def test_disk_cleanup_removes_all_backups_when_disk_low(make_engine, log_folder):
    engine = make_engine(system={"disk_free_percent": 100})
    task = claim(engine, "disk_cleanup")

    result, _ = disk_cleanup.run(engine, task)

    assert sorted(os.listdir(log_folder)) == ["mitod.log", "mitod.log.notes", "other.log.2"]
    assert result["bytes_freed"]["logs"] == 90


def test_disk_cleanup_removes_old_cache_files(make_engine, tmp_path):
    engine = make_engine()
    old = make_file(tmp_path / "cache" / "old.bin", age_days=2, size=300)
    new = make_file(tmp_path / "cache" / "new.bin", size=5)
    task = claim(engine, "disk_cleanup")

    result, _ = disk_cleanup.run(engine, task)

    assert not old.exists()
    assert new.exists()
    assert result["bytes_freed"]["folders"] == 300
    assert result["bytes_freed"]["total"] == 300 + result["bytes_freed"]["logs"] + \
        result["bytes_freed"]["database"]
    [event] = events(engine, "maintenance.disk_cleanup")
    assert event["task_id"] == task.id


# -- optimization ----------------------------------------------------------

def add_task(engine, status, created_days, completed_days=None):
    engine.db.read().execute(
        "INSERT INTO autonomous_tasks (id, name, kind, priority, status, created_at, "
        "completed_at) VALUES (lower(hex(randomblob(16))), 'old', 'optimization', 3, ?, ?, ?)",
        (status, ago(created_days), ago(completed_days) if completed_days is not None else None))


def add_history(engine, days, rows):
    conn = engine.db.read()
    for _ in range(rows):
        conn.execute("INSERT INTO check_results (job, started_at, duration_ms, ok) "
                     "VALUES ('site:a', ?, 1.0, 1)", (ago(days),))
        conn.execute("INSERT INTO metric_samples (sampled_at, source, name, value) "
                     "VALUES (?, 'system', 'cpu_percent', 1.0)", (ago(days),))
        conn.execute("INSERT INTO operation_log (timestamp, event_type, message) "
                     "VALUES (?, 'test.old', 'old row')", (ago(days),))


@pytest.fixture
def pruning_engine(make_engine):
    engine = make_engine(optimization_settings={
        "keep_tasks": "1d", "keep_results": "1d", "keep_log": "1d", "prune_batch": 2})
    for _ in range(4):
        add_task(engine, "completed", 5, 5)
    add_task(engine, "cancelled", 5)          # never finished: judged by created_at
    add_task(engine, "queued", 5)             # still active: kept
    add_task(engine, "completed", 5, 0.1)     # finished recently: kept
    add_task(engine, "failed", 0.1, 0.1)
    add_history(engine, 5, 5)
    add_history(engine, 0.1, 2)
    return engine


def test_optimization_prunes_old_rows_in_batches(pruning_engine):
    engine = pruning_engine
    task = claim(engine, "optimization")

    result, _ = optimization.run(engine, task)

    assert result["pruned"] == {"autonomous_tasks": 5, "check_results": 5,
                                "metric_samples": 5, "operation_log": 5}
    # Five rows at two per batch take three batches in each of the four tables.
    assert result["prune_batches"] == 12


def test_optimization_keeps_recent_and_active_rows(pruning_engine):
    engine = pruning_engine
    task = claim(engine, "optimization")

    optimization.run(engine, task)

    statuses = sorted(row[0] for row in engine.db.read().execute(
        "SELECT status FROM autonomous_tasks WHERE name = 'old'"))
    assert statuses == ["completed", "failed", "queued"]
    assert count(engine, "SELECT COUNT(*) FROM autonomous_tasks WHERE id = ?", (task.id,)) == 1
    assert count(engine, "SELECT COUNT(*) FROM check_results") == 2
    assert count(engine, "SELECT COUNT(*) FROM metric_samples") == 2
    assert count(engine, "SELECT COUNT(*) FROM operation_log WHERE event_type = 'test.old'") == 2
    assert len(events(engine, "maintenance.optimization")) == 1


def test_optimization_returns_free_pages(make_engine):
    engine = make_engine(optimization_settings={"keep_log": "1d"})
    conn = engine.db.read()
    for _ in range(500):
        conn.execute("INSERT INTO operation_log (timestamp, event_type, message) "
                     "VALUES (?, 'test.big', ?)", (ago(5), "x" * 4000))
    pages_before = conn.execute("PRAGMA page_count").fetchone()[0]
    task = claim(engine, "optimization")

    result, _ = optimization.run(engine, task)

    assert result["vacuum"]["pages_freed"] > 0
    assert result["vacuum"]["free_pages_after"] == 0
    assert result["bytes_freed"]["database"] == result["vacuum"]["pages_freed"] * \
        result["vacuum"]["page_size"]
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert conn.execute("PRAGMA page_count").fetchone()[0] < pages_before


def test_optimization_cleans_folders(make_engine, tmp_path):
    engine = make_engine()
    old = make_file(tmp_path / "cache" / "old.bin", age_days=2, size=64)
    new = make_file(tmp_path / "cache" / "new.bin")
    task = claim(engine, "optimization")

    result, _ = optimization.run(engine, task)

    assert not old.exists()
    assert new.exists()
    assert result["bytes_freed"]["folders"] == 64
    assert isinstance(result["gc_collected"], int)
