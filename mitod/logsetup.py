"""The daemon's logging set-up: stderr or the journal, plus an optional rotated file.

- stderr connected to the journal (``JOURNAL_STREAM`` names stderr's device
  and inode): no timestamp of ours, since journald adds its own, and a
  syslog priority prefix such as ``<3>`` on every line, so that
  ``journalctl -p warning -u mitod`` filters by level. A traceback gets the
  prefix on each of its lines, because journald splits a stream into one
  entry per line.
- stderr elsewhere: timestamp, level, logger and message.
- the log file (``[log] file``): the same plain format, rotated by size
  (``max_bytes``, ``backups``) and reopened on SIGUSR1 for external rotation.
"""

import logging
import logging.handlers
import os
import sys

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# syslog(3) priorities, as sd-daemon(3) prefixes expect them.
SYSLOG_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def stderr_is_journal(stream=None) -> bool:
    """Return True if ``stream`` (default stderr) is the journal stream systemd handed us."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return info.st_dev == int(device) and info.st_ino == int(inode)


class JournalFormatter(logging.Formatter):
    """Prefix every line of a record with its syslog priority, e.g. ``<4>``."""

    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITIES.get(record.levelno, 6)
        if record.levelno >= logging.CRITICAL:
            priority = 2
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


class ReopenableRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that can also be reopened after an outside rename."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            self.stream = self._open()
        finally:
            self.release()


class LogSetup:
    """The handlers installed on the root logger, kept so they can change at reload."""

    def __init__(self):
        self.stream_handler: logging.Handler | None = None
        self.file_handler: ReopenableRotatingFileHandler | None = None
        self.file_path = ""

    def configure(self, level: str, file: str = "", max_bytes: int = 0, backups: int = 0,
                  to_stderr: bool = True) -> None:
        """Install handlers on the root logger, replacing the ones this object installed."""
        root = logging.getLogger()
        self.close()
        if to_stderr:
            self.stream_handler = logging.StreamHandler(sys.stderr)
            self.stream_handler.setFormatter(
                JournalFormatter() if stderr_is_journal() else logging.Formatter(PLAIN_FORMAT))
            root.addHandler(self.stream_handler)
        if file:
            self.open_file(file, max_bytes, backups)
        self.set_level(level)
        # Library warnings (urllib3's InsecureRequestWarning for verify_tls = false,
        # for one) go to the log instead of a stderr that may be /dev/null.
        logging.captureWarnings(True)

    def open_file(self, file: str, max_bytes: int, backups: int) -> None:
        folder = os.path.dirname(file)
        if folder:
            os.makedirs(folder, mode=0o750, exist_ok=True)
        handler = ReopenableRotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                                encoding="utf-8")
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
        logging.getLogger().addHandler(handler)
        self.file_handler = handler
        self.file_path = file

    @property
    def configured(self) -> bool:
        """Return True once a handler of this set-up receives log records."""
        return self.stream_handler is not None or self.file_handler is not None

    def set_level(self, level: str) -> None:
        logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))

    def reopen(self) -> bool:
        """Reopen the log file after external rotation; return False if there is none."""
        if self.file_handler is None:
            return False
        self.file_handler.reopen()
        return True

    def apply(self, level: str, file: str, max_bytes: int, backups: int) -> None:
        """Apply a reloaded ``[log]`` section: level, and the file if it changed."""
        self.set_level(level)
        if file == self.file_path and self.file_handler is not None:
            self.file_handler.maxBytes = max_bytes
            self.file_handler.backupCount = backups
            return
        if self.file_handler is not None:
            logging.getLogger().removeHandler(self.file_handler)
            self.file_handler.close()
            self.file_handler = None
            self.file_path = ""
        if file:
            self.open_file(file, max_bytes, backups)

    def close(self) -> None:
        root = logging.getLogger()
        for handler in (self.stream_handler, self.file_handler):
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        self.stream_handler = self.file_handler = None
        self.file_path = ""
