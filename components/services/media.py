"""`mediaStorage: spaces`: Synapse's media in the Spaces bucket, the local store a bounded cache.

Synapse itself writes to the bucket (synapse-s3-storage-provider, configured in services/synapse.py);
this step installs the daily trim of local copies (`matrix-stack-media-offload`) and marks the
volume, so that a later switch back to local media is refused until the files are fetched back
(`matrix-stack-spaces fetch-media`, installed with the backups: services/backup.py). With local
media there is no step.
"""

from __future__ import annotations

from components import paths
from components.cloud.media_bucket import BACKUP_PREFIX, MEDIA_PREFIX
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, rendered

OFFLOAD_COMMAND = "/usr/local/sbin/matrix-stack-media-offload"
TIMER = "matrix-stack-media-offload.timer"
SERVICE = "matrix-stack-media-offload.service"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
# s3_media_upload's cache.db (its working directory), on the root disk: rebuilt from the database.
OFFLOAD_STATE = "/var/lib/matrix-stack-media-offload"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's trust store (ca-certificates)


def spaces_files(ctx: ServiceContext) -> list[RemoteFile]:
    """The buckets' env files and the backups' encryption key (each 0600 root), and matrix-stack-spaces;
    none with local media."""
    media = ctx.media
    if media is None:
        return []
    common = {"region": media.region, "ca_bundle": CA_BUNDLE, "endpoint_url": media.endpoint_url}
    env = rendered("media/spaces.env.j2", access_key=media.access_key, secret_key=media.secret_key,
                   bucket=media.bucket, media_prefix=MEDIA_PREFIX, media_store=paths.SYNAPSE_MEDIA_STORE,
                   cache_days=ctx.settings.media_cache_days, **common)
    backup_env = rendered("media/backup-spaces.env.j2", access_key=media.backup_access_key,
                          secret_key=media.backup_secret_key, bucket=media.backup_bucket, backup_prefix=BACKUP_PREFIX,
                          **common)
    key = rendered("media/backup.key.j2", key=media.backup_encryption_key)
    tool = render("media/matrix-stack-spaces.py.j2", python=f"{paths.SYNAPSE_VENV}/bin/python",
                  media_env=paths.SPACES_ENV, backup_env=paths.SPACES_BACKUP_ENV, key_file=paths.BACKUP_ENCRYPTION_KEY,
                  marker=paths.MEDIA_SPACES_MARKER, synapse_user=paths.SYNAPSE_USER, offload_timer=TIMER)
    return [RemoteFile(paths.SPACES_ENV, env, mode="0600"), RemoteFile(paths.SPACES_BACKUP_ENV, backup_env, mode="0600"),
            RemoteFile(paths.BACKUP_ENCRYPTION_KEY, key, mode="0600"),
            RemoteFile(paths.SPACES_COMMAND, tool, mode="0755")]


def steps(ctx: ServiceContext) -> list[StepSpec]:
    if ctx.media is None:
        return []
    offload = render("media/offload.sh.j2", venv=paths.SYNAPSE_VENV, config=paths.SYNAPSE_CONFIG,
                     env_file=paths.SPACES_ENV, state_dir=OFFLOAD_STATE, user=paths.SYNAPSE_USER)
    service = render("media/matrix-stack-media-offload.service.j2", command=OFFLOAD_COMMAND, user=paths.SYNAPSE_USER,
                     env_file=paths.SPACES_ENV, synapse_unit=paths.SYNAPSE_UNIT, data_mount=paths.DATA_MOUNT,
                     data_dir=paths.SYNAPSE_DATA, state_dir=OFFLOAD_STATE)
    return [
        StepSpec(
            name="media-offload",
            script=render("media/offload-schedule.sh.j2", marker=paths.MEDIA_SPACES_MARKER, timer=TIMER,
                          timer_path=TIMER_PATH),
            files=[
                RemoteFile(OFFLOAD_COMMAND, offload, mode="0755"),
                RemoteFile(SERVICE_PATH, service, mode="0644"),
                RemoteFile(TIMER_PATH, read("media/matrix-stack-media-offload.timer"), mode="0644"),
            ],
        )
    ]
