"""PostgreSQL on the data volume: cluster created or adopted, Synapse's role and database, tuning."""

from __future__ import annotations

import pulumi

from components import paths
from components.platform import PLATFORMS, older_platforms
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, rendered

UPGRADE_COMMAND = "/usr/local/sbin/matrix-stack-postgres-upgrade"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def steps(ctx: ServiceContext) -> list[StepSpec]:
    names = {"user": paths.POSTGRES_USER, "database": paths.POSTGRES_DB}
    role_sql = rendered(
        "postgres/role.sql.j2",
        password_literal=_secret_literal(ctx.postgres_password),
        **names,
    )
    platform = ctx.settings.platform
    major = int(platform.postgres_major)
    install = render(
        "postgres/install.sh.j2",
        major=platform.postgres_major,
        older=[p.postgres_major for p in reversed(older_platforms(platform))],
        newer=[p.postgres_major for p in PLATFORMS if int(p.postgres_major) > major],
        upgrade_command=UPGRADE_COMMAND,
    )
    upgrade = render(
        "postgres/upgrade.sh.j2",
        suites={p.postgres_major: p.codename for p in older_platforms(platform)},
        database=paths.POSTGRES_DB,
        data_mount=paths.DATA_MOUNT,
    )
    return [
        StepSpec(
            name="postgres-install",
            script=install,
            files=[RemoteFile(UPGRADE_COMMAND, upgrade, mode="0755")],
            versions={"postgresql": platform.postgres_major},
        ),
        StepSpec(
            name="postgres-config",
            script=render("postgres/config.sh.j2", major=platform.postgres_major),
            files=[
                RemoteFile(
                    f"{platform.postgres_conf_dir}/conf.d/matrix-stack.conf",
                    rendered("postgres/matrix-stack.conf.j2", tuning=ctx.settings.tuning),
                    mode="0644",
                    owner="postgres",
                    group="postgres",
                ),
                RemoteFile(
                    f"{platform.postgres_conf_dir}/pg_hba.conf",
                    rendered("postgres/pg_hba.conf.j2", **names),
                    mode="0640",
                    owner="postgres",
                    group="postgres",
                ),
                RemoteFile("/etc/matrix-stack/postgres-role.sql", role_sql, mode="0600", owner="postgres", group="postgres"),
            ],
        ),
    ]


def _secret_literal(password: pulumi.Input[str]) -> pulumi.Input[str]:
    """SQL-quote the password, whether it is a plain string or a (secret) Output."""
    if isinstance(password, pulumi.Output):
        return password.apply(_sql_literal)
    return _sql_literal(str(password))
