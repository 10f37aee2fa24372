"""The data volume: XFS, mounted once, noatime, at /srv/matrix at every boot (root-owned, a directory
per service; PostgreSQL's bound at /var/lib/postgresql); never reformatted, grown to the volume's size
when it was resized, no other mount of it (DigitalOcean's /mnt one), and a volume in the layout
before (mounted at /var/lib/postgresql, owned by postgres) moved to this one in place."""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, rendered
from components.services.release import volume_writers


def steps(ctx: ServiceContext) -> list[StepSpec]:
    device = ctx.settings.volume_device
    values = {"device": device, "mount_point": paths.DATA_MOUNT, "unit": paths.MOUNT_UNIT,
              "postgres_base": paths.POSTGRES_BASE, "postgres_volume_dir": paths.POSTGRES_VOLUME_DIR,
              "bind_unit": paths.POSTGRES_BIND_UNIT}
    script = render("volume/mount.sh.j2", **values, writers=volume_writers(ctx.settings.platform))
    return [
        StepSpec(
            name="volume-mount",
            script=script,
            files=[
                RemoteFile(
                    f"/etc/systemd/system/{paths.MOUNT_UNIT}",
                    rendered("volume/mount.j2", **values),
                ),
                RemoteFile(
                    f"/etc/systemd/system/{paths.POSTGRES_BIND_UNIT}",
                    rendered("volume/bind.j2", **values),
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
