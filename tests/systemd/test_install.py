"""scripts/install and scripts/uninstall in a box, offline and from a read-only checkout."""

from __future__ import annotations

import pytest

from tests.systemd.box import Bind, Box
from tests.systemd.mitod_box import (
    CHECKOUT_IN_BOX,
    CONFIG,
    MitodBox,
)

pytestmark = pytest.mark.slow

STATE_FOLDERS = ("/var/lib/mitod", "/var/log/mitod", "/var/cache/mitod")


@pytest.fixture(scope="module")
def systemd_box_binds(mitod_install_binds: list[Bind]) -> list[Bind]:
    return mitod_install_binds


@pytest.fixture(scope="module")
def installed(systemd_box: Box) -> MitodBox:
    target = MitodBox(systemd_box)
    target.run_install()
    return target


def mode_and_owner(box: Box, path: str) -> str:
    return box.run(["stat", "-c", "%a %U %G", path]).stdout.strip()


def exists(box: Box, path: str) -> bool:
    return box.run(["test", "-e", path], check=False).returncode == 0


def test_install_creates_account_folders_and_units(installed: MitodBox):
    box = installed.box
    assert "install: done." in installed.install_output

    account = box.run(["getent", "passwd", "mitod"]).stdout.strip().split(":")
    assert account[5] == "/var/lib/mitod"
    assert account[6] == "/usr/sbin/nologin"
    assert box.run(["id", "-gn", "mitod"]).stdout.strip() == "mitod"

    assert mode_and_owner(box, CONFIG) == "640 root mitod"
    assert mode_and_owner(box, "/etc/mitod/conf.d") == "755 root root"
    for folder in STATE_FOLDERS:
        assert mode_and_owner(box, folder) == "750 mitod mitod", folder

    for unit in ("mitod.service", "mitod-notify.service"):
        installed_unit = f"/etc/systemd/system/{unit}"
        assert box.run(["cmp", installed_unit, f"{CHECKOUT_IN_BOX}/systemd/{unit}"],
                       check=False).returncode == 0, unit
        assert box.run(["systemctl", "is-enabled", unit], check=False).stdout.strip() == "disabled"
    if exists(box, "/etc/logrotate.d"):
        assert exists(box, "/etc/logrotate.d/mitod")

    for command in ("mitod", "mitoctl"):
        target = box.run(["readlink", f"/usr/local/bin/{command}"]).stdout.strip()
        assert target == f"/opt/mitod/bin/{command}"


def test_installed_config_is_valid(installed: MitodBox):
    checked = installed.box.run(["mitod", "--check-config"], check=False)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"configuration OK: {CONFIG}")
    # The virtual environment uses the system Python, which ProtectHome= and PrivateTmp= leave visible.
    base = installed.box.run(["/opt/mitod/bin/python", "-c", "import sys; print(sys.base_prefix)"]).stdout
    assert base.strip() == "/usr"


def test_checkout_is_read_only_in_box(installed: MitodBox):
    # The install above ran against this bind, so it wrote nothing into the checkout.
    probe = installed.box.run(["touch", f"{CHECKOUT_IN_BOX}/install-probe"], check=False)
    assert probe.returncode != 0
    assert "Read-only file system" in probe.stderr


def test_install_again_keeps_config(installed: MitodBox):
    box = installed.box
    box.run(["sh", "-c", f"echo '# edited by the test' >> {CONFIG}"])

    installed.run_install()

    assert "install: keeping the existing /etc/mitod/mitod.toml" in installed.install_output
    assert box.read_file(CONFIG).endswith("# edited by the test\n")
    assert mode_and_owner(box, CONFIG) == "640 root mitod"


def test_uninstall_then_purge(installed: MitodBox):
    box = installed.box
    uninstall = f"{CHECKOUT_IN_BOX}/scripts/uninstall"
    try:
        box.systemctl("start", "mitod.service")
        uninstalled = box.run([uninstall])

        assert "kept /etc/mitod" in uninstalled.stdout
        assert box.systemctl("is-active", "mitod.service", check=False).stdout.strip() != "active"
        assert box.run(["pgrep", "-u", "mitod"], check=False).returncode == 1
        for path in ("/etc/systemd/system/mitod.service", "/etc/systemd/system/mitod-notify.service",
                     "/opt/mitod", "/usr/local/bin/mitod", "/usr/local/bin/mitoctl",
                     "/etc/logrotate.d/mitod"):
            assert not exists(box, path), path
        for path in (CONFIG, *STATE_FOLDERS):
            assert exists(box, path), path
        assert box.run(["id", "mitod"], check=False).returncode == 0

        purged = box.run([uninstall, "--purge"])

        assert "removed mitod, its configuration" in purged.stdout
        for path in ("/etc/mitod", *STATE_FOLDERS):
            assert not exists(box, path), path
        assert box.run(["id", "mitod"], check=False).returncode != 0
        assert box.run(["getent", "group", "mitod"], check=False).returncode != 0
    finally:
        installed.run_install()  # leave the module's box installed for tests that run later
