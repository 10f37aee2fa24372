"""The volume guard: stop every writer and unmount the data volume before it is detached.

DigitalOcean detaches a volume when its VolumeAttachment is deleted: on `pulumi destroy` and when
a droplet replacement re-attaches it to the new droplet. Detaching a mounted XFS under a running
PostgreSQL is a power cut for the database. This step's resource sits between the attachment and
every other step, so the engine deletes it before the attachment (dependents go first, on destroy
and on delete-before-replace); pulumi-command then runs its delete command on the old droplet:
stop Synapse, the backup, upkeep and certbot jobs and PostgreSQL (a clean shutdown, no crash recovery later), then
unmount every mount of the volume. Its identity is the attachment and droplet, so editing this
script updates it in place and never runs the delete on a live server.
"""

from __future__ import annotations

from components import paths
from components.platform import Platform
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, backup, certificates, maintenance
from components.services.health import SERVICE as HEALTH_SERVICE
from components.services.health import TIMER as HEALTH_TIMER

RELEASE_COMMAND = "/usr/local/sbin/matrix-stack-release-volume"


def volume_writers(platform: Platform) -> list[str]:
    """Every unit that writes to the volume, in stopping order. The timers first: their services would
    start PostgreSQL (and mount the volume) again; certbot renews into the certificate store on the volume. The
    checks between deploys only read it, but would mail the operator that it is gone."""
    return [paths.SYNAPSE_UNIT, backup.TIMER, backup.SERVICE, maintenance.TIMER, maintenance.SERVICE,
            certificates.TIMER, certificates.SERVICE, HEALTH_TIMER, HEALTH_SERVICE, platform.postgres_unit]


def steps(ctx: ServiceContext) -> list[StepSpec]:
    release = render(
        "release/release-volume.sh.j2",
        device=ctx.settings.volume_device,
        mount_point=paths.DATA_MOUNT,
        mount_units=[paths.POSTGRES_BIND_UNIT, paths.MOUNT_UNIT],  # the bind on the volume first
        writers=volume_writers(ctx.settings.platform),
    )
    return [
        StepSpec(
            name="release-volume",
            script=render("release/install.sh.j2", command=RELEASE_COMMAND),
            files=[RemoteFile(RELEASE_COMMAND, release, mode="0755")],
            on_delete=RELEASE_COMMAND,
        )
    ]
