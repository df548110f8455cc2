"""Install mitod into a systemd test box (see box.py) and inspect it there.

The wheels are built on the host once per test session, from a copy of the
checkout: pip builds a source tree in place (build/ and *.egg-info), and the
checkout under test may be read-only. The box gets the wheels and the
checkout as read-only binds and runs `scripts/install --wheels`, which must
work offline because the box's network namespace has only `lo`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.systemd.box import Bind, Box

REPO_ROOT = Path(__file__).resolve().parents[2]

WHEELS_IN_BOX = "/srv/mitod-wheels"
CHECKOUT_IN_BOX = "/srv/mitod-checkout"
# Files the tests add to the box: the test web server and the pristine configuration.
TEST_DIR = "/opt/mitod-test"
SITE_SERVER = f"{TEST_DIR}/site_server.py"
PRISTINE_CONFIG = f"{TEST_DIR}/mitod.toml.installed"

CONFIG = "/etc/mitod/mitod.toml"
CONF_D = "/etc/mitod/conf.d"
DATABASE = "/var/lib/mitod/mitod.db"
PIDFILE = "/run/mitod/mitod.pid"
SOCKET = "/run/mitod/mitod.sock"
UNITS = ("mitod.service", "mitod-notify.service")
UNIT_DIR = "/etc/systemd/system"

# Users created in the box: one in the mitod group and one outside it.
MEMBER = "member"
OUTSIDER = "outsider"

# Transient units started with start_site_server() share this prefix, so
# reset() can stop all of them with one glob.
SITE_UNIT_PREFIX = "mitod-test-site-"

# Source folders and files that are not part of the package and may be large
# or owned by the checkout's tools.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".benchmarks", "var",
)

# A web server for site checks: it returns 200 to every GET after DELAY seconds.
SITE_SERVER_SOURCE = '''\
"""Return 200 to every GET after a delay: python3 site_server.py PORT DELAY_SECONDS."""
import http.server
import sys
import time

DELAY = float(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(DELAY)
        body = b"ok\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
server.serve_forever()
'''

# Runs one SQL statement as the database's owner and prints the rows as JSON.
QUERY_SOURCE = (
    "import json, sqlite3, sys\n"
    "connection = sqlite3.connect(sys.argv[1], timeout=10)\n"
    "rows = connection.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()\n"
    "print(json.dumps(rows))\n"
)

_wheel_folders: dict[Path, Path] = {}


def build_wheels(tmp_path_factory: pytest.TempPathFactory, checkout: Path = REPO_ROOT) -> Path:
    """Build wheels for mitod and its dependencies from `checkout`, once per session.

    pip runs on the host, where it may use the network or PIP_FIND_LINKS.
    Fails the test with pip's output if the build fails.
    """
    if checkout in _wheel_folders:
        return _wheel_folders[checkout]
    work = tmp_path_factory.mktemp("mitod-wheels")
    source = work / "source"
    wheels = work / "wheels"
    shutil.copytree(checkout, source, ignore=COPY_IGNORE, symlinks=True)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
               "--wheel-dir", str(wheels), str(source)]
    result = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"building wheels failed (exit status {result.returncode}): "
                    f"{' '.join(command)}\n{result.stdout[-4000:]}", pytrace=False)
    if not list(wheels.glob("mitod-*.whl")):
        pytest.fail(f"pip wheel wrote no mitod wheel to {wheels}", pytrace=False)
    _wheel_folders[checkout] = wheels
    return wheels


def install_binds(wheels: Path, checkout: Path = REPO_ROOT) -> list[Bind]:
    """Return the read-only binds that scripts/install --wheels needs in the box."""
    return [
        Bind(wheels, WHEELS_IN_BOX, read_only=True),
        Bind(checkout, CHECKOUT_IN_BOX, read_only=True),
    ]


def site_config(name: str, url: str, *, interval: str = "1h", timeout: str = "30s") -> str:
    """Return one [[site]] table as TOML text."""
    return (f'[[site]]\nname = "{name}"\nurl = "{url}"\n'
            f'interval = "{interval}"\ntimeout = "{timeout}"\n')


class MitodBox:
    """A booted Box with mitod installed by scripts/install, and helpers to inspect it."""

    def __init__(self, box: Box):
        self.box = box
        self.install_output = ""

    # -- installation ------------------------------------------------------

    def install(self) -> subprocess.CompletedProcess[str]:
        """Run scripts/install --wheels in the box and keep a copy of the installed config."""
        result = self.run_install()
        self.box.write_file(SITE_SERVER, SITE_SERVER_SOURCE)
        self.box.run(["cp", "-p", CONFIG, PRISTINE_CONFIG])
        self.box.run(["useradd", "--create-home", "--groups", "mitod", MEMBER])
        self.box.run(["useradd", "--create-home", OUTSIDER])
        return result

    def run_install(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.box.run([f"{CHECKOUT_IN_BOX}/scripts/install", "--wheels", WHEELS_IN_BOX,
                               *args], timeout=300)
        self.install_output = result.stdout + result.stderr
        return result

    # -- state between tests -----------------------------------------------

    def reset(self) -> None:
        """Stop the units and test servers and restore the installed configuration.

        Removes drop-ins, conf.d files and the database, so the next test
        starts from a fresh installation. Raises AssertionError if a process
        of user mitod outlives the stop.
        """
        script = "\n".join([
            f"systemctl stop {' '.join(UNITS)} '{SITE_UNIT_PREFIX}*'",
            "systemctl reset-failed",
            *(f"rm -rf {UNIT_DIR}/{unit}.d" for unit in UNITS),
            "systemctl daemon-reload",
            f"cp -p {PRISTINE_CONFIG} {CONFIG}",
            f"rm -f {CONF_D}/*",
            f"rm -f {DATABASE} {DATABASE}-wal {DATABASE}-shm",
        ])
        self.box.run(["/bin/sh", "-e", "-c", script])
        leftover = self.box.run(["pgrep", "-a", "-u", "mitod"], check=False).stdout.strip()
        assert not leftover, f"mitod processes left after systemctl stop: {leftover}"

    # -- units ---------------------------------------------------------------

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """Return `systemctl show -p` values of `unit` by property name."""
        output = self.box.systemctl("show", unit, *(f"--property={name}" for name in properties)).stdout
        values = {}
        for line in output.splitlines():
            name, _, value = line.partition("=")
            values[name] = value
        return values

    def property(self, unit: str, name: str) -> str:
        return self.show(unit, name)[name]

    def main_pid(self, unit: str) -> int:
        return int(self.property(unit, "MainPID"))

    def active_state(self, unit: str) -> str:
        return self.property(unit, "ActiveState")

    def wait_active(self, unit: str, *, replacing: int | None = None, timeout: float = 30.0) -> int:
        """Wait until `unit` is active with a main pid other than `replacing`; return that pid."""
        def running() -> bool:
            values = self.show(unit, "ActiveState", "SubState", "MainPID")
            return (values["ActiveState"] == "active" and values["SubState"] == "running"
                    and values["MainPID"] not in ("0", str(replacing)))

        self.wait_until(running, timeout=timeout, message=f"{unit} to be active"
                        + (f" with a main pid other than {replacing}" if replacing else ""))
        return self.main_pid(unit)

    def add_drop_in(self, unit: str, text: str, name: str = "50-test.conf") -> None:
        """Write a drop-in for `unit` and reload systemd's unit files."""
        self.box.write_file(f"{UNIT_DIR}/{unit}.d/{name}", text)
        self.box.systemctl("daemon-reload")

    def wait_until(self, condition: Callable[[], bool], *, timeout: float = 30.0,
                   message: str = "condition") -> None:
        """Like Box.wait_until, but the timeout error also shows the box's mitod journal."""
        try:
            self.box.wait_until(condition, timeout=timeout, interval=0.1, message=message)
        except TimeoutError as error:
            tail = self.box.run(["journalctl", "--no-pager", "-n", "30", "-u", "mitod.service",
                                 "-u", "mitod-notify.service"], check=False).stdout
            raise TimeoutError(f"{error}\nlast journal lines of the mitod units:\n{tail}") from None

    # -- configuration -------------------------------------------------------

    def write_conf(self, name: str, text: str) -> None:
        """Write /etc/mitod/conf.d/NAME, readable by the daemon."""
        self.box.write_file(f"{CONF_D}/{name}", text, mode=0o644)

    def set_main_config(self, key: str, value: str) -> None:
        """Replace the line `KEY = ...` of /etc/mitod/mitod.toml with `KEY = VALUE`.

        Raises AssertionError unless exactly one line sets `key`.
        """
        text = self.box.read_file(CONFIG)
        pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
        assert len(pattern.findall(text)) == 1, f"{CONFIG} sets {key} on more or fewer than one line"
        self.box.write_file(CONFIG, pattern.sub(f"{key} = {value}", text), mode=0o640)
        self.box.run(["chgrp", "mitod", CONFIG])

    # -- test servers --------------------------------------------------------

    def start_site_server(self, port: int, delay: float = 0.0) -> str:
        """Serve HTTP on 127.0.0.1:PORT from a transient unit; return the unit name."""
        unit = f"{SITE_UNIT_PREFIX}{port}"
        self.box.run(["systemd-run", f"--unit={unit}", "--quiet", "python3", SITE_SERVER,
                      str(port), str(delay)])
        self.wait_until(lambda: self.port_open(port), timeout=10,
                        message=f"the test web server on 127.0.0.1:{port}")
        return unit

    def port_open(self, port: int) -> bool:
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
        return self.box.run(["bash", "-c", probe], check=False).returncode == 0

    # -- database ------------------------------------------------------------

    def query(self, sql: str, *params: object) -> list[list]:
        """Run one SQL statement on mitod's database as user mitod; return the rows.

        Running as mitod keeps any -wal or -shm file that SQLite creates owned by the daemon's user.
        """
        result = self.box.run(["runuser", "-u", "mitod", "--", "python3", "-c", QUERY_SOURCE,
                               DATABASE, sql, json.dumps(list(params))])
        return json.loads(result.stdout)

    # -- journal -------------------------------------------------------------

    def journal_mark(self) -> str:
        """Return a `--since` value for "from now on", to read only entries logged after this call.

        A cursor would be exact, but journalctl 252 (tried in the box) with
        --after-cursor and a -u or -p filter skips the first matching entry
        when the cursor entry does not match the filter. journald stamps entries when it receives
        them, so an entry logged after this call is not older than the mark.
        """
        now = self.box.run(["python3", "-c", "import time; print(f'{time.time():.6f}')"]).stdout
        return "@" + now.strip()

    def journal(self, unit: str, since: str, priority: str | None = None) -> list[dict]:
        """Return `journalctl -u UNIT [-p PRIORITY]` entries since `since`, as JSON objects."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-u", unit, f"--since={since}"]
        if priority is not None:
            argv += ["-p", priority]
        lines = self.box.run(argv).stdout.splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_journal(self, unit: str, since: str, text: str, *, priority: str | None = None,
                         timeout: float = 30.0) -> dict:
        """Wait for an entry of `unit` since `since` that contains `text`; return it."""
        found: list[dict] = []

        def logged() -> bool:
            found[:] = [entry for entry in self.journal(unit, since, priority)
                        if text in message_text(entry)]
            return bool(found)

        self.wait_until(logged, timeout=timeout, message=f"journal line {text!r} of {unit}")
        return found[0]

    # -- processes -----------------------------------------------------------

    def process_ids(self, pid: int) -> tuple[int, int]:
        """Return the real uid and gid of box process `pid` from /proc/PID/status."""
        status = self.box.read_file(f"/proc/{pid}/status")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])

    def account_ids(self, user: str) -> tuple[int, int]:
        uid = int(self.box.run(["id", "-u", user]).stdout)
        gid = int(self.box.run(["id", "-g", user]).stdout)
        return uid, gid


def message_text(entry: dict) -> str:
    """Return a journal entry's MESSAGE as text; journalctl gives non-UTF-8 ones as byte lists."""
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):
        return bytes(message).decode("utf-8", "replace")
    return str(message)


def elapsed_seconds(start_usec: int, end_usec: int) -> float:
    return (end_usec - start_usec) / 1_000_000


def timing_line(what: str, seconds: float, how: str) -> str:
    """Format a measured duration for the test's captured output (shown with pytest -rP)."""
    return f"measured: {what}: {seconds:.3f} s ({how}; {os.cpu_count()} CPUs)"

