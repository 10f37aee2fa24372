"""The data volume: XFS, mounted once, noatime, at /var/lib/postgresql at every boot; never reformatted,
grown to the volume's size when it was resized, and no other mount of it (DigitalOcean's /mnt one)."""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, rendered


def steps(ctx: ServiceContext) -> list[StepSpec]:
    device = ctx.settings.volume_device
    values = {"device": device, "mount_point": paths.DATA_MOUNT, "unit": paths.MOUNT_UNIT}
    return [
        StepSpec(
            name="volume-mount",
            script=render("volume/mount.sh.j2", **values),
            files=[
                RemoteFile(
                    f"/etc/systemd/system/{paths.MOUNT_UNIT}",
                    rendered("volume/mount.j2", **values),
                ),
                RemoteFile(
                    "/etc/systemd/system/postgresql@.service.d/matrix-stack-volume.conf",
                    rendered("volume/postgresql-requires-volume.conf.j2", **values),
                ),
            ],
            # A resized volume re-runs the step, which grows the filesystem to the new size.
            versions={"volume-size-gb": str(ctx.settings.volume_size_gb)},
        )
    ]
