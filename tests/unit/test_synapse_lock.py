"""Synapse's dependency locks: one per supported version, every package pinned with hashes, and a
version without one refused before any resource exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components import synapse_lock
from components.settings import DEFAULTS, SettingsError, load
from tests.unit.test_settings import raw

LOCKS = sorted(synapse_lock.LOCKS.glob("*.txt"))
REQUIREMENT = re.compile(r"^(\S+)==(\S+) \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def test_the_default_version_has_a_lock() -> None:
    assert synapse_lock.lock_path(DEFAULTS["synapseVersion"]) in LOCKS


@pytest.mark.parametrize("lock", LOCKS, ids=[p.stem for p in LOCKS])
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
    assert pins["matrix-synapse"] == lock.stem  # the lock of its own version
    assert "psycopg2-binary" in pins and "bleach" in pins and "beautifulsoup4" in pins  # driver, url-preview
    assert f"python -m components.synapse_lock {lock.stem}" in text


def test_a_version_without_a_lock_is_refused_naming_the_command_that_makes_one() -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(synapseVersion="1.999.0"))
    message = str(error.value)
    assert "matrix-stack:synapseVersion" in message and "\n" not in message
    assert "python -m components.synapse_lock 1.999.0" in message
