#!/usr/bin/env python3
"""Boot the host's own systemd as PID 1 of a throwaway "box" for tests.

A box is a set of fresh Linux namespaces (pid, mount, uts, ipc, net and
cgroup) whose PID 1 is the host's /lib/systemd/systemd, booted on a
copy-on-write view of the host's root file system. Tests hand in host folders,
run commands in the box with nsenter and tear it down again.

The box exists to test unit files under a real service manager. It is a guard
against accidents, not a security boundary: root in the box is root on the
host with all capabilities except CAP_SYS_MODULE and CAP_SYS_TIME.

Host safety, step by step (each step is there because skipping it would touch
the host):

1. The box's PID 1 starts under `unshare --pid --fork --kill-child --mount
   --uts --ipc --net --cgroup`, so hostname changes, IPC objects, network
   configuration and process kills stay inside. `--kill-child` and
   `setpriv --pdeathsig KILL` make the box die with the process that booted
   it, even when that process is killed with SIGKILL.
2. Before unsharing, the wrapper shell moves itself into a cgroup of its own,
   `<cgroup2 root>/mitod-box-<owner pid>-<random>`, so the box's cgroup
   namespace is rooted there. systemd in the box then creates its slices and
   scopes below that folder, and the host's cgroups are outside its view.
3. In the new mount namespace the setup first runs `mount --make-rprivate /`,
   so no later mount propagates back to the host.
4. The box's root is an overlay. Its lower layer is a read-only, non-recursive
   bind of the host's `/`, so only the root file system is visible (not the
   host's /proc, /sys, /dev, /run or other mounts), and the kernel rejects
   writes to it. Its upper layer and workdir live on a tmpfs, so every change
   in the box, including deleted files, vanishes with the box.
5. The setup calls pivot_root into the overlay and edits the box's /etc only
   after that, so an absolute symlink in /etc resolves inside the box and can
   never lead a write to the host. The edits remove
   `/etc/systemd/system/*.wants` and `*.requires` (the host's enabled
   services) and mask the mount units for debugfs, tracefs, configfs,
   fusectl, hugetlbfs and binfmt_misc (kernel-wide file systems). They empty
   /etc/fstab and remove /etc/crypttab, /etc/integritytab and /etc/veritytab,
   so no host disk is mounted or opened. They write a fresh /etc/machine-id
   and /etc/hostname, and replace tmp.conf so systemd-tmpfiles does not
   empty /tmp at boot, where handed-in host folders may be bound.
6. /proc is fresh, with /proc/sys and (if the kernel has it)
   /proc/sysrq-trigger bound read-only again. /sys is a read-only sysfs with
   the box's own cgroup2 mounted on /sys/fs/cgroup. /dev is a tmpfs with only
   null, zero, full, random, urandom and tty, a new devpts instance,
   /dev/shm, and a plain file from the staging folder bound over
   /dev/console, so nothing in the box reaches the host's console. systemd
   252 writes nothing to a console that is not a terminal, so in practice
   the file stays empty. /run and /tmp are fresh tmpfs, so the host's
   tmpfiles rules, which run in the box, never empty the host's /tmp.
7. Handed-in folders are bound last, each at the path the test chooses. They
   are the only host paths the box can write to.
8. PID 1 is exec'd as `setpriv --bounding-set -sys_module,-sys_time
   /lib/systemd/systemd --unit=mitod-box.target` with only `container=other`
   and PATH in its environment. mitod-box.target requires basic.target, so
   journald and the other early units start, but no multi-user service does.
9. Commands run through `nsenter -t <PID 1> -a` after the wrapper shell moved
   itself into `<box cgroup>/mitod-harness`, so they are inside the box's
   cgroup and are killed with it.
10. Teardown kills the commands still running from run() and popen(), runs
    `systemctl poweroff --no-block`, waits for the unshare process to exit,
    sends SIGKILL to the box's PID 1 (and then to unshare) if they outlive
    the timeout, writes to `cgroup.kill` for anything left, removes
    the cgroup folders depth first and deletes the host staging folder after
    checking that nothing is mounted below it. Every mount of the box lives
    only in its mount namespace, which ends with its last process.

Usage as a script (as root):

    python3 tests/systemd/box.py shell --bind /srv/data
    python3 tests/systemd/box.py run --bind /tmp/x:/opt/x:ro -- systemctl status
    python3 tests/systemd/box.py cleanup
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import errno
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

SYSTEMD = "/lib/systemd/systemd"
REQUIRED_TOOLS = ("unshare", "nsenter", "setpriv", "mount", "umount", "pivot_root")

BOX_TARGET = "mitod-box.target"
BOX_HOSTNAME = "mitod-box"
CGROUP_PREFIX = "mitod-box-"
HARNESS_CGROUP = "mitod-harness"
DROPPED_CAPABILITIES = ("sys_module", "sys_time")

# Mount units that would mount kernel-wide file systems (debugfs, tracefs,
# configfs, fusectl, hugetlbfs, binfmt_misc) in the box. systemd 252 guards
# most of them only with capability and path conditions, which root in the
# box passes.
MASKED_UNITS = (
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "proc-sys-fs-binfmt_misc.automount",
)

# Box paths that a handed-in folder must not cover, because the setup mounts
# its own file systems there or because pivot_root uses them.
RESERVED_TARGETS = ("/", "/proc", "/sys", "/dev", "/run", "/tmp", "/.mitod-host")

BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_ENV = {
    "PATH": BOX_PATH,
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "PAGER": "cat",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
}

# Mount point of the host root between pivot_root and its lazy unmount.
OLD_ROOT = "/.mitod-host"


class BoxError(RuntimeError):
    """Failure to boot, use or tear down a box."""


class BoxCommandError(subprocess.CalledProcessError):
    """Non-zero exit of a command run in the box with check=True."""

    def __str__(self) -> str:
        text = f"command {self.cmd!r} in the box exited with status {self.returncode}"
        if self.stdout:
            text += f"\n--- stdout ---\n{_tail(self.stdout)}"
        if self.stderr:
            text += f"\n--- stderr ---\n{_tail(self.stderr)}"
        return text


@dataclasses.dataclass(frozen=True)
class Bind:
    """A host folder or file handed into the box.

    `target` is the absolute path inside the box and defaults to the
    source's real path, so a test can use the same path on both sides.
    """

    source: Path
    target: str = ""
    read_only: bool = False

    def __post_init__(self) -> None:
        source = Path(os.path.realpath(self.source))
        object.__setattr__(self, "source", source)
        if not self.target:
            object.__setattr__(self, "target", str(source))
        target = os.path.normpath(self.target)
        object.__setattr__(self, "target", target)
        if not os.path.isabs(target):
            raise BoxError(f"invalid bind target {self.target!r}: it must be an absolute path")
        for reserved in RESERVED_TARGETS:
            if target == reserved or (reserved in ("/proc", "/sys", "/dev", OLD_ROOT)
                                      and target.startswith(reserved + "/")):
                raise BoxError(
                    f"invalid bind target {target!r}: the box sets up {reserved} itself; "
                    f"choose a path below /tmp, /run, /srv or /opt instead"
                )

    @classmethod
    def parse(cls, spec: str) -> "Bind":
        """Parse `SOURCE[:TARGET[:ro]]` as used by the command line."""
        parts = spec.split(":")
        if len(parts) > 3 or not parts[0] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise BoxError(f"invalid bind {spec!r}: expected SOURCE[:TARGET[:ro|rw]]")
        target = parts[1] if len(parts) > 1 else ""
        read_only = len(parts) == 3 and parts[2] == "ro"
        return cls(Path(parts[0]), target, read_only)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# ---------------------------------------------------------------------------
# Host checks and cgroup helpers
# ---------------------------------------------------------------------------


def missing_requirements() -> list[str]:
    """Return the reasons why this host cannot boot a box, or an empty list if it can."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append(f"not running as root (euid {os.geteuid()})")
    if not os.access(SYSTEMD, os.X_OK):
        reasons.append(f"{SYSTEMD} is missing or not executable")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            reasons.append(f"{tool} not found in PATH")
    if not reasons and find_cgroup2_root() is None:
        reasons.append("no cgroup2 hierarchy is mounted (looked in /proc/self/mountinfo)")
    return reasons


