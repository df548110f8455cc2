"""Benchmark the daemon as a whole: start-up time and memory over time.

    .venv/bin/python scripts/bench_daemon.py start [--runs N]
        time from `mitod` invoked to its exit 0 (daemon ready), and from
        SIGKILL of a running daemon to ready again after a new start
    .venv/bin/python scripts/bench_daemon.py rss [--minutes M] [--sites N]
        resident memory of a foreground daemon checking N local sites every
        5 s, sampled every 30 s for M minutes

Every site is served on 127.0.0.1 by this script; nothing leaves the machine.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import DaemonProcess, DaemonSetup, child_env, mitod_command, wait_for  # noqa: E402


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"<!doctype html><title>bench</title><p>ok</p>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def local_site() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def alive(pid: int) -> bool:
    """Return False once ``pid`` has died, even if its parent has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def launch(setup: DaemonSetup) -> float:
    started = time.perf_counter()
    subprocess.run(mitod_command("--config", str(setup.config_path)), env=child_env(),
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - started


def bench_start(runs: int) -> None:
    server, base = local_site()
    cold, after_kill = [], []
    for _ in range(runs):
        setup = DaemonSetup(sites=[{"name": "web", "url": base + "/", "interval": "1m"}])
        try:
            cold.append(launch(setup))
            pid = int(setup.pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            wait_for(lambda: not alive(pid), 10)
            launch(setup)
            after_kill.append(time.perf_counter() - killed)
            os.kill(int(setup.pidfile.read_text()), signal.SIGTERM)
            wait_for(lambda: not setup.pidfile.exists(), 30)
        finally:
            setup.cleanup()
    server.shutdown()
    print(f"mitod invoked -> exit 0 (ready): median {statistics.median(cold) * 1000:.0f} ms, "
          f"max {max(cold) * 1000:.0f} ms over {runs} runs")
    print(f"SIGKILL -> ready again after a new start: median "
          f"{statistics.median(after_kill) * 1000:.0f} ms, max {max(after_kill) * 1000:.0f} ms")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_rss(minutes: float, sites: int) -> None:
    server, base = local_site()
    setup = DaemonSetup(sites=[{"name": f"site{n}", "url": f"{base}/page{n}", "interval": "5s",
                                "timeout": "5s"} for n in range(sites)],
                        log={"level": "info"}, system={"interval": "1m"},
                        report={"interval": "2m"}, optimization={"interval": "5m"},
                        daemon={"monitor_interval": "1m"})
    daemon = DaemonProcess(setup)
    try:
        daemon.start()
        started = time.monotonic()
        print(f"{sites} sites every 5 s, pid {daemon.pid}")
        while True:
            elapsed = time.monotonic() - started
            checks = setup.query("SELECT COUNT(*) FROM check_results")[0][0]
            print(f"  {elapsed / 60:5.1f} min: RSS {rss_kib(daemon.pid) / 1024:.1f} MiB, "
                  f"{checks} check results", flush=True)
            if elapsed >= minutes * 60:
                break
            time.sleep(min(30, minutes * 60 - elapsed + 0.1))
        print(f"RSS after {minutes:g} min with {sites} sites: "
              f"{rss_kib(daemon.pid) / 1024:.1f} MiB")
    finally:
        daemon.stop()
        server.shutdown()
        setup.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start-up and restart-after-SIGKILL time")
    start.add_argument("--runs", type=int, default=10, help="runs; median and max are reported")
    rss = commands.add_parser("rss", help="resident memory over time")
    rss.add_argument("--minutes", type=float, default=10.0, help="how long to run, in minutes")
    rss.add_argument("--sites", type=int, default=10, help="number of sites to check")
    args = parser.parse_args()
    if args.command == "start":
        bench_start(args.runs)
    else:
        bench_rss(args.minutes, args.sites)


if __name__ == "__main__":
    main()
