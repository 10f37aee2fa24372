"""Volume step: the mount unit is valid for systemd and mounts the DigitalOcean device noatime."""

from __future__ import annotations

import subprocess
from pathlib import Path

from components import paths
from components.services import volume
from tests.templates.conftest import make_context, parse_unit


def unit_text() -> str:
    (spec,) = volume.steps(make_context())
    return next(str(f.content) for f in spec.files if f.path.endswith(paths.MOUNT_UNIT))


def test_mount_unit_mounts_the_volume_by_id_as_xfs_noatime() -> None:
    parser = parse_unit(unit_text())
    mount = parser["Mount"]
    assert mount["What"] == make_context().settings.volume_device
    assert mount["What"].startswith("/dev/disk/by-id/scsi-0DO_Volume_")
    assert mount["Where"] == paths.DATA_MOUNT
    assert mount["Type"] == "xfs"
    assert "noatime" in mount["Options"].split(",")
    assert "postgresql.service" in parser["Unit"]["Before"]


def test_mount_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / paths.MOUNT_UNIT
    unit.write_text(unit_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [
        line for line in result.stderr.splitlines()
        if paths.MOUNT_UNIT in line and "Failed to" not in line and "not found" not in line.lower()
    ]
    assert problems == [], result.stderr


# Never formatting a volume that holds a filesystem is behaviour, checked on the real host:
# tests/e2e/test_lifecycle.py runs the volume step on a released volume and compares its XFS UUID
# and a file on it; the data-survival tests boot fresh droplets on a used volume.
