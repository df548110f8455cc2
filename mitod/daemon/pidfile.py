"""The pidfile, which is also the lock that keeps one daemon per database.

The file is opened (created if missing) and locked in place with ``flock``;
only then is it truncated and the pid written. It is never replaced by a
rename, because the lock belongs to the open file: a renamed-in file would be
a new, unlocked inode. The process holding the lock is the running daemon, so a
pidfile left by a dead process, even one whose pid now belongs to another
process, is simply taken over. On exit the file is removed only if it still
holds this process's pid.
"""

import errno
import fcntl
import logging
import os
import time

log = logging.getLogger(__name__)


class AlreadyRunningError(Exception):
    """Another live process holds the pidfile's lock."""

    def __init__(self, path: str, pid: int | None):
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"mitod is already running ({holder}); its pidfile is {path}")


class PidfileError(Exception):
    """The pidfile cannot be created or written."""


class Pidfile:
    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.pid: int | None = None

    def acquire(self) -> None:
        """Lock the pidfile and write this process's pid; raise AlreadyRunningError if held."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise PidfileError(f"cannot open pidfile {self.path}: {error.strerror}; "
                               "check [daemon] pidfile and its folder's permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid_fd(fd, wait=True)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AlreadyRunningError(self.path, holder) from None
            raise PidfileError(f"cannot lock pidfile {self.path}: {error.strerror}") from None
        previous = _read_pid_fd(fd)
        self.pid = os.getpid()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.pid}\n".encode(), 0)
        os.fsync(fd)
        self.fd = fd
        if previous and previous != self.pid:
            log.info("Took over stale pidfile %s left by pid %d", self.path, previous)

    def release(self) -> None:
        """Remove the pidfile if it still holds our pid, then drop the lock."""
        if self.fd is None:
            return
        try:
            if _read_pid_fd(self.fd) == self.pid and _same_file(self.fd, self.path):
                os.unlink(self.path)
        except OSError as error:
            log.warning("Could not remove pidfile %s: %s", self.path, error.strerror)
        finally:
            os.close(self.fd)
            self.fd = None


def _read_pid_fd(fd: int, wait: bool = False) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    if not text and wait:
        # The holder may be between its truncate and its write; look again briefly.
        for _ in range(20):
            time.sleep(0.01)
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if text:
                break
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: str) -> bool:
    try:
        by_fd, by_path = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (by_fd.st_dev, by_fd.st_ino) == (by_path.st_dev, by_path.st_ino)
