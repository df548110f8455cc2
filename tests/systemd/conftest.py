"""Pytest fixtures that boot the host's systemd in a throwaway box (see box.py).

Fixtures:

- `systemd_box` (module scope): one booted Box shared by all tests of a
  module, torn down after the module's last test. A boot took about 0.3 s
  and a teardown about 0.2 s (2-vCPU VM, systemd 252). A module usually
  runs many short checks against the same units, so sharing one box saves
  that time for each of them. Tests that need a pristine box use
  `systemd_box_factory`.
- `systemd_box_binds` (module scope): the folders handed into
  `systemd_box`, as a list of `box.Bind` or paths. The default is empty. A
  test module overrides it by defining its own fixture of that name.
- `systemd_box_factory` (function scope): a callable
  `factory(binds=(), **box_kwargs) -> Box` that boots a fresh box. Every box it
  made is torn down after the test, also when the test fails.
- `systemd_box_support` (function scope): only the skip-or-fail check below,
  for tests that create and tear down a `box.Box` themselves.

Every fixture skips the test when this host cannot boot a box (not root, or
/lib/systemd/systemd, unshare, nsenter or another tool missing). When the
environment variable CI is set to a non-empty value, it fails the test
instead, so a CI run never passes by skipping.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from tests.systemd.box import Bind, Box, BoxError, missing_requirements


def require_systemd_box() -> None:
    """Skip the calling test unless this host can boot a box, or fail it when CI is set."""
    reasons = missing_requirements()
    if not reasons:
        return
    message = "cannot boot a systemd box: " + "; ".join(reasons)
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(message)


def _teardown_all(boxes: list[Box]) -> None:
    """Tear down every box, then fail once if any teardown left something behind."""
    errors = []
    for box in reversed(boxes):
        try:
            box.teardown()
        except BoxError as error:
            errors.append(str(error))
    if errors:
        pytest.fail("systemd box teardown failed: " + " | ".join(errors), pytrace=False)


@pytest.fixture
def systemd_box_support() -> None:
    """Skip (or under CI fail) the test unless this host can boot a box."""
    require_systemd_box()


@pytest.fixture(scope="module")
def systemd_box_binds() -> list[Bind | str | os.PathLike[str]]:
    """Folders handed into the module's `systemd_box`, none by default.

    A test module hands in folders by defining its own fixture of this name.
    """
    return []


@pytest.fixture(scope="module")
def systemd_box(systemd_box_binds: list[Bind | str | os.PathLike[str]]) -> Iterator[Box]:
    """A booted box shared by the test module, with `systemd_box_binds` handed in."""
    require_systemd_box()
    box = Box(systemd_box_binds)
    try:
        box.boot()
        yield box
    finally:
        _teardown_all([box])


@pytest.fixture
def systemd_box_factory() -> Iterator[Callable[..., Box]]:
    """A callable that boots a fresh box per call, and tears all of them down after the test."""
    require_systemd_box()
    boxes: list[Box] = []

    def make_box(binds: list[Bind | str | os.PathLike[str]] | tuple = (), **box_kwargs: object) -> Box:
        box = Box(binds, **box_kwargs)  # type: ignore[arg-type]
        boxes.append(box)
        return box.boot()

    try:
        yield make_box
    finally:
        _teardown_all(boxes)


@pytest.fixture(scope="module")
def mitod_install_binds(tmp_path_factory: pytest.TempPathFactory) -> list[Bind]:
    """Return the read-only binds of the wheels and the checkout that scripts/install needs.

    A module hands them to its box by defining ``systemd_box_binds`` to return
    this fixture's value.
    """
    from tests.systemd.mitod_box import build_wheels, install_binds

    require_systemd_box()
    return install_binds(build_wheels(tmp_path_factory))


@pytest.fixture(scope="module")
def mitod(systemd_box: Box):
    """Return the module's box with mitod installed by scripts/install --wheels."""
    from tests.systemd.mitod_box import MitodBox

    target = MitodBox(systemd_box)
    target.install()
    return target


@pytest.fixture
def fresh_mitod(mitod):
    """Give a test the installed mitod, and restore the fresh installation after it."""
    yield mitod
    mitod.reset()
