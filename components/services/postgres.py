"""Synapse's database: PostgreSQL on the data volume (cluster created or adopted, Synapse's role and
database, tuning), or with `database: managed` the managed cluster (database created, data moved there).

Both modes install `matrix-stack-db`, through which the other tools (backup, maintenance, self-check)
reach Synapse's database without knowing where it lives.
"""

from __future__ import annotations

import pulumi

from components import paths
from components.cloud.database import DatabaseEndpoint
from components.platform import PLATFORMS, older_platforms
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, rendered

UPGRADE_COMMAND = "/usr/local/sbin/matrix-stack-postgres-upgrade"
# Debian's archive signing keys (package debian-archive-keyring): debootstrap checks the old release with them.
DEBIAN_ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# database: managed. How long the step waits for the cluster to accept a verified connection (a new
# cluster or trusted source takes a while), and where the dump of a move is kept (root only).
MANAGED_CONNECT_TIMEOUT_S = 300
MOVES_DIR = f"{paths.DATA_MOUNT}/matrix-stack/database-moves"


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
        managed=ctx.database is not None,
        marker=paths.DATABASE_MANAGED_MARKER,
    )
    upgrade = render(
        "postgres/upgrade.sh.j2",
        suites={p.postgres_major: p.codename for p in older_platforms(platform)},
        database=paths.POSTGRES_DB,
        data_mount=paths.DATA_MOUNT,
        archive_keyring=DEBIAN_ARCHIVE_KEYRING,
    )
    install_step = StepSpec(
        name="postgres-install",
        script=install,
        files=[RemoteFile(UPGRADE_COMMAND, upgrade, mode="0755")],
        versions={"postgresql": platform.postgres_major},
    )
    database_command = RemoteFile(paths.DATABASE_COMMAND, render(
        "postgres/matrix-stack-db.sh.j2", managed=ctx.database is not None,
        service_file=paths.MANAGED_DB_SERVICES, password_file=paths.MANAGED_DB_PASSWORDS), mode="0755")
    if ctx.database is not None:
        return [install_step, _managed_step(ctx, ctx.database, database_command)]
    return [
        install_step,
        StepSpec(
            name="postgres-config",
            script=render("postgres/config.sh.j2", major=platform.postgres_major),
            files=[
                database_command,
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


def _managed_step(ctx: ServiceContext, endpoint: DatabaseEndpoint, database_command: RemoteFile) -> StepSpec:
    """`postgres-managed`: the cluster's CA and connection files, Synapse's database made there, and the
    data moved from the local cluster when it holds Synapse's (a switch from database: local)."""
    connection = {"host": endpoint.host, "port": endpoint.port, "user": endpoint.user,
                  "admin_user": endpoint.admin_user}
    script = render(
        "postgres/managed.sh.j2",
        major=ctx.settings.platform.postgres_major,
        database=paths.POSTGRES_DB,
        role=endpoint.user,
        marker=paths.DATABASE_MANAGED_MARKER,
        moves_dir=MOVES_DIR,
        synapse_unit=paths.SYNAPSE_UNIT,
        connect_timeout=MANAGED_CONNECT_TIMEOUT_S,
        service_file=paths.MANAGED_DB_SERVICES,
        password_file=paths.MANAGED_DB_PASSWORDS,
    )
    return StepSpec(
        name="postgres-managed",
        script=script,
        files=[
            database_command,
            RemoteFile(paths.MANAGED_DB_CA, endpoint.ca_certificate, mode="0644"),
            RemoteFile(paths.MANAGED_DB_SERVICES, rendered(
                "postgres/pg_service.conf.j2", database=paths.POSTGRES_DB, ca_file=paths.MANAGED_DB_CA,
                password_file=paths.MANAGED_DB_PASSWORDS, **connection), mode="0644"),
            RemoteFile(paths.MANAGED_DB_PASSWORDS, rendered(
                "postgres/pgpass.j2", password=endpoint.password, admin_password=endpoint.admin_password,
                **connection), mode="0600"),
        ],
    )


def _secret_literal(password: pulumi.Input[str]) -> pulumi.Input[str]:
    """SQL-quote the password, whether it is a plain string or a (secret) Output."""
    if isinstance(password, pulumi.Output):
        return password.apply(_sql_literal)
    return _sql_literal(str(password))
