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
    version, python = lock.parent.name, lock.stem.removeprefix("python").split("-")[0]
    assert pins["matrix-synapse"] == version  # the lock of its own version
    assert f"for Python {python} on x86_64" in text  # resolved for the Python it is named after
    assert "psycopg2-binary" in pins and "bleach" in pins and "beautifulsoup4" in pins  # driver, url-preview
    assert f"python -m components.synapse_lock {version}" in text


@pytest.mark.parametrize("lock", [p for p in LOCKS if p.stem.endswith("-s3")],
                         ids=[f"{p.parent.name}-{p.stem}" for p in LOCKS if p.stem.endswith("-s3")])
def test_the_s3_variant_adds_the_pinned_provider_and_leaves_out_what_has_no_wheel(lock: Path) -> None:
    """mediaStorage: spaces installs this lock with --no-deps: the provider's own runtime needs (boto3)
    must be in it, psycopg2 (no Linux wheel) must not, and Synapse's pins stay those of a resolution."""
    pins = synapse_lock.pins(lock.read_text())
    assert pins["synapse-s3-storage-provider"] == synapse_lock.S3_PROVIDER.split("==")[1]
    assert {"boto3", "botocore", "s3transfer", "humanize", "tqdm", "pyyaml"} <= set(pins)
    assert "psycopg2" not in pins and "psycopg2-binary" in pins
    plain = synapse_lock.pins(lock.with_name(lock.name.replace("-s3", "")).read_text())
    assert pins["matrix-synapse"] == plain["matrix-synapse"]


@pytest.mark.parametrize("lock", [p for p in LOCKS if "-redis" in p.stem],
                         ids=[f"{p.parent.name}-{p.stem}" for p in LOCKS if "-redis" in p.stem])
def test_the_redis_variant_only_adds_synapses_redis_extra(lock: Path) -> None:
    """synapseWorkers: the same resolution as the lock without workers, plus txredisapi and hiredis, so
    turning workers on installs two packages and moves no pin."""
    pins = synapse_lock.pins(lock.read_text())
    without = synapse_lock.pins(lock.with_name(lock.name.replace("-redis", "")).read_text())
    assert set(pins) - set(without) == {"txredisapi", "hiredis"}
    assert {name: pins[name] for name in without} == without


def test_spaces_media_needs_the_s3_lock_of_the_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    version = DEFAULTS["synapseVersion"]
    plain_only = tmp_path / version / "python3.13.txt"
    plain_only.parent.mkdir()
    plain_only.write_text(synapse_lock.lock_path(version, "3.13").read_text())
    monkeypatch.setattr(synapse_lock, "LOCKS", tmp_path)
    assert not load(raw())[0].media_on_spaces
    with pytest.raises(SettingsError) as error:
        load(raw(mediaStorage="spaces"))
    message = str(error.value)
    assert "matrix-stack:mediaStorage" in message and f"components.synapse_lock {version}" in message
    assert "\n" not in message


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
