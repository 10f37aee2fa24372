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


def ensure_image(path: Path, size: int = DEFAULT_SIZE, filesystem: str | None = None) -> bool:
    """Create a sparse image of `size` bytes unless one exists (existing data is kept); True if new.

    `filesystem` formats a new image, as DigitalOcean formats a volume created with
    initial_filesystem_type (the program asks for xfs); None leaves it blank.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as image:
        image.truncate(size)
    if filesystem is not None:
        run([f"mkfs.{filesystem}", "-q", str(path)], timeout=120)
    return True


def grow(path: Path, size: int) -> None:
    """Grow the image (a volume resized in the account) and tell its loop devices the new size."""
    with open(path, "r+b") as image:
        image.truncate(size)
    for dev in devices_for(path):
        run(["losetup", "-c", dev], timeout=30)


def devices_for(path: Path) -> list[str]:
    """Loop devices currently backed by `path`."""
    out = run(["losetup", "-n", "-O", "NAME", "-j", str(path.resolve())], timeout=30).stdout
    return out.decode().split()


def attach(path: Path) -> str:
    """Attach `path` to a new loop device of its own and return its node.

    Each host gets its own device, so one host can go (its device detached) while another, booted on
    the same image, stays: a droplet replacement. Only one of them ever mounts it at a time.
    """
    return run(["losetup", "-f", "--show", str(path.resolve())], timeout=30).stdout.decode().strip()


def detach_device(device: str) -> None:
    run(["losetup", "-d", device], timeout=30, check=False)


def detach(path: Path) -> None:
    """Detach every loop device backed by `path`; quiet if none."""
    if path.exists():
        for dev in devices_for(path):
            run(["losetup", "-d", dev], timeout=30, check=False)
