"""Fixtures shared by the whole suite: test configurations and real daemon processes."""

import pytest

from mitod.client import Client
from tests.fixtures.servers import HealthyServer
from tests.harness import DaemonProcess, DaemonSetup, wait_for


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


@pytest.fixture(scope="module")
def shared():
    """One daemon per module, checking one healthy site every second.

    For tests that leave it running and unpaused; yields its DaemonSetup.
    """
    with HealthyServer() as server:
        setup = DaemonSetup(sites=[{"name": "web", "url": server.url, "interval": "1s",
                                    "timeout": "1s"}])
        daemon = DaemonProcess(setup).start()
        try:
            with Client(str(setup.socket)) as client:
                wait_for(lambda: client.call("status")["sites"][0]["last_check_at"], 10,
                         message="the first site check")
            yield setup
        finally:
            daemon.stop()
            setup.cleanup()


# The fixture servers' pytest fixtures, available to every test module.
from tests.fixtures.servers import (  # noqa: E402,F401
    failing_server,
    hanging_server,
    healthy_server,
    start_server,
    tls_files,
)
