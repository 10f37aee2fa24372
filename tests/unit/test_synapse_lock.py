"""Synapse's dependency locks: one per supported version, every package pinned with hashes, and a
version without one refused before any resource exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components import synapse_lock
from components.platform import PLATFORMS, Platform
from components.settings import DEFAULTS, SettingsError, load
from tests.unit.test_settings import raw

LOCKS = sorted(synapse_lock.LOCKS.glob("*/python*.txt"))
REQUIREMENT = re.compile(r"^(\S+)==(\S+) \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.codename for p in PLATFORMS])
def test_the_default_version_has_a_lock_for_every_supported_image(platform: Platform) -> None:
    assert synapse_lock.lock_path(DEFAULTS["synapseVersion"], platform.python) in LOCKS


@pytest.mark.parametrize("lock", LOCKS, ids=[f"{p.parent.name}-{p.stem}" for p in LOCKS])
def test_every_package_is_pinned_with_the_hashes_of_its_files(lock: Path) -> None:
    text = lock.read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    requirements, hashes = 0, 0
    for line in lines:
        if REQUIREMENT.match(line):
            requirements += 1
        else:
            assert HASH.match(line), f"{lock.stem}: neither a pin nor a hash: {line!r}"
            hashes += 1
    pins = synapse_lock.pins(text)
    assert requirements == len(pins) > 20 and hashes >= requirements
    version, python = lock.parent.name, lock.stem.removeprefix("python")
    assert pins["matrix-synapse"] == version  # the lock of its own version
    assert f"for Python {python} on x86_64" in text  # resolved for the Python it is named after
    assert "psycopg2-binary" in pins and "bleach" in pins and "beautifulsoup4" in pins  # driver, url-preview
    assert f"python -m components.synapse_lock {version}" in text


def test_a_version_without_a_lock_is_refused_naming_the_command_that_makes_one() -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(synapseVersion="1.999.0"))
    message = str(error.value)
    assert "matrix-stack:synapseVersion" in message and "\n" not in message
    assert "python -m components.synapse_lock 1.999.0" in message


def test_a_version_locked_for_one_image_only_is_refused_on_the_other(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The lock is per Python: a version locked for Debian 12's Python only cannot deploy on Debian 13."""
    only_12 = tmp_path / DEFAULTS["synapseVersion"] / "python3.11.txt"
    only_12.parent.mkdir()
    only_12.write_text(synapse_lock.lock_path(DEFAULTS["synapseVersion"], "3.11").read_text())
    monkeypatch.setattr(synapse_lock, "LOCKS", tmp_path)
    assert load(raw(dropletImage="debian-12-x64"))[0].platform.python == "3.11"
    with pytest.raises(SettingsError) as error:
        load(raw(dropletImage="debian-13-x64"))
    message = str(error.value)
    assert "matrix-stack:synapseVersion" in message and "Python 3.13" in message and "\n" not in message
