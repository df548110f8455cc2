"""Tests of the systemd box harness itself (box.py and the fixtures in conftest.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.systemd.box import (
    Bind, Box, BoxCommandError, BoxError, find_cgroup2_root, remove_stale_cgroups,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]  # the folder that contains the tests package
BOUND_TARGET = "/opt/mitod-box-test/readonly"
TMP_BOUND_TARGET = "/tmp/mitod-box-test/shared"


@pytest.fixture(scope="module")
def handed_in(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Host folders for the module's box: one bound at its own path, one read-only, one below /tmp."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("same_path", "readonly", "under_tmp")}
    (folders["same_path"] / "from-host.txt").write_text("hello from the host\n")
    (folders["readonly"] / "config.txt").write_text("read-only content\n")
    (folders["under_tmp"] / "sub").mkdir()
    (folders["under_tmp"] / "sub" / "kept.txt").write_text("kept\n")
    return folders


@pytest.fixture(scope="module")
def systemd_box_binds(handed_in: dict[str, Path]) -> list[Bind]:
    return [
        Bind(handed_in["same_path"]),
        Bind(handed_in["readonly"], BOUND_TARGET, read_only=True),
        Bind(handed_in["under_tmp"], TMP_BOUND_TARGET),
    ]


def _pids_in_namespace(pid_namespace: int) -> list[int]:
    """Return host pids of live processes in the pid namespace with inode `pid_namespace`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino == pid_namespace and not _is_zombie(entry):
                pids.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            # PermissionError: some host processes (such as a sandbox's PID 1)
            # hide their namespaces even from root, and cannot be box processes.
            continue
    return pids


def _is_zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat_file:
        return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"


def _pids_in_cgroup(cgroup: Path) -> list[int]:
    """Return host pids whose cgroup2 path is `cgroup` or below it, from /proc/*/cgroup."""
    root = find_cgroup2_root()
    assert root is not None
    relative = "/" + str(cgroup.relative_to(root))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup", encoding="utf-8") as cgroup_file:
                lines = cgroup_file.read().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            if line.startswith("0::") and (line[3:] == relative or line[3:].startswith(relative + "/")):
                pids.append(int(entry))
    return pids


