"""Safe deletion of old files inside one folder, shared by the maintenance jobs.

The walk never leaves the folder it was given:

- Every folder below the root is opened with ``O_NOFOLLOW | O_DIRECTORY``
  relative to its parent's descriptor, and files are removed with
  ``unlink(name, dir_fd=parent)``. A subfolder that someone swaps for a
  symbolic link during the walk fails to open (ELOOP or ENOTDIR) and is
  skipped, so no path lookup can be redirected outside the folder.
- Symbolic links are never followed and never deleted, whatever they point
  at and however old they are. A link in a cache folder is usually placed
  there on purpose, and removing it would gain no space.
- Only regular files are removed. Sockets, FIFOs and device nodes stay.
- A root folder that is itself a symbolic link is rejected: name the real
  folder in the configuration. Symbolic links in the path above the root
  are followed, because the operator chose that path.

NOTE: ``unlinkat`` removes a directory entry, not what it points to, so a
regular file swapped for a symbolic link between the age check and the
unlink costs that link, never the link's target.

Errors on single files (permission denied, a read-only file system) are
counted and logged once per folder with the first error, never raised.
"""

import errno
import logging
import os
import stat
import time
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Each level of the walk keeps one descriptor open, so the depth is bounded.
# NOTE: 64 levels is a guess at "deeper than any cache layout"; deeper
# folders are skipped and logged, not cleaned.
MAX_DEPTH = 64


@dataclass
class CleanupOutcome:
    """The result of cleaning one folder: entries removed, bytes freed and errors."""

    path: str
    files_removed: int = 0
    bytes_freed: int = 0
    folders_removed: int = 0
    errors: int = 0
    skipped: str | None = None
    first_error: str | None = None
    # Names removed by remove_named_files; remove_old_files only counts them.
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def note_error(self, error: OSError, name: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{name}: {error.strerror or error}"


def remove_old_files(folder: str, older_than: float, *, remove_empty_folders: bool = True,
                     now: float | None = None, task_label: str = "") -> CleanupOutcome:
    """Delete regular files under ``folder`` last modified ``older_than`` seconds ago or earlier.

    Subfolders that this run emptied are removed too when ``remove_empty_folders``
    is set; ``folder`` itself always stays. ``bytes_freed`` counts the size
    (``st_size``) of removed files that had no other hard link.
    """
    outcome = CleanupOutcome(folder)
    cutoff = (time.time() if now is None else now) - older_than
    root_fd = _open_root(folder, outcome, task_label)
    if root_fd is None:
        return outcome
    try:
        _clean_folder(root_fd, folder, cutoff, remove_empty_folders, outcome, 0, task_label)
    finally:
        os.close(root_fd)
    _log_outcome(outcome, task_label)
    return outcome


def remove_named_files(folder: str, names: list[str], task_label: str = "") -> CleanupOutcome:
    """Delete the regular files ``names`` (bare names, no slashes) directly inside ``folder``.

    A name that is missing, a symbolic link or not a regular file is left alone.
    """
    outcome = CleanupOutcome(folder)
    root_fd = _open_root(folder, outcome, task_label)
    if root_fd is None:
        return outcome
    try:
        for name in names:
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"invalid file name {name!r}: expected a bare name")
            try:
                info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as error:
                outcome.note_error(error, name)
                continue
            if stat.S_ISREG(info.st_mode) and _unlink(root_fd, name, info, outcome):
                outcome.removed.append(name)
    finally:
        os.close(root_fd)
    _log_outcome(outcome, task_label)
    return outcome


def _open_root(folder: str, outcome: CleanupOutcome, task_label: str) -> int | None:
    """Open ``folder`` without following a final symbolic link, or record why it was skipped."""
    suffix = f" (task {task_label})" if task_label else ""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        outcome.skipped = "missing"
        log.info("Cleanup folder %s does not exist; nothing to clean%s", folder, suffix)
        return None
    except OSError as error:
        outcome.skipped = f"cannot read: {error.strerror or error}"
        log.warning("Cleanup folder %s cannot be read: %s; skipped it%s", folder, error, suffix)
        return None
    if stat.S_ISLNK(info.st_mode):
        outcome.skipped = "symbolic link"
        log.warning("Cleanup folder %s is a symbolic link to %s; mitod does not follow it. "
                    "Set the cleanup path to the real folder%s", folder,
                    os.path.realpath(folder), suffix)
        return None
    if not stat.S_ISDIR(info.st_mode):
        outcome.skipped = "not a folder"
        log.warning("Cleanup path %s is not a folder; skipped it%s", folder, suffix)
        return None
    try:
        return os.open(folder, _DIRECTORY_FLAGS)
    except OSError as error:
        # ELOOP or ENOTDIR here means the folder was swapped after the lstat above.
        outcome.skipped = f"cannot open: {error.strerror or error}"
        log.warning("Cleanup folder %s cannot be opened: %s; skipped it%s", folder, error, suffix)
        return None


def _clean_folder(dir_fd: int, display: str, cutoff: float, remove_empty: bool,
                  outcome: CleanupOutcome, depth: int, task_label: str) -> bool:
    """Clean one open folder; return True if this call removed at least one entry in it."""
    removed_here = False
    try:
        entries = list(os.scandir(dir_fd))
    except OSError as error:
        outcome.note_error(error, display)
        return False

    for entry in entries:
        try:
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                removed_here |= _clean_subfolder(dir_fd, entry.name, display, cutoff, remove_empty,
                                                 outcome, depth, task_label)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed by someone else since the folder was listed
        except OSError as error:
            outcome.note_error(error, os.path.join(display, entry.name))
            continue
        if info.st_mtime <= cutoff and _unlink(dir_fd, entry.name, info, outcome):
            removed_here = True
    return removed_here


def _clean_subfolder(parent_fd: int, name: str, parent_display: str, cutoff: float,
                     remove_empty: bool, outcome: CleanupOutcome, depth: int,
                     task_label: str) -> bool:
    display = os.path.join(parent_display, name)
    if depth + 1 > MAX_DEPTH:
        log.warning("Cleanup skipped %s: it is more than %d folders deep%s", display, MAX_DEPTH,
                    f" (task {task_label})" if task_label else "")
        return False
    try:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return False  # replaced by a link or a file, or removed, since the listing
        outcome.note_error(error, display)
        return False
    try:
        emptied = _clean_folder(fd, display, cutoff, remove_empty, outcome, depth + 1, task_label)
    finally:
        os.close(fd)
    if not (emptied and remove_empty):
        return False
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        return False  # not empty (other entries, or new ones), or no longer a folder
    outcome.folders_removed += 1
    return True


def _unlink(dir_fd: int, name: str, info: os.stat_result, outcome: CleanupOutcome) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError as error:
        outcome.note_error(error, name)
        return False
    outcome.files_removed += 1
    if info.st_nlink <= 1:
        outcome.bytes_freed += info.st_size
    return True


def _log_outcome(outcome: CleanupOutcome, task_label: str) -> None:
    suffix = f" (task {task_label})" if task_label else ""
    if outcome.errors:
        log.warning("Cleanup of %s could not remove or read %d entries (first: %s)%s",
                    outcome.path, outcome.errors, outcome.first_error, suffix)
    if outcome.files_removed:
        log.info("Cleanup of %s removed %d files (%d bytes) and %d empty folders%s", outcome.path,
                 outcome.files_removed, outcome.bytes_freed, outcome.folders_removed, suffix)
    else:
        log.debug("Cleanup of %s found nothing to remove%s", outcome.path, suffix)
