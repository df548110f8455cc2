"""Detach into the background with a readiness handshake.

python-daemon's ``DaemonContext`` ends the calling process at its first fork,
so the command cannot wait for readiness from inside it. Instead the
launcher forks first and keeps the read end of a pipe. The child enters
``DaemonContext`` with the write end preserved (``files_preserve``). After its
double fork, the daemon reports through the pipe either ``ready`` with its
pid, or its start-up error. The launcher waits up to ``start_timeout``
and exits 0, or prints the daemon's own error and exits with its code (78
for configuration errors, 1 otherwise). Under ``systemctl start`` this is
what makes start-up failures visible, and it means the pidfile exists
before systemd looks for it.

No file descriptor or thread exists before the forks, except the readiness
pipe.
"""

import json
import os
import select
import signal
import sys
import time

from mitod.config import ConfigError, load_config
from mitod.daemon.notify import Notifier
from mitod.logsetup import stderr_is_journal

EX_FAILURE = 1
EX_CONFIG = 78
MAX_MESSAGE = 64 * 1024


def launch(config_path: str) -> int:
    """Start the daemon in the background and return the command's exit code."""
    config_path = os.path.abspath(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        _print_error("invalid configuration:\n" + str(error))
        return EX_CONFIG
    keep_stderr = stderr_is_journal()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        _become_daemon(config_path, write_end, keep_stderr)
        os._exit(EX_FAILURE)  # not reached: _become_daemon never returns
    os.close(write_end)
    try:
        return _await_readiness(read_end, child, config.daemon.start_timeout)
    finally:
        os.close(read_end)


def _await_readiness(read_end: int, child: int, timeout: float) -> int:
    data, timed_out = _read_all(read_end, timeout)
    _reap(child)
    report = _parse(data)
    if report.get("ready"):
        return 0
    if timed_out:
        pid = report.get("pid")
        if pid:
            _kill(pid)
        _print_error(f"the daemon did not become ready within {timeout:.0f} s "
                     "([daemon] start_timeout); it was stopped. See its log for the cause")
        return EX_FAILURE
    if "error" in report:
        _print_error(report["error"])
        return int(report.get("exit_code", EX_FAILURE))
    _print_error("the daemon exited during start-up without reporting why; see its log "
                 "([log] file) or run mitod --foreground to see the error")
    return EX_FAILURE


def _read_all(fd: int, timeout: float) -> tuple[bytes, bool]:
    """Read until EOF or ``timeout``; return the bytes and whether time ran out."""
    deadline = time.monotonic() + timeout
    chunks = []
    size = 0
    while size < MAX_MESSAGE:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _parse(data: bytes) -> dict:
    """Merge the JSON lines the daemon wrote into one report."""
    report: dict = {}
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            report.update(item)
    return report


def _reap(child: int) -> None:
    try:
        os.waitpid(child, 0)
    except ChildProcessError:
        pass


def _kill(pid: int) -> None:
    for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _print_error(message: str) -> None:
    """Print the start-up error; under systemd also set it as the unit's status text.

    ``systemctl status`` shows log lines of the unit's latest invocation only,
    and after ``Restart=`` has retried a failed start that invocation has none,
    so the reason would be missing there without ``STATUS=``. The unit needs
    ``NotifyAccess=all`` for systemd to accept it from this process.
    """
    lines = f"mitod: {message}".splitlines()
    if stderr_is_journal():
        lines = [f"<3>{line}" for line in lines]  # syslog priority "err" for journalctl -p
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    Notifier().status("start-up failed: " + "; ".join(message.splitlines()))


class ReadinessPipe:
    """The daemon's end of the handshake: one report, then the pipe is closed."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, report: dict) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(report) + "\n").encode())
        except OSError:
            pass  # the launcher was killed, so no process reads the report

    def announce_pid(self) -> None:
        self.send({"pid": os.getpid()})

    def ready(self) -> None:
        self.send({"ready": True, "pid": os.getpid()})
        self.close()

    def fail(self, message: str, exit_code: int) -> None:
        self.send({"ready": False, "error": message, "exit_code": exit_code})
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _become_daemon(config_path: str, write_end: int, keep_stderr: bool) -> None:
    import daemon

    # detach_process=True: left to detect it, python-daemon skips the fork
    # when the parent is PID 1, which is the case under systemd, and a
    # Type=forking unit then waits for a fork that never comes.
    context = daemon.DaemonContext(
        detach_process=True,
        umask=0o027,
        working_directory="/",
        files_preserve=[write_end],
        stdin=None,
        stdout=None,
        stderr=sys.stderr if keep_stderr else None,
        signal_map={},
    )
    pipe = ReadinessPipe(write_end)
    try:
        context.open()
    except Exception as error:  # report instead of dying silently
        pipe.fail(f"could not detach: {error}", EX_FAILURE)
        os._exit(EX_FAILURE)
    pipe.announce_pid()
    os._exit(_run_daemon(config_path, pipe, keep_stderr))


def _run_daemon(config_path: str, pipe: ReadinessPipe, keep_stderr: bool) -> int:
    from mitod.daemon.runner import Daemon, StartupError

    instance = Daemon(config_path, log_to_stderr=keep_stderr)
    try:
        instance.start()
    except StartupError as error:
        pipe.fail(str(error), error.exit_code)
        return error.exit_code
    except BaseException as error:  # anything else still reaches the launcher
        pipe.fail(f"start-up failed: {type(error).__name__}: {error}", EX_FAILURE)
        return EX_FAILURE
    pipe.ready()
    try:
        return instance.serve()
    finally:
        import logging
        logging.shutdown()
