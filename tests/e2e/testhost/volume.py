"""The test host's data "volume": a sparse image file attached as a loop device.

The loop device is bound into the guest at DigitalOcean's by-id path, so the program's volume
scripts run unchanged. The image outlives the guest, so a new guest on it sees the old data.
"""

from __future__ import annotations

from pathlib import Path

from ._proc import run

DEFAULT_SIZE = 2 * 1024**3
VOLUME_DIR = Path("/var/lib/matrix-stack-e2e/volumes")


def guest_path(volume_name: str) -> str:
    """Where DigitalOcean exposes a volume called `volume_name` inside the droplet."""
    return f"/dev/disk/by-id/scsi-0DO_Volume_{volume_name}"


def ensure_image(path: Path, size: int = DEFAULT_SIZE) -> None:
    """Create a sparse image of `size` bytes unless one exists (existing data is kept)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as image:
        image.truncate(size)


def devices_for(path: Path) -> list[str]:
    """Loop devices currently backed by `path`."""
    out = run(["losetup", "-n", "-O", "NAME", "-j", str(path.resolve())], timeout=30).stdout
    return out.decode().split()


def attach(path: Path) -> str:
    """Attach `path` to a free loop device (reusing one already attached) and return its node."""
    existing = devices_for(path)
    if existing:
        return existing[0]
    return run(["losetup", "-f", "--show", str(path.resolve())], timeout=30).stdout.decode().strip()


def detach(path: Path) -> None:
    """Detach every loop device backed by `path`; quiet if none."""
    if path.exists():
        for dev in devices_for(path):
            run(["losetup", "-d", dev], timeout=30, check=False)