def _mountinfo_lines_mentioning(*needles: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return [line for line in mountinfo if any(needle in line for needle in needles)]


# ---------------------------------------------------------------------------
# The shared box
# ---------------------------------------------------------------------------


def test_box_reaches_running(systemd_box: Box) -> None:
    assert systemd_box.state in ("running", "degraded")
    state = systemd_box.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded"), systemd_box.systemctl("--failed").stdout


def test_pid1_is_systemd(systemd_box: Box) -> None:
    assert systemd_box.read_file("/proc/1/comm").strip() == "systemd"
    cmdline = systemd_box.read_file("/proc/1/cmdline").split("\0")
    assert cmdline[0] == "/lib/systemd/systemd"
    assert "--unit=mitod-box.target" in cmdline


def test_pid1_capabilities_dropped(systemd_box: Box) -> None:
    status = systemd_box.read_file("/proc/1/status")
    bounding = int(next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16)
    cap_sys_module, cap_sys_time, cap_sys_admin = 16, 25, 21
    assert not bounding & (1 << cap_sys_module)
    assert not bounding & (1 << cap_sys_time)
    assert bounding & (1 << cap_sys_admin)


def test_journald_active(systemd_box: Box) -> None:
    result = systemd_box.systemctl("is-active", "systemd-journald.service", check=False)
    assert result.stdout.strip() == "active"


def test_installed_unit_logs_to_journal(systemd_box: Box) -> None:
    token = secrets.token_hex(8)
    unit = "mitod-box-probe.service"
    systemd_box.write_file(f"/etc/systemd/system/{unit}", textwrap.dedent(f"""\
        [Unit]
        Description=mitod box probe

        [Service]
        ExecStart=/bin/sh -c 'echo "probe {token}"; exec sleep infinity'
        """))
    systemd_box.systemctl("daemon-reload")
    systemd_box.systemctl("start", unit)

    assert systemd_box.systemctl("is-active", unit, check=False).stdout.strip() == "active"
    systemd_box.wait_until(lambda: f"probe {token}" in systemd_box.journal(unit),
                           timeout=10, message=f"the token line in journalctl -u {unit}")

    systemd_box.systemctl("stop", unit)
    assert systemd_box.systemctl("is-active", unit, check=False).stdout.strip() == "inactive"


def test_transient_unit_logs_to_journal(systemd_box: Box) -> None:
    token = secrets.token_hex(8)
    unit = "mitod-box-transient.service"
    systemd_box.run(["systemd-run", f"--unit={unit}", "-p", "Type=exec",
                     "/bin/sh", "-c", f'echo "transient {token}"; exec sleep infinity'])

    assert systemd_box.systemctl("is-active", unit, check=False).stdout.strip() == "active"
    systemd_box.wait_until(lambda: f"transient {token}" in systemd_box.journal(unit),
                           timeout=10, message=f"the token line in journalctl -u {unit}")
    systemd_box.systemctl("stop", unit)


def test_handed_in_folder_same_path(systemd_box: Box, handed_in: dict[str, Path]) -> None:
    folder = handed_in["same_path"]
    assert systemd_box.read_file(f"{folder}/from-host.txt") == "hello from the host\n"

    systemd_box.write_file(f"{folder}/from-box.txt", "hello from the box\n")
    assert (folder / "from-box.txt").read_text() == "hello from the box\n"


def test_handed_in_folder_read_only(systemd_box: Box, handed_in: dict[str, Path]) -> None:
    assert systemd_box.read_file(f"{BOUND_TARGET}/config.txt") == "read-only content\n"

    result = systemd_box.run(["touch", f"{BOUND_TARGET}/new.txt"], check=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert not (handed_in["readonly"] / "new.txt").exists()


def test_folder_below_tmp_kept(systemd_box: Box, handed_in: dict[str, Path]) -> None:
    # systemd-tmpfiles empties /tmp at boot on Debian; a folder bound below
    # the box's /tmp must keep its host content.
    assert systemd_box.read_file(f"{TMP_BOUND_TARGET}/sub/kept.txt") == "kept\n"
    assert (handed_in["under_tmp"] / "sub" / "kept.txt").read_text() == "kept\n"


def test_box_tmp_is_private(systemd_box: Box) -> None:
    name = f"mitod-box-private-{secrets.token_hex(4)}"
    systemd_box.run(["touch", f"/tmp/{name}"])
    assert not Path("/tmp", name).exists()


def test_etc_changes_stay_in_box(systemd_box: Box) -> None:
    assert systemd_box.read_file("/etc/hostname").strip() == "mitod-box"
    wants = systemd_box.run("ls -d /etc/systemd/system/*.wants 2>/dev/null", check=False).stdout
    assert wants == ""

    host_machine_id = Path("/etc/machine-id").read_text() if Path("/etc/machine-id").exists() else ""
    box_machine_id = systemd_box.read_file("/etc/machine-id").strip()
    assert len(box_machine_id) == 32
    assert box_machine_id != host_machine_id.strip()


def test_network_only_loopback(systemd_box: Box) -> None:
    interfaces = systemd_box.run(["ls", "/sys/class/net"]).stdout.split()
    assert interfaces == ["lo"]
    flags = int(systemd_box.read_file("/sys/class/net/lo/flags").strip(), 16)
    assert flags & 0x1, "lo is down"


def test_commands_run_in_box_cgroup(systemd_box: Box) -> None:
    assert systemd_box.read_file("/proc/self/cgroup").strip().endswith("0::/mitod-harness")
    assert systemd_box.cgroup is not None
    assert (systemd_box.cgroup / "init.scope").is_dir()


def test_run_as_user(systemd_box: Box) -> None:
    assert systemd_box.run(["id", "-u"], user="nobody").stdout.strip() == "65534"


def test_run_cwd_and_input(systemd_box: Box) -> None:
    assert systemd_box.run(["pwd"], cwd="/etc").stdout.strip() == "/etc"
    assert systemd_box.run(["cat"], input="piped\n").stdout == "piped\n"


def test_run_check_raises(systemd_box: Box) -> None:
    with pytest.raises(BoxCommandError) as excinfo:
        systemd_box.run("echo to-stderr >&2; exit 3")
    assert excinfo.value.returncode == 3
    assert "to-stderr" in str(excinfo.value)


def test_run_timeout_kills_command(systemd_box: Box) -> None:
    marker = f"3{secrets.randbelow(10**6)}"
    with pytest.raises(subprocess.TimeoutExpired):
        systemd_box.run(["sleep", marker], timeout=0.5)
    systemd_box.wait_until(
        lambda: systemd_box.run(["pgrep", "-x", "-f", f"sleep {marker}"], check=False).returncode == 1,
        timeout=5, message=f"`sleep {marker}` to be gone from the box")


def test_wait_until_times_out(systemd_box: Box) -> None:
    with pytest.raises(TimeoutError, match="never true"):
        systemd_box.wait_until(lambda: False, timeout=0.2, interval=0.05, message="never true")


# ---------------------------------------------------------------------------
# Boxes of their own: host safety, teardown and failures
# ---------------------------------------------------------------------------


def test_host_tmp_marker_survives(systemd_box_factory) -> None:
    marker = Path("/tmp") / f"mitod-box-marker-{secrets.token_hex(6)}"
    marker.write_text("must survive\n")
    try:
        box = systemd_box_factory()
        assert box.run(["test", "-e", str(marker)], check=False).returncode == 1
        box.teardown()
        assert marker.read_text() == "must survive\n"
    finally:
        marker.unlink(missing_ok=True)


def test_host_unit_dir_untouched(systemd_box_factory) -> None:
    unit_dir = Path("/etc/systemd/system")
    before = sorted(str(path) for path in unit_dir.rglob("*")) if unit_dir.exists() else []
    box = systemd_box_factory()
    box.teardown()
    after = sorted(str(path) for path in unit_dir.rglob("*")) if unit_dir.exists() else []
    assert after == before


def test_teardown_leaves_nothing(systemd_box_support: None, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box()
    try:
        box.boot()
        box.systemctl("start", "--no-block", "systemd-tmpfiles-clean.service")
        box.run(["systemd-run", "--unit=mitod-box-leftover", "sleep", "infinity"])
        background = box.popen(["sleep", "infinity"], stdout=subprocess.DEVNULL)
        unshare_pid, pid_namespace = box.unshare_pid, box.pid_namespace
        cgroup, staging_dir = box.cgroup, box.staging_dir
        assert unshare_pid is not None and pid_namespace is not None
        assert cgroup is not None and staging_dir is not None
        assert _pids_in_cgroup(cgroup)
    finally:
        box.teardown()
    background.wait(timeout=10)

    assert "SIGKILL" not in capsys.readouterr().err, "the box did not power off cleanly"
    assert not Path(f"/proc/{unshare_pid}").exists()
    assert _pids_in_namespace(pid_namespace) == []
    assert _pids_in_cgroup(cgroup) == []
    assert not cgroup.exists()
    assert not staging_dir.exists()
    assert _mountinfo_lines_mentioning(str(staging_dir), " mitod-box ") == []
    assert box.teardown_seconds is not None

    box.teardown()  # a second call finds nothing left to do


HARNESS_KILLED = """\
import json, os, signal, sys
sys.path.insert(0, {repo_root!r})
from tests.systemd.box import Box
started = Box().boot()
print(json.dumps({{"cgroup": str(started.cgroup), "staging_dir": str(started.staging_dir),
                  "pid_namespace": started.pid_namespace}}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_box_dies_with_killed_harness(systemd_box_support: None) -> None:
    # A harness killed with SIGKILL runs no teardown. The parent-death
    # signal must still end the box, and the next boot removes its cgroup.
    result = subprocess.run([sys.executable, "-c", HARNESS_KILLED.format(repo_root=str(REPO_ROOT))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stdout + result.stderr
    record = json.loads(result.stdout)
    cgroup, staging_dir = Path(record["cgroup"]), Path(record["staging_dir"])
    try:
        # The signals are asynchronous, so give the processes time to die.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                _pids_in_namespace(record["pid_namespace"]) or _pids_in_cgroup(cgroup)):
            time.sleep(0.05)
        assert _pids_in_namespace(record["pid_namespace"]) == []
        assert _pids_in_cgroup(cgroup) == []

        remove_stale_cgroups()  # another boot may have removed it already
        assert not cgroup.exists()
    finally:
        # The staging folder is left behind: it holds only the setup log,
        # the empty console file and an empty mount point.
        if staging_dir.name.startswith("mitod-box-") and staging_dir.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(staging_dir, ignore_errors=True)


def test_missing_bind_source_rejected(systemd_box_support: None) -> None:
    box = Box([Bind(Path("/nonexistent/mitod-box-source"))])
    with pytest.raises(BoxError, match="bind source /nonexistent/mitod-box-source not found"):
        box.boot()
    assert box.cgroup is None


def test_reserved_bind_target_rejected(tmp_path: Path) -> None:
    with pytest.raises(BoxError, match="invalid bind target '/proc/x'"):
        Bind(tmp_path, "/proc/x")
    with pytest.raises(BoxError, match="must be an absolute path"):
        Bind(tmp_path, "relative/path")


def test_bind_parse() -> None:
    bind = Bind.parse("/etc:/opt/data:ro")
    assert (bind.source, bind.target, bind.read_only) == (Path("/etc"), "/opt/data", True)
    assert Bind.parse("/etc").target == "/etc"
    assert Bind.parse("/etc:/opt/data:rw").read_only is False
    with pytest.raises(BoxError, match="expected SOURCE"):
        Bind.parse("/etc:/opt:rx")


def test_failed_setup_names_step(systemd_box_support: None, tmp_path: Path) -> None:
    # /etc/hostname is a file in the box, so a folder cannot be created below it.
    box = Box([Bind(tmp_path, "/etc/hostname/below-a-file")])
    with pytest.raises(BoxError, match="creating bind target /etc/hostname/below-a-file failed"):
        box.boot()

    assert box.cgroup is not None and not box.cgroup.exists()
    assert box.staging_dir is not None and not box.staging_dir.exists()
    assert box.unshare_pid is not None and not Path(f"/proc/{box.unshare_pid}").exists()


# ---------------------------------------------------------------------------
# The fixtures, run in an inner pytest session
# ---------------------------------------------------------------------------

INNER_CONFTEST = """\
import importlib.util
import sys

_spec = importlib.util.spec_from_file_location("mitod_box_fixtures", {conftest!r})
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules["mitod_box_fixtures"] = _fixtures
_spec.loader.exec_module(_fixtures)

systemd_box = _fixtures.systemd_box
systemd_box_binds = _fixtures.systemd_box_binds
systemd_box_factory = _fixtures.systemd_box_factory
{extra}
"""


def _run_inner_pytest(folder: Path, test_source: str, *, conftest_extra: str = "",
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(
        INNER_CONFTEST.format(conftest=str(HERE / "conftest.py"), extra=conftest_extra))
    (folder / "test_inner.py").write_text(test_source)
    full_env = {key: value for key, value in os.environ.items() if key != "CI"}
    full_env["PYTHONPATH"] = str(REPO_ROOT)  # for `import tests.systemd.box`
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(folder)],
        cwd=folder, env=full_env, capture_output=True, text=True, timeout=120,
    )


INNER_FAILING_TESTS = """\
import json


def _record(path, box):
    with open(path, "w") as record:
        json.dump({"cgroup": str(box.cgroup), "staging_dir": str(box.staging_dir),
                   "unshare_pid": box.unshare_pid, "pid_namespace": box.pid_namespace}, record)


def test_factory_box_then_fail(systemd_box_factory):
    _record("factory.json", systemd_box_factory())
    assert False, "deliberate failure"


def test_module_box_then_fail(systemd_box):
    _record("module.json", systemd_box)
    raise RuntimeError("deliberate error")
"""


def test_fixtures_teardown_after_failure(systemd_box_support: None, tmp_path: Path) -> None:
    result = _run_inner_pytest(tmp_path, INNER_FAILING_TESTS)
    assert "2 failed" in result.stdout, result.stdout + result.stderr

    for name in ("factory.json", "module.json"):
        record = json.loads((tmp_path / name).read_text())
        cgroup = Path(record["cgroup"])
        assert not cgroup.exists(), f"{name}: cgroup {cgroup} left behind"
        assert not Path(record["staging_dir"]).exists(), f"{name}: staging folder left behind"
        assert not Path(f"/proc/{record['unshare_pid']}").exists(), f"{name}: unshare still running"
        assert _pids_in_namespace(record["pid_namespace"]) == [], f"{name}: box processes remain"


INNER_SKIP_TEST = """\
def test_needs_box(systemd_box_factory):
    pass
"""
FAKE_MISSING = '_fixtures.missing_requirements = lambda: ["fake reason for the test"]'


def test_fixture_skips_without_ci(tmp_path: Path) -> None:
    result = _run_inner_pytest(tmp_path, INNER_SKIP_TEST, conftest_extra=FAKE_MISSING)
    assert "1 skipped" in result.stdout, result.stdout + result.stderr
    assert "fake reason for the test" in result.stdout


def test_fixture_fails_under_ci(tmp_path: Path) -> None:
    result = _run_inner_pytest(tmp_path, INNER_SKIP_TEST, conftest_extra=FAKE_MISSING,
                               env={"CI": "true"})
    assert "1 error" in result.stdout or "1 failed" in result.stdout, result.stdout + result.stderr
    assert "CI is set, so this fails instead of skipping" in result.stdout
