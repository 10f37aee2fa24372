"""Weekly upkeep of Synapse's database, so a small volume lasts for years.

Synapse deletes what the disk guardrails say (old media, stale devices) by itself, daily; a weekly
VACUUM (ANALYZE) then makes the freed rows' space reusable and keeps the planner's statistics fresh.
The step runs right after the backups' (both are timers on the volume's database).
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext

COMMAND = "/usr/local/sbin/matrix-stack-maintenance"
TIMER = "matrix-stack-maintenance.timer"
SERVICE = "matrix-stack-maintenance.service"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"


def steps(ctx: ServiceContext) -> list[StepSpec]:
    command = render("maintenance/maintenance.sh.j2", database=paths.POSTGRES_DB,
                     database_command=paths.DATABASE_COMMAND)
    service = render(
        "maintenance/matrix-stack-maintenance.service.j2",
        command=COMMAND,
        postgres_unit=ctx.local_postgres_unit,
        data_mount=paths.DATA_MOUNT,
    )
    return [
        StepSpec(
            name="maintenance-schedule",
            script=render("maintenance/schedule.sh.j2", timer=TIMER, timer_path=TIMER_PATH),
            files=[
                RemoteFile(COMMAND, command, mode="0755"),
                RemoteFile(SERVICE_PATH, service, mode="0644"),
                RemoteFile(TIMER_PATH, read("maintenance/matrix-stack-maintenance.timer"), mode="0644"),
            ],
        )
    ]
