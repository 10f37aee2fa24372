"""The deployed test host shared by the end-to-end tests (one deployment per session)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deployment import E2E_INDEX, Deployment, deployed_host


@pytest.fixture(scope="session")
def volume_image() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="matrix-stack-volume-", dir="/var/tmp"))
    try:
        yield directory / "volume.img"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def deployment(volume_image: Path) -> Iterator[Deployment]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end suite needs root (network namespaces, systemd-nspawn, loop devices)")
    with deployed_host(E2E_INDEX, volume_image) as deployed:
        results = deployed.apply()
        print("\nprovisioning steps:")
        for result in results:
            print(f"  {result.name:24s} {result.seconds:6.1f} s")
        yield deployed


# Modules that move the shared host's database to a managed cluster and back, federate it with others,
# rewind its database, re-install Synapse, reboot and re-provision it: they run, in this order, after
# every other test, which expects the host as first provisioned.
RUN_LAST = ("test_managed_database.py", "test_federation.py", "test_backup.py", "test_lifecycle.py")


@pytest.fixture(autouse=True)
def _edge_stand_in_had_no_failure() -> Iterator[None]:
    """A failure inside the edge stand-in (tests/e2e/edge.py) fails the test that caused it, with its
    traceback, instead of showing only as a 500 somewhere."""
    yield
    from tests.e2e import edge

    if edge._shared is not None and edge._shared.errors:
        failures, edge._shared.errors = edge._shared.errors, []
        pytest.fail("the edge stand-in failed:\n" + "\n".join(failures))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put RUN_LAST at the end, and relax one warning for the end-to-end suite.

    aiohttp on Python 3.11 can leave a closed client's TLS transport for the garbage collector,
    which then warns from __del__ at a random later moment. That says nothing about the server
    under test, so in the end-to-end suite those unraisable ResourceWarnings are not errors."""
    def position(item: pytest.Item) -> int:
        return RUN_LAST.index(item.path.name) + 1 if item.path.name in RUN_LAST else 0

    items.sort(key=position)  # stable: every other order is kept
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))


# The end-to-end suite's own duration (CI must stay under an hour; the unit and template tests that run
# before it are not part of this figure): from the first e2e test's setup to the last one's teardown.
_e2e_clock: dict[str, float] = {}


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _e2e_clock.setdefault("start", time.monotonic())


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _e2e_clock["end"] = time.monotonic()
    _e2e_clock["tests"] = _e2e_clock.get("tests", 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "end" in _e2e_clock:
        seconds = _e2e_clock["end"] - _e2e_clock["start"]
        terminalreporter.write_line(f"end-to-end suite: {_e2e_clock['tests']:.0f} tests in {seconds:.0f} s "
                                    f"({seconds / 60:.1f} min)")
