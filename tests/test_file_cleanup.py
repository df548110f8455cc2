"""Safe deletion of old files: only old regular files, only inside the folder, never via links."""

import json
import logging
import os
import time

import pytest

from mitod.jobs import file_cleanup
from mitod.jobs.file_cleanup import remove_named_files, remove_old_files

DAY = 86400.0
NOBODY = 65534


def make_file(path, age_days=0.0, size=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def cache(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path):
    """A folder outside the cleanup folder, full of old files that must survive."""
    folder = tmp_path / "outside"
    make_file(folder / "precious.txt", age_days=30)
    make_file(folder / "deep" / "precious.txt", age_days=30)
    return folder


def test_removes_only_old_files(cache):
    old = make_file(cache / "old.bin", age_days=3, size=100)
    new = make_file(cache / "new.bin", age_days=0.5, size=7)

    outcome = remove_old_files(str(cache), DAY)

    assert not old.exists()
    assert new.exists()
    assert outcome.files_removed == 1
    assert outcome.bytes_freed == 100
    assert outcome.errors == 0


def test_removes_old_files_in_subfolders(cache):
    nested = make_file(cache / "a" / "b" / "old.bin", age_days=3, size=5)
    kept = make_file(cache / "a" / "new.bin", age_days=0)

    outcome = remove_old_files(str(cache), DAY)

    assert not nested.exists()
    assert kept.exists()
    assert outcome.files_removed == 1


def test_emptied_subfolders_removed_root_kept(cache):
    make_file(cache / "a" / "b" / "old.bin", age_days=3)
    (cache / "empty-before").mkdir()

    outcome = remove_old_files(str(cache), DAY)

    assert not (cache / "a").exists()
    assert outcome.folders_removed == 2
    assert (cache / "empty-before").is_dir()
    assert cache.is_dir()


def test_emptied_subfolders_kept_when_asked(cache):
    make_file(cache / "a" / "old.bin", age_days=3)

    outcome = remove_old_files(str(cache), DAY, remove_empty_folders=False)

    assert (cache / "a").is_dir()
    assert outcome.folders_removed == 0


def test_symlink_to_outside_folder_not_followed(cache, outside):
    link = cache / "link"
    link.symlink_to(outside, target_is_directory=True)

    outcome = remove_old_files(str(cache), DAY)

    assert (outside / "precious.txt").exists()
    assert (outside / "deep" / "precious.txt").exists()
    assert link.is_symlink()
    assert outcome.files_removed == 0


def test_symlinked_subfolder_survives(cache, outside):
    make_file(cache / "sub" / "old.bin", age_days=3)
    inner_link = cache / "sub" / "elsewhere"
    inner_link.symlink_to(outside / "deep", target_is_directory=True)

    outcome = remove_old_files(str(cache), DAY)

    assert inner_link.is_symlink()
    assert (outside / "deep" / "precious.txt").exists()
    assert not (cache / "sub" / "old.bin").exists()
    # The link keeps "sub" non-empty, so it stays.
    assert (cache / "sub").is_dir()
    assert outcome.files_removed == 1


def test_symlink_to_old_file_kept(cache, outside):
    link = cache / "old-link"
    link.symlink_to(outside / "precious.txt")
    stamp = time.time() - 30 * DAY
    os.utime(link, (stamp, stamp), follow_symlinks=False)

    outcome = remove_old_files(str(cache), DAY)

    assert link.is_symlink()
    assert (outside / "precious.txt").exists()
    assert outcome.files_removed == 0


def test_subfolder_swapped_for_symlink_during_walk(cache, outside, tmp_path, monkeypatch):
    make_file(cache / "sub" / "old.bin", age_days=3)
    listed = []
    real_scandir = os.scandir

    def scandir_then_swap(target):
        entries = list(real_scandir(target))
        if not listed:
            # Right after the root is listed, replace "sub" with a link to outside.
            (cache / "sub").rename(tmp_path / "moved-away")
            (cache / "sub").symlink_to(outside, target_is_directory=True)
        listed.append(target)
        return iter(entries)

    monkeypatch.setattr(file_cleanup.os, "scandir", scandir_then_swap)

    outcome = remove_old_files(str(cache), DAY)

    assert (outside / "precious.txt").exists()
    assert (outside / "deep" / "precious.txt").exists()
    assert (cache / "sub").is_symlink()
    assert outcome.files_removed == 0


def test_root_that_is_a_symlink_rejected(tmp_path, outside, caplog):
    link = tmp_path / "cache-link"
    link.symlink_to(outside, target_is_directory=True)

    with caplog.at_level(logging.WARNING, logger="mitod.jobs.file_cleanup"):
        outcome = remove_old_files(str(link), DAY)

    assert outcome.skipped == "symbolic link"
    assert (outside / "precious.txt").exists()
    assert any("is a symbolic link" in record.getMessage() for record in caplog.records)


def test_missing_folder_skipped(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mitod.jobs.file_cleanup"):
        outcome = remove_old_files(str(tmp_path / "missing"), DAY, task_label="abcd1234 (x)")

    assert outcome.skipped == "missing"
    assert outcome.files_removed == 0
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "abcd1234" in record.getMessage()


def test_path_that_is_a_file_skipped(tmp_path):
    path = make_file(tmp_path / "file", age_days=3)

    outcome = remove_old_files(str(path), DAY)

    assert outcome.skipped == "not a folder"
    assert path.exists()


def test_other_file_types_kept(cache):
    fifo = cache / "fifo"
    os.mkfifo(fifo)
    stamp = time.time() - 3 * DAY
    os.utime(fifo, (stamp, stamp))

    outcome = remove_old_files(str(cache), DAY)

    assert fifo.exists()
    assert outcome.files_removed == 0


def test_hard_linked_file_frees_no_bytes(cache, tmp_path):
    old = make_file(cache / "old.bin", age_days=3, size=50)
    os.link(old, tmp_path / "second-name")

    outcome = remove_old_files(str(cache), DAY)

    assert outcome.files_removed == 1
    assert outcome.bytes_freed == 0
    assert (tmp_path / "second-name").exists()


def run_unprivileged(folder, function):
    """Run ``function()`` where the folder's entries may not be removed; return its value.

    Root may delete anything, so as root the call runs in a child process that
    first enters the folder, then drops to the nobody user. Its result comes
    back as JSON through a pipe.
    """
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            return function(".")
        finally:
            folder.chmod(mode)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.chdir(folder)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write_end, "w") as pipe:
                json.dump(function("."), pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return json.loads(text)


def test_permission_errors_counted_and_logged_once(cache, monkeypatch):
    files = [make_file(cache / f"old-{number}.bin", age_days=3) for number in range(3)]
    warnings = []
    monkeypatch.setattr(file_cleanup.log, "warning",
                        lambda message, *args: warnings.append(message % args))

    def clean(path):
        outcome = remove_old_files(path, DAY)
        return {"outcome": outcome.to_dict(), "warnings": warnings}

    report = run_unprivileged(cache, clean)

    assert report["outcome"]["errors"] == 3
    assert report["outcome"]["files_removed"] == 0
    assert "Permission denied" in report["outcome"]["first_error"]
    assert len(report["warnings"]) == 1
    assert "3 entries" in report["warnings"][0]
    assert all(path.exists() for path in files)


def test_named_files_removed_but_not_links(cache, outside):
    make_file(cache / "app.log.2", size=4)
    (cache / "app.log.3").symlink_to(outside / "precious.txt")

    outcome = remove_named_files(str(cache), ["app.log.2", "app.log.3", "app.log.9"])

    assert outcome.removed == ["app.log.2"]
    assert outcome.bytes_freed == 4
    assert (cache / "app.log.3").is_symlink()
    assert (outside / "precious.txt").exists()


def test_named_files_reject_paths(cache):
    with pytest.raises(ValueError, match="bare name"):
        remove_named_files(str(cache), ["../outside/precious.txt"])