def _mounts() -> list[tuple[str, str]]:
    """Return (mount point, file system type) for each line of /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            # The kernel writes space, tab, newline and backslash as octal escapes.
            mount_point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)),
                                 left.split()[4])
            mounts.append((mount_point, right.split()[0]))
    return mounts


def find_cgroup2_root() -> Path | None:
    """Return the host's cgroup2 mount point, preferring /sys/fs/cgroup over /sys/fs/cgroup/unified.

    A pure cgroup2 host mounts it at /sys/fs/cgroup, a hybrid (v1 plus v2)
    host at /sys/fs/cgroup/unified.
    """
    cgroup2_mounts = [Path(point) for point, fs_type in _mounts() if fs_type == "cgroup2"]
    for preferred in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if preferred in cgroup2_mounts:
            return preferred
    return cgroup2_mounts[0] if cgroup2_mounts else None


def _cgroup_processes(cgroup: Path) -> list[int]:
    """Return the pids in `cgroup` and all cgroups below it."""
    pids = []
    for folder, _, _ in os.walk(cgroup):
        try:
            with open(os.path.join(folder, "cgroup.procs"), encoding="ascii") as procs:
                pids.extend(int(line) for line in procs if line.strip())
        except FileNotFoundError:
            continue
    return pids


def _kill_cgroup(cgroup: Path) -> None:
    """Send SIGKILL to every process in `cgroup` and below it."""
    kill_file = cgroup / "cgroup.kill"  # Linux 5.14 and later
    if kill_file.exists():
        kill_file.write_text("1", encoding="ascii")
        return
    for pid in _cgroup_processes(cgroup):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _remove_cgroup_tree(cgroup: Path, timeout: float) -> None:
    """Remove `cgroup` and every folder below it, deepest first.

    Raises BoxError if a folder is still busy when `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        if not cgroup.exists():
            return
        for folder, _, _ in os.walk(cgroup, topdown=False):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise BoxError(f"removing cgroup {folder} failed: {error}") from error
                busy.append(folder)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise BoxError(
                f"removing cgroup {cgroup} timed out after {timeout:g} s; still busy: "
                f"{', '.join(busy)} (pids {_cgroup_processes(cgroup)})"
            )
        _kill_cgroup(cgroup)
        time.sleep(0.05)


def remove_stale_cgroups() -> list[Path]:
    """Remove box cgroups left by harness processes that no longer exist.

    A box cgroup is stale when the owner pid in its name is not running and
    no process is inside it. Returns the removed folders.
    """
    root = find_cgroup2_root()
    removed: list[Path] = []
    if root is None:
        return removed
    for cgroup in root.glob(CGROUP_PREFIX + "*"):
        owner = cgroup.name[len(CGROUP_PREFIX):].split("-")[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        if _cgroup_processes(cgroup):
            continue
        try:
            _remove_cgroup_tree(cgroup, timeout=5.0)
        except BoxError as error:
            sys.stderr.write(f"mitod box: removing stale cgroup failed: {error}\n")
            continue
        removed.append(cgroup)
    return removed


def _namespace_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _child_pids(parent: int) -> list[int]:
    """Return the pids whose parent is `parent`, by scanning /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def _process_group_members(pgid: int) -> list[int]:
    """Return the pids in process group `pgid`, by scanning /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


# ---------------------------------------------------------------------------
# The box, seen from the host
# ---------------------------------------------------------------------------

_live_boxes: "weakref.WeakSet[Box]" = weakref.WeakSet()


class Box:
    """A booted systemd in fresh namespaces, with run() and an idempotent teardown().

    Use it as a context manager, or call boot() and teardown() in a
    try/finally. Attributes after boot():

    pid: host pid of the box's PID 1 (systemd).
    unshare_pid: host pid of the unshare process that owns the namespaces.
    pid_namespace: inode number of the box's pid namespace.
    cgroup: host path of the box's cgroup folder.
    staging_dir: host folder with the setup log, the console file and the
        mount point of the box's tmpfs (empty on the host).
    state: `systemctl is-system-running` output after boot ("running" or "degraded").
    boot_seconds, teardown_seconds: wall-clock durations, None until measured.
    """

    def __init__(
        self,
        binds: Iterable[Bind | str | os.PathLike[str]] = (),
        *,
        boot_timeout: float = 60.0,
    ) -> None:
        self.binds: list[Bind] = [
            bind if isinstance(bind, Bind) else Bind(Path(bind)) for bind in binds
        ]
        self.boot_timeout = boot_timeout
        self.pid: int | None = None
        self.unshare_pid: int | None = None
        self.pid_namespace: int | None = None
        self.cgroup: Path | None = None
        self.staging_dir: Path | None = None
        self.state: str | None = None
        self.boot_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._commands: list[subprocess.Popen] = []  # started by popen(), stopped at teardown

    # -- context manager ----------------------------------------------------

    def __enter__(self) -> "Box":
        return self.boot()

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()

    # -- boot ---------------------------------------------------------------

    def boot(self) -> "Box":
        """Boot the box and wait until systemd reports `running` or `degraded`.

        Raises BoxError naming the failed step. The box is torn down before
        the error propagates, so a failed boot leaves nothing behind.
        """
        if self._process is not None:
            raise BoxError("boot() called twice; create a new Box for a second boot")
        reasons = missing_requirements()
        if reasons:
            raise BoxError("cannot boot a systemd box: " + "; ".join(reasons))
        for bind in self.binds:
            if not bind.source.exists():
                raise BoxError(f"bind source {bind.source} not found")

        started = time.monotonic()
        _live_boxes.add(self)
        try:
            self._start_namespaces()
            self._wait_for_systemd(started + self.boot_timeout)
            self._wait_for_running(started + self.boot_timeout)
            self._bring_up_loopback()
        except BaseException:
            try:
                self.teardown()
            except BoxError as teardown_error:
                sys.stderr.write(f"mitod box: teardown after failed boot also failed: {teardown_error}\n")
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _start_namespaces(self) -> None:
        remove_stale_cgroups()
        cgroup_root = find_cgroup2_root()
        assert cgroup_root is not None  # missing_requirements() checked it
        self.staging_dir = Path(tempfile.mkdtemp(prefix="mitod-box-"))
        box_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.cgroup = cgroup_root / f"{CGROUP_PREFIX}{box_id}"
        try:
            self.cgroup.mkdir()
        except OSError as error:
            raise BoxError(
                f"creating cgroup {self.cgroup} failed: {error}; is {cgroup_root} a writable cgroup2 mount?"
            ) from error

        console = self.staging_dir / "console"
        console.touch(mode=0o600)
        (self.staging_dir / "mnt").mkdir()
        config = {
            "mount_dir": str(self.staging_dir / "mnt"),
            "console": str(console),
            "binds": [[str(b.source), b.target, b.read_only] for b in self.binds],
            "machine_id": secrets.token_hex(16),
        }
        # The shell writes its own pid into the box cgroup and then execs
        # setpriv and unshare, which keep that pid, so unshare creates the
        # cgroup namespace with the box cgroup as its root.
        command = [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs"),
            "setpriv", "--pdeathsig", "KILL", "--",
            "unshare", "--pid", "--fork", "--kill-child",
            "--mount", "--uts", "--ipc", "--net", "--cgroup", "--",
            sys.executable, "-I", os.path.abspath(__file__), "_stage", json.dumps(config),
        ]
        # NOTE: the kernel sends the parent-death signal when the *thread*
        # that started unshare exits, so boot a box from a thread that lives
        # as long as the box (normally the main thread).
        with open(self.staging_dir / "setup.log", "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": BOX_PATH},
                start_new_session=True,
            )
        self.unshare_pid = self._process.pid

    def _wait_for_systemd(self, deadline: float) -> None:
        """Wait until the box's PID 1 has exec'd systemd, which ends the setup."""
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise BoxError(
                    f"box setup failed (setup process exited with status {self._process.returncode}):\n"
                    + _tail(self._read_staging_file("setup.log"))
                )
            children = _child_pids(self._process.pid)
            if children and _process_name(children[0]) == "systemd":
                self.pid = children[0]
                self.pid_namespace = _namespace_inode(self.pid, "pid")
                return
            if time.monotonic() > deadline:
                raise BoxError(
                    f"box setup timed out after {self.boot_timeout:g} s before systemd started:\n"
                    + _tail(self._read_staging_file("setup.log"))
                )
            time.sleep(0.01)

    def _wait_for_running(self, deadline: float) -> None:
        """Wait for `systemctl is-system-running --wait` to report running or degraded."""
        state = ""
        while time.monotonic() < deadline:
            remaining = max(deadline - time.monotonic(), 1.0)
            try:
                result = self.run(
                    ["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining
                )
            except subprocess.TimeoutExpired:
                break
            state = result.stdout.strip() or result.stderr.strip()
            if state in ("running", "degraded"):
                self.state = state
                return
            if state in ("maintenance", "stopping"):
                break
            # "offline" or a bus error means systemd has not opened its
            # private socket yet.
            time.sleep(0.02)
        raise BoxError(
            f"box did not reach running within {self.boot_timeout:g} s "
            f"(last state: {state or 'none'}).\n{self._failure_report()}"
        )

    def _failure_report(self) -> str:
        """Return failed units, the box journal's tail and the setup log, for error messages."""
        parts = []
        if self._process is not None and self._process.poll() is None:
            for title, argv in (
                ("failed units", ["systemctl", "--failed", "--no-legend", "--plain", "--no-pager"]),
                ("journal", ["journalctl", "-b", "--no-pager", "-n", "40"]),
            ):
                try:
                    result = self.run(argv, check=False, timeout=10)
                    text = result.stdout.strip() or result.stderr.strip() or "(none)"
                except subprocess.TimeoutExpired:
                    text = f"`{' '.join(argv)}` timed out"
                parts.append(f"{title}:\n{text}")
        setup_log = self._read_staging_file("setup.log").strip()
        if setup_log:
            parts.append("setup log:\n" + _tail(setup_log))
        return "\n".join(parts)

    def _bring_up_loopback(self) -> None:
        """Bring up `lo` unless systemd already did (systemd 252 does it while booting)."""
        flags = self.run(["cat", "/sys/class/net/lo/flags"], timeout=10).stdout.strip()
        if int(flags, 16) & 0x1:  # IFF_UP
            return
        self.run(["ip", "link", "set", "lo", "up"], timeout=10)

    def _read_staging_file(self, name: str) -> str:
        if self.staging_dir is None:
            return ""
        try:
            return (self.staging_dir / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- running commands ---------------------------------------------------

    def command_argv(self, cmd: Sequence[str] | str, *, user: str | None = None,
                     cwd: str | None = None) -> list[str]:
        """Return the host argv that runs `cmd` in the box, inside the box's cgroup.

        A string `cmd` runs with /bin/sh -c. With `user`, runuser starts it
        as that user of the box. `cwd` is a directory inside the box.
        """
        if self.pid is None or self.cgroup is None:
            raise BoxError("the box is not booted")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        nsenter = ["nsenter", "-t", str(self.pid), "-a"]
        if cwd is not None:
            nsenter.append(f"--wdns={cwd}")
        else:
            nsenter.append("--wdns=/")
        harness = self.cgroup / HARNESS_CGROUP
        harness.mkdir(exist_ok=True)
        return [
            "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(harness / "cgroup.procs"),
            *nsenter, "--", *argv,
        ]

    def popen(self, cmd: Sequence[str] | str, *, user: str | None = None, cwd: str | None = None,
              env: Mapping[str, str] | None = None, **popen_kwargs: object) -> subprocess.Popen:
        """Start `cmd` in the box and return the host-side Popen (nsenter).

        The environment is COMMAND_ENV updated with `env`. Other keyword
        arguments go to subprocess.Popen. End the command with
        kill_command(process), or leave it to teardown(). Killing the Popen
        directly would orphan the command's processes in the box to the
        host's init, and systemd-shutdown then waits up to 90 s for them.
        """
        full_env = dict(COMMAND_ENV)
        if env:
            full_env.update(env)
        # A process group of its own lets kill_command() find the command's processes.
        popen_kwargs["start_new_session"] = True
        process = subprocess.Popen(self.command_argv(cmd, user=user, cwd=cwd), env=full_env,
                                   **popen_kwargs)  # type: ignore[call-overload]
        self._commands = [command for command in self._commands if command.poll() is None]
        self._commands.append(process)
        return process

    def kill_command(self, process: subprocess.Popen) -> None:
        """Kill a command started by popen() and wait for it to exit.

        Its processes in the box die first, so nsenter (outside the box)
        reaps them before it exits. The command's processes are found by
        process group, which popen() makes for each command.
        """
        deadline = time.monotonic() + 2.0
        while process.poll() is None and time.monotonic() < deadline:
            self._kill_box_processes(_process_group_members(process.pid))
            # nsenter stops itself when its child is stopped; it must run to reap.
            _signal_quietly(process.pid, signal.SIGCONT)
            time.sleep(0.01)
        if process.poll() is None:
            _kill_process_group(process)
            process.wait()

    def run(
        self,
        cmd: Sequence[str] | str,
        *,
        user: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the box as root (or `user`) and return its exit status and text output.

        A string `cmd` runs with /bin/sh -c. stdout and stderr are captured
        as text. With check=True a non-zero exit raises BoxCommandError. When
        `timeout` seconds pass, the command is killed with kill_command() and
        subprocess.TimeoutExpired is raised.
        """
        process = self.popen(
            cmd, user=user, cwd=cwd, env=env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_command(process)
            try:
                stdout, stderr = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # A daemonized child in another process group keeps the pipes open.
                stdout, stderr = "", ""
            raise subprocess.TimeoutExpired(cmd, timeout, output=stdout, stderr=stderr) from None
        except BaseException:
            self.kill_command(process)
            raise
        result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise BoxCommandError(result.returncode, cmd, stdout, stderr)
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `systemctl --no-pager ARGS` in the box."""
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def journal(self, unit: str, *, output: str = "cat", timeout: float = 30.0) -> str:
        """Return `journalctl -u UNIT` output from the box, in journalctl's `output` format."""
        return self.run(
            ["journalctl", "--no-pager", "-o", output, "-u", unit], timeout=timeout
        ).stdout

    def write_file(self, path: str, text: str, *, mode: int = 0o644) -> None:
        """Write `text` to the absolute box path `path`, creating parent folders.

        The write happens inside the box's mount namespace, so symlinks
        resolve against the box's root.
        """
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
        self.run(["/bin/sh", "-c", script, "sh", path, format(mode, "o")], input=text)

    def read_file(self, path: str) -> str:
        """Return the text of the box file `path`."""
        return self.run(["cat", "--", path]).stdout

    def wait_until(self, condition: Callable[[], bool], *, timeout: float = 30.0,
                   interval: float = 0.1, message: str = "condition") -> None:
        """Call `condition` every `interval` seconds until it returns true.

        Raises TimeoutError after `timeout` seconds, naming `message` as the
        awaited state.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {message}")
            time.sleep(interval)

    # -- teardown -----------------------------------------------------------

    def teardown(self, *, timeout: float = 30.0) -> None:
        """Power the box off and remove its processes, cgroups and staging folder.

        Safe to call more than once and after a failed boot, because each call
        does only what is still left. Raises BoxError if something could not
        be removed, after trying every step.
        """
        started = time.monotonic()
        errors: list[str] = []
        try:
            self._stop_processes(timeout, errors)
        finally:
            self._remove_cgroup(errors)
            self._remove_staging_dir(errors)
            _live_boxes.discard(self)
        if self.teardown_seconds is None and self._process is not None:
            self.teardown_seconds = time.monotonic() - started
        if errors:
            raise BoxError("box teardown incomplete: " + "; ".join(errors))

    def _stop_processes(self, timeout: float, errors: list[str]) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        deadline = time.monotonic() + timeout

        # End the commands from run() and popen() first. systemd-shutdown
        # sends SIGSTOP to every process in the box before its SIGTERM round.
        # nsenter, outside the box, then stops itself to pass the stop on and
        # never reaps its child, so systemd-shutdown would wait 90 s for that
        # zombie.
        self._kill_harness_commands()

        if self._box_init_alive():
            try:
                self.run(["systemctl", "poweroff", "--no-block"], check=False,
                         timeout=max(deadline - time.monotonic(), 1.0))
            except (subprocess.TimeoutExpired, OSError, BoxError) as error:
                errors.append(f"systemctl poweroff failed: {error}")
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            return
        except subprocess.TimeoutExpired:
            pass

        sys.stderr.write(f"mitod box: box did not power off within {timeout:g} s; sending SIGKILL\n")
        # SIGKILL to a pid namespace's init kills every process in that
        # namespace. unshare then reaps it and exits. Killing unshare first
        # would leave PID 1 as a zombie for the host's init to reap.
        if self._box_init_alive():
            assert self.pid is not None
            _kill_quietly(self.pid)
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            _kill_quietly(process.pid)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            errors.append(f"unshare process {process.pid} still running after SIGKILL")

    def _kill_harness_commands(self) -> None:
        """Kill what run() and popen() started in the box, waiting up to 3 s for it to exit."""
        # A command started just before teardown may not have moved into the
        # harness cgroup yet, so stop the known ones by their Popen first.
        for command in self._commands:
            if command.poll() is None:
                self.kill_command(command)
        self._commands = []
        if self.cgroup is None:
            return
        harness = self.cgroup / HARNESS_CGROUP
        if not harness.exists():
            return
        # Repeat the kill: an nsenter that was just starting forks its child
        # into the box only after the first round.
        deadline = time.monotonic() + 2.0
        while _cgroup_processes(harness) and time.monotonic() < deadline:
            self._kill_box_processes(_cgroup_processes(harness))
            time.sleep(0.01)
        if _cgroup_processes(harness):
            _kill_cgroup(harness)
            deadline = time.monotonic() + 1.0
            while _cgroup_processes(harness) and time.monotonic() < deadline:
                time.sleep(0.01)

    def _box_init_alive(self) -> bool:
        """Return whether self.pid is still the box's PID 1 (not exited, not a reused pid)."""
        return (self.pid is not None and self.pid_namespace is not None
                and _namespace_inode(self.pid, "pid") == self.pid_namespace)

    def _kill_box_processes(self, pids: Iterable[int]) -> None:
        """Send SIGKILL to those of `pids` that are in the box's pid namespace.

        nsenter, outside the box, is spared so that it reaps its child. An
        orphan whose parent is outside the box goes to the host's init
        instead of the box's systemd, and systemd-shutdown waits up to 90 s
        for such a zombie to go away.
        """
        if self.pid_namespace is None:
            return
        for pid in pids:
            if _namespace_inode(pid, "pid") == self.pid_namespace:
                _kill_quietly(pid)

    def _remove_cgroup(self, errors: list[str]) -> None:
        if self.cgroup is None or not self.cgroup.exists():
            return
        try:
            if _cgroup_processes(self.cgroup):
                _kill_cgroup(self.cgroup)
            _remove_cgroup_tree(self.cgroup, timeout=10.0)
        except (BoxError, OSError) as error:
            errors.append(str(error))

    def _remove_staging_dir(self, errors: list[str]) -> None:
        staging = self.staging_dir
        if staging is None or not staging.exists():
            return
        # The box's mounts live in its own namespace. If one ever showed up
        # below the staging folder on the host, rmtree would delete through it.
        prefix = str(staging) + "/"
        host_mounts = [point for point, _ in _mounts() if point.startswith(prefix) or point == str(staging)]
        if host_mounts:
            errors.append(f"kept {staging} because host mounts remain below it: {', '.join(host_mounts)}")
            return
        shutil.rmtree(staging, ignore_errors=False)


def _kill_quietly(pid: int) -> None:
    _signal_quietly(pid, signal.SIGKILL)


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@atexit.register
def _teardown_live_boxes() -> None:
    for box in list(_live_boxes):
        try:
            box.teardown()
        except BoxError as error:
            sys.stderr.write(f"mitod box: teardown at exit failed: {error}\n")


# ---------------------------------------------------------------------------
# The setup stage, run by unshare inside the new namespaces as their PID 1
# ---------------------------------------------------------------------------


class StageError(Exception):
    """A failed setup step; the message names the step and a likely cause."""


def _must(argv: list[str], what: str, hint: str = "") -> None:
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        message = f"{what} failed: {result.stdout.strip() or f'exit status {result.returncode}'}"
        if hint:
            message += f"; {hint}"
        raise StageError(message)


def _mount(fs_type: str, source: str, target: str, options: str, hint: str = "") -> None:
    _must(["mount", "-n", "-t", fs_type, "-o", options, source, target],
          f"{fs_type} mount on {target}", hint)


def _bind(source: str, target: str, *, read_only: bool) -> None:
    _must(["mount", "-n", "--bind", source, target], f"bind mount of {source} on {target}")
    if read_only:
        _must(["mount", "-n", "-o", "remount,bind,ro", target],
              f"read-only remount of {target}")


def _stage_mount_overlay(mount_dir: str) -> str:
    """Mount the copy-on-write root and return its path (still seen from the host root)."""
    if "," in mount_dir or ":" in mount_dir:
        raise StageError(f"staging path {mount_dir!r} contains ',' or ':', which overlay options "
                         "cannot express; set TMPDIR to a plain path")
    _mount("tmpfs", "mitod-box", mount_dir, "mode=0755",
           "is tmpfs available in this kernel?")
    lower, upper, work, root = (os.path.join(mount_dir, name) for name in ("lower", "upper", "work", "root"))
    for folder in (lower, upper, work, root):
        os.mkdir(folder)
    # Non-recursive, so the host's /proc, /sys, /dev and other mounts stay out.
    _bind("/", lower, read_only=True)
    _mount("overlay", "overlay", root, f"lowerdir={lower},upperdir={upper},workdir={work}",
           "is this kernel's overlayfs available (modprobe overlay), and does tmpfs support trusted.* xattrs?")
    return root


def _stage_pivot(root: str) -> None:
    os.chdir(root)
    os.mkdir(root + OLD_ROOT)
    _must(["pivot_root", ".", OLD_ROOT.lstrip("/")], "pivot_root into the overlay",
          "pivot_root needs the new root to be a mount point in a private mount namespace")
    os.chdir("/")


def _write_box_file(path: str, text: str) -> None:
    """Write a file in the box's /etc, replacing a symlink rather than following it."""
    if os.path.islink(path):
        os.unlink(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as box_file:
        box_file.write(text)


def _stage_edit_etc(machine_id: str) -> None:
    """Keep host services, host disks and tmpfiles cleanup out of the box.

    Runs after pivot_root and before any bind, so every path here is in the overlay.
    """
    unit_dir = "/etc/systemd/system"
    os.makedirs(unit_dir, exist_ok=True)
    for entry in os.listdir(unit_dir):
        path = os.path.join(unit_dir, entry)
        if not (entry.endswith(".wants") or entry.endswith(".requires")):
            continue
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    for unit in MASKED_UNITS:
        path = os.path.join(unit_dir, unit)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink("/dev/null", path)
    _write_box_file(os.path.join(unit_dir, BOX_TARGET), (
        "[Unit]\n"
        "Description=mitod test box\n"
        "Requires=basic.target\n"
        "After=basic.target\n"
        "AllowIsolate=yes\n"
    ))

    _write_box_file("/etc/fstab", "# The mitod test box mounts no host file systems.\n")
    for table in ("/etc/crypttab", "/etc/integritytab", "/etc/veritytab"):
        if os.path.lexists(table):
            os.unlink(table)
    _write_box_file("/etc/machine-id", machine_id + "\n")
    _write_box_file("/etc/hostname", BOX_HOSTNAME + "\n")
    # Debian's tmp.conf has "D /tmp", which empties /tmp at boot. The box's
    # /tmp is a fresh tmpfs, but handed-in host folders may be bound below
    # it. systemd-tmpfiles 252 did not descend into such a bind when tried,
    # and this override keeps it that way if a later version does.
    _write_box_file("/etc/tmpfiles.d/tmp.conf", "d /tmp 1777 root root -\n")


def _stage_mount_api_filesystems(console: str) -> None:
    _mount("proc", "proc", "/proc", "nosuid,nodev,noexec")
    _bind("/proc/sys", "/proc/sys", read_only=True)
    if os.path.exists("/proc/sysrq-trigger"):  # absent without CONFIG_MAGIC_SYSRQ
        _bind("/proc/sysrq-trigger", "/proc/sysrq-trigger", read_only=True)
    _mount("sysfs", "sysfs", "/sys", "ro,nosuid,nodev,noexec")
    _mount("cgroup2", "cgroup2", "/sys/fs/cgroup", "nosuid,nodev,noexec",
           "is cgroup2 enabled in this kernel?")

    _mount("tmpfs", "tmpfs", "/dev", "mode=0755,nosuid")
    devices = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
               "urandom": (1, 9), "tty": (5, 0)}
    for name, (major, minor) in devices.items():
        path = f"/dev/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod applies the umask
    os.mkdir("/dev/pts")
    _mount("devpts", "devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm")
    _mount("tmpfs", "tmpfs", "/dev/shm", "mode=1777,nosuid,nodev")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    open("/dev/console", "w").close()
    _bind(OLD_ROOT + console, "/dev/console", read_only=False)

    _mount("tmpfs", "tmpfs", "/run", "mode=0755,nosuid,nodev")
    _mount("tmpfs", "tmpfs", "/tmp", "mode=1777,nosuid,nodev")


def _stage_bind_folders(binds: list[list]) -> None:
    for source, target, read_only in binds:
        host_source = OLD_ROOT + source
        try:
            if os.path.isdir(host_source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.exists(target):
                    open(target, "w").close()
        except OSError as error:
            raise StageError(f"creating bind target {target} failed: {error}") from error
        _bind(host_source, target, read_only=read_only)


def _stage_main(config_json: str) -> None:
    """Build the box's file systems and exec systemd, as PID 1 of the new namespaces."""
    config = json.loads(config_json)
    _must(["mount", "-n", "--make-rprivate", "/"], "making / private (mount --make-rprivate /)")
    root = _stage_mount_overlay(config["mount_dir"])
    _stage_pivot(root)
    _stage_edit_etc(config["machine_id"])
    _stage_mount_api_filesystems(config["console"])
    _stage_bind_folders(config["binds"])
    _must(["umount", "-n", "-l", OLD_ROOT], f"detaching the host root from {OLD_ROOT}")
    os.rmdir(OLD_ROOT)

    capabilities = ",".join("-" + name for name in DROPPED_CAPABILITIES)
    setpriv = shutil.which("setpriv", path=BOX_PATH)
    if setpriv is None:
        raise StageError(f"setpriv not found in the box's PATH {BOX_PATH}")
    argv = ["setpriv", "--bounding-set", capabilities, "--",
            SYSTEMD, f"--unit={BOX_TARGET}", "--show-status=yes"]
    os.execve(setpriv, argv, {"container": "other", "PATH": BOX_PATH})


def _run_stage(config_json: str) -> int:
    try:
        _stage_main(config_json)
    except (StageError, OSError) as error:
        sys.stderr.write(f"mitod box setup: {error}\n")
        return 1
    return 0  # not reached: _stage_main execs systemd


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Boot the host's systemd in a throwaway box, use it, and tear it down (run as root).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{shell,run,cleanup}")
    for name, help_text in (("shell", "open an interactive shell in the box"),
                            ("run", "run one command in the box and exit with its status")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--bind", action="append", default=[], metavar="SOURCE[:TARGET[:ro]]",
                         help="hand a host folder or file into the box (repeatable); "
                              "TARGET defaults to SOURCE")
        sub.add_argument("--timing", action="store_true",
                         help="print boot and teardown durations in seconds to stderr")
        sub.add_argument("--boot-timeout", type=float, default=60.0, metavar="SECONDS",
                         help="seconds to wait for systemd to reach running (default 60)")
        if name == "run":
            sub.add_argument("cmd", nargs=argparse.REMAINDER,
                             help="command and arguments, after --")
    commands.add_parser("cleanup", help="remove box cgroups left by harness processes that died")
    stage = commands.add_parser("_stage")  # internal: the setup inside the namespaces
    stage.add_argument("config")
    return parser.parse_args(argv)


def _raise_system_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "_stage":
        return _run_stage(args.config)
    if args.command == "cleanup":
        for cgroup in remove_stale_cgroups():
            print(f"removed {cgroup}")
        return 0

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_system_exit)
    cmd = list(getattr(args, "cmd", []))
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if args.command == "run" and not cmd:
        sys.stderr.write("box.py run: missing command; usage: box.py run [--bind DIR] -- CMD [ARG...]\n")
        return 2
    try:
        box = Box([Bind.parse(spec) for spec in args.bind], boot_timeout=args.boot_timeout)
        box.boot()
    except BoxError as error:
        sys.stderr.write(f"box.py: {error}\n")
        return 1
    try:
        if args.timing:
            sys.stderr.write(f"boot to {box.state}: {box.boot_seconds:.2f} s\n")
        if args.command == "shell":
            env = dict(COMMAND_ENV, TERM=os.environ.get("TERM", "dumb"))
            # Ctrl-C belongs to the shell in the box. A handler (unlike
            # SIG_IGN) is not inherited, so the shell still gets SIGINT.
            previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
            try:
                status = subprocess.run(box.command_argv(["/bin/bash", "-l"]), env=env).returncode
            finally:
                signal.signal(signal.SIGINT, previous)
        else:
            result = box.run(cmd, check=False, timeout=3600)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            status = result.returncode
    finally:
        box.teardown()
        if args.timing:
            sys.stderr.write(f"teardown: {box.teardown_seconds:.2f} s\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
