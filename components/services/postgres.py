"""PostgreSQL on the data volume: cluster created or adopted, Synapse's role and database, tuning."""

from __future__ import annotations

import pulumi

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read
from components.services import ServiceContext, rendered

PG_MAJOR = "15"  # Debian 12's PostgreSQL; the settings only accept Debian 12 images
PG_CONF_DIR = f"/etc/postgresql/{PG_MAJOR}/main"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def steps(ctx: ServiceContext) -> list[StepSpec]:
    names = {"user": paths.POSTGRES_USER, "database": paths.POSTGRES_DB}
    role_sql = rendered(
        "postgres/role.sql.j2",
        password_literal=_secret_literal(ctx.postgres_password),
        **names,
    )
    return [
        StepSpec(name="postgres-install", script=read("postgres/install.sh"), versions={"postgresql": PG_MAJOR}),
        StepSpec(
            name="postgres-config",
            script=read("postgres/config.sh"),
            files=[
                RemoteFile(
                    f"{PG_CONF_DIR}/conf.d/matrix-stack.conf",
                    rendered("postgres/matrix-stack.conf.j2", tuning=ctx.settings.tuning),
                    mode="0644",
                    owner="postgres",
                    group="postgres",
                ),
                RemoteFile(
                    f"{PG_CONF_DIR}/pg_hba.conf",
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
