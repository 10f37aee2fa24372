"""Backups on the data volume: a daily dump of Synapse's database plus its signing key and config,
and the commands to take one by hand and to restore one.

The step runs right after PostgreSQL, so the backup command exists before `synapse-install`, which
takes a backup before every Synapse version change. Backups live on the volume, so they outlive
the droplet; they do not protect against losing the volume itself (docs/operate.md), unless
`mediaStorage: spaces` copies each one to the bucket as well (`matrix-stack-spaces`), from where
`matrix-stack-restore spaces:<name>` restores it on any droplet of the stack.
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext
from components.services.media import spaces_files

TIMER = "matrix-stack-backup.timer"
SERVICE = "matrix-stack-backup.service"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
# Share of the volume that a backup or a restore must leave free: PostgreSQL lives on the volume too.
FREE_RESERVE_PERCENT = 10


def steps(ctx: ServiceContext) -> list[StepSpec]:
    host, port = paths.SYNAPSE_LISTEN
    backup = render(
        "backup/backup.sh.j2",
        backup_dir=paths.BACKUP_DIR,
        data_mount=paths.DATA_MOUNT,
        database=paths.POSTGRES_DB,
        database_command=paths.DATABASE_COMMAND,
        keep_days=ctx.settings.backup_keep_days,
        reserve_percent=FREE_RESERVE_PERCENT,
        copies=[paths.SYNAPSE_SIGNING_KEY, paths.SYNAPSE_CONFIG, paths.SYNAPSE_LOG_CONFIG],
        spaces_command=paths.SPACES_COMMAND if ctx.media else "",
    )
    restore = render(
        "backup/restore.sh.j2",
        backup_dir=paths.BACKUP_DIR,
        database=paths.POSTGRES_DB,
        owner=paths.POSTGRES_USER,
        unit=paths.SYNAPSE_UNIT,
        signing_key=paths.SYNAPSE_SIGNING_KEY,
        synapse_user=paths.SYNAPSE_USER,
        health_url=f"http://{host}:{port}/health",
        reserve_percent=FREE_RESERVE_PERCENT,
        managed_marker=paths.DATABASE_MANAGED_MARKER,
        spaces_command=paths.SPACES_COMMAND if ctx.media else "",
        venv=paths.SYNAPSE_VENV,
        config=paths.SYNAPSE_CONFIG,
    )
    service = render(
        "backup/matrix-stack-backup.service.j2",
        backup_command=paths.BACKUP_COMMAND,
        postgres_unit=ctx.local_postgres_unit,
        data_mount=paths.DATA_MOUNT,
    )
    script = render(
        "backup/schedule.sh.j2",
        data_mount=paths.DATA_MOUNT,
        backup_dir=paths.BACKUP_DIR,
        timer=TIMER,
        timer_path=TIMER_PATH,
    )
    return [
        StepSpec(
            name="backup-schedule",
            script=script,
            files=[
                RemoteFile(paths.BACKUP_COMMAND, backup, mode="0755"),
                RemoteFile(paths.RESTORE_COMMAND, restore, mode="0755"),
                RemoteFile(SERVICE_PATH, service, mode="0644"),
                RemoteFile(TIMER_PATH, read("backup/matrix-stack-backup.timer"), mode="0644"),
                # mediaStorage: spaces: the backup's copy goes to the bucket (services/media.py).
                *spaces_files(ctx),
            ],
        )
    ]
