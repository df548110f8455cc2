"""Benchmark the control socket: ``status`` round trips and ``mitoctl status`` as a process.

Starts a real ``mitod --foreground`` with no sites in a temporary folder,
waits until its start-up tasks have finished (so the engine is idle), then
measures:

- ``status`` through :class:`mitod.client.Client`, all calls on one
  connection: median, p99 and max over ``--calls`` calls after a warm-up;
- ``mitoctl status`` as a whole process (interpreter start, imports, connect,
  request, output), once with ``--socket`` and once with ``--config``: median
  and p90 over ``--runs`` runs.

    .venv/bin/python scripts/bench_control.py [--calls N] [--runs N] [--json]

The numbers depend on the machine; report them with its CPU count and load.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mitod.client import Client, ClientError  # noqa: E402

CONFIG = """\
[daemon]
database = "{folder}/mitod.db"
pidfile = "{folder}/mitod.pid"
socket = "{folder}/mitod.sock"
workers = 4

[control]
group = ""

[log]
level = "warning"
file = ""

[http]
enabled = false

[system]
interval = "1h"
disk_paths = ["{folder}"]

[optimization]
interval = "1h"
cleanup = []

[report]
interval = "1h"
"""


def start_daemon(folder: Path) -> tuple[subprocess.Popen, str]:
    config = folder / "mitod.toml"
    config.write_text(CONFIG.format(folder=folder))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "mitod", "--foreground", "--config",
                                str(config)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               cwd=ROOT, start_new_session=True)
    socket_path = str(folder / "mitod.sock")
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"mitod exited with {process.returncode} during start-up")
        try:
            with Client(socket_path, timeout=2) as client:
                status = client.call("status")
                if status["workers"]["busy"] == 0 and status["queue_depth"] == 0:
                    return process, socket_path
        except ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("mitod did not become idle within 30 s")
        time.sleep(0.1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def bench_round_trips(socket_path: str, calls: int) -> dict:
    timings = []
    with Client(socket_path) as client:
        for _ in range(min(200, calls)):
            client.call("status")
        for _ in range(calls):
            started = time.perf_counter()
            client.call("status")
            timings.append((time.perf_counter() - started) * 1000)
    return {"calls": calls, "median_ms": statistics.median(timings),
            "p99_ms": percentile(timings, 0.99), "max_ms": max(timings)}


def bench_process(arguments: list[str], runs: int) -> dict:
    command = [sys.executable, "-m", "mitod.cli.mitoctl", *arguments, "status"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MITOD_SOCKET", None)
    timings = []
    for number in range(runs + 3):
        started = time.perf_counter()
        completed = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, timeout=30)
        elapsed = (time.perf_counter() - started) * 1000
        if completed.returncode != 0:
            raise SystemExit(f"mitoctl status exited {completed.returncode}: "
                             f"{completed.stderr.decode(errors='replace')}")
        if number >= 3:  # the first runs warm the page cache and write .pyc files
            timings.append(elapsed)
    return {"runs": runs, "median_ms": statistics.median(timings),
            "p90_ms": percentile(timings, 0.90), "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000,
                        help="status round trips to time on one connection (default 2000)")
    parser.add_argument("--runs", type=int, default=30,
                        help="mitoctl status processes to time per variant (default 30)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mitod-bench-", dir="/tmp") as name:
        folder = Path(name)
        process, socket_path = start_daemon(folder)
        try:
            results = {
                "cpus": os.cpu_count(),
                "load_average": [round(value, 2) for value in os.getloadavg()],
                "round_trip": bench_round_trips(socket_path, options.calls),
                "mitoctl_socket": bench_process(["--socket", socket_path], options.runs),
                "mitoctl_config": bench_process(["--config", str(folder / "mitod.toml")],
                                                options.runs),
            }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)

    if options.json:
        print(json.dumps(results, indent=2))
        return
    trip = results["round_trip"]
    print(f"machine: {results['cpus']} CPUs, load average {results['load_average']}")
    print(f"status round trip, one connection, {trip['calls']} calls: median "
          f"{trip['median_ms']:.3f} ms, p99 {trip['p99_ms']:.3f} ms, max {trip['max_ms']:.3f} ms")
    for key, label in (("mitoctl_socket", "--socket"), ("mitoctl_config", "--config")):
        run = results[key]
        print(f"mitoctl {label} status as a process, {run['runs']} runs: median "
              f"{run['median_ms']:.1f} ms, p90 {run['p90_ms']:.1f} ms")


if __name__ == "__main__":
    main()
