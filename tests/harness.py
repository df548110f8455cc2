"""Shared test helpers: configurations, a real daemon process, waiting on conditions.

Every daemon here is a real ``mitod`` process started from this checkout,
with its output in files (a daemon that kept an inherited pipe open could
hang a test). Waits poll a condition with a deadline instead of sleeping for
a fixed time.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "mitod is ready"


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {message}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def short_tempdir(prefix: str = "mitod-") -> Path:
    """Return a new folder under /tmp: Unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_config(sections: dict, sites: list[dict]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    for site in sites:
        lines.append("[[site]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in site.items())
        lines.append("")
    return "\n".join(lines)


class DaemonSetup:
    """A folder with a test configuration; paths are short so the socket path fits."""

    def __init__(self, base: Path | None = None, sites: list[dict] | None = None,
                 **overrides: dict):
        self.base = base or short_tempdir()
        self.http_port = free_port()
        self.sites = list(sites or [])
        self.sections = {
            "daemon": {
                "database": str(self.base / "mitod.db"),
                "pidfile": str(self.base / "mitod.pid"),
                "socket": str(self.base / "mitod.sock"),
                "workers": 4,
                "shutdown_timeout": "5s",
                "monitor_interval": "2s",
                "retry_backoff": "100ms",
                "retry_backoff_max": "1s",
            },
            "control": {"group": "", "socket_mode": "0660"},
            "log": {"level": "debug", "file": str(self.base / "mitod.log")},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "system": {"interval": "1h", "disk_paths": [str(self.base)]},
            "optimization": {"interval": "1h",
                             "cleanup": [{"path": str(self.base / "cache"),
                                          "older_than": "7d"}]},
            "report": {"interval": "1h"},
        }
        for section, values in overrides.items():
            self.sections.setdefault(section, {}).update(values)
        self.config_path = self.base / "mitod.toml"
        self.write()

    def write(self) -> Path:
        self.config_path.write_text(render_config(self.sections, self.sites))
        return self.config_path

    @property
    def database(self) -> Path:
        return Path(self.sections["daemon"]["database"])

    @property
    def pidfile(self) -> Path:
        return Path(self.sections["daemon"]["pidfile"])

    @property
    def socket(self) -> Path:
        return Path(self.sections["daemon"]["socket"])

    @property
    def log_file(self) -> Path:
        return Path(self.sections["log"]["file"])

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """Run a read-only query on the daemon's database from another connection."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def mitod_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mitod", *args]


def child_env(extra: dict | None = None) -> dict:
    """Return an environment for a daemon: no systemd variables unless a test sets them."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID",
                          "MITOD_CONFIG")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


class DaemonProcess:
    """``mitod --foreground`` as a subprocess, with stdout and stderr in files."""

    def __init__(self, setup: DaemonSetup, env: dict | None = None, name: str = "daemon"):
        self.setup = setup
        self.env = child_env(env)
        self.out_path = setup.base / f"{name}.out"
        self.err_path = setup.base / f"{name}.err"
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> "DaemonProcess":
        self.out_path.write_bytes(b"")
        self.err_path.write_bytes(b"")
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.process = subprocess.Popen(
                mitod_command("--foreground", "--config", str(self.setup.config_path)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env, cwd=ROOT,
                start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"mitod exited with {self.process.returncode} before it "
                                     f"was ready:\n{self.stderr()}")
            return READY_LINE in self.stderr()
        wait_for(ready, timeout, message="mitod to report ready")

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_for(lambda: text in self.stderr(), timeout, message=f"log line {text!r}")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the daemon and return its exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def run_to_exit(self, timeout: float = 20.0) -> int:
        self.start(wait=False)
        return self.process.wait(timeout)


def mitoctl_command(*args: str) -> list[str]:
    """Return the command line that runs mitoctl from this checkout."""
    return [sys.executable, "-m", "mitod.cli.mitoctl", *args]


def mitoctl_env(extra: dict | None = None) -> dict:
    """Return an environment for mitoctl without MITOD_SOCKET or NO_COLOR from the caller."""
    env = child_env()
    env.pop("MITOD_SOCKET", None)
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


def run_mitoctl(setup: DaemonSetup, *args: str, env: dict | None = None,
                timeout: float = 30.0, **options) -> subprocess.CompletedProcess:
    """Run ``mitoctl --config SETUP ARGS`` to the end and return its exit code and output."""
    return subprocess.run(mitoctl_command("--config", str(setup.config_path), *args),
                          env=mitoctl_env(env), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **options)
