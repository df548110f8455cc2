"""Fixtures shared by the whole suite: test configurations and real daemon processes."""

import pytest

from tests.harness import DaemonProcess, DaemonSetup


@pytest.fixture
def make_setup():
    """Return a factory of DaemonSetup folders, all removed after the test."""
    created = []

    def make(**kwargs) -> DaemonSetup:
        setup = DaemonSetup(**kwargs)
        created.append(setup)
        return setup

    yield make
    for setup in created:
        setup.cleanup()


@pytest.fixture
def make_daemon():
    """Return a factory of DaemonProcess objects; every one still running is killed after."""
    started = []

    def make(setup: DaemonSetup, **kwargs) -> DaemonProcess:
        process = DaemonProcess(setup, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()


# The fixture servers' pytest fixtures, available to every test module.
from tests.fixtures.servers import (  # noqa: E402,F401
    failing_server,
    hanging_server,
    healthy_server,
    start_server,
    tls_files,
)
