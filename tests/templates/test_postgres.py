"""Postgres step: the rendered settings, pg_hba and SQL run on a real PostgreSQL 15 server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import paths
from components.services import postgres
from tests.templates.conftest import FAKE_SECRETS, as_postgres, free_tcp_port, make_context, postgres_server

PORT = free_tcp_port()  # not a fixed one: another test session may run a server too


def rendered_files(**config: str) -> dict[str, str]:
    return {Path(f.path).name: str(f.content) for s in postgres.steps(make_context(**config)) for f in s.files}


@pytest.fixture
def server() -> Iterator[tuple[Path, Path]]:
    """A throwaway cluster with the rendered conf.d file and pg_hba.conf, listening on a socket dir."""
    files = rendered_files(dropletSize="s-2vcpu-4gb")
    with postgres_server(PORT, {"conf.d/matrix-stack.conf": files["matrix-stack.conf"],
                                "pg_hba.conf": files["pg_hba.conf"]}) as running:
        yield running


def psql(sock: Path, *args: str, stdin: str | None = None, user: str = "postgres") -> subprocess.CompletedProcess[str]:
    return as_postgres(
        "psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(PORT), "-U", user, "-d", "postgres", *args, input=stdin
    )


def test_settings_parse_and_apply_on_a_real_server(server: tuple[Path, Path]) -> None:
    _, sock = server
    shown = psql(sock, "-At", "-c", "SHOW shared_buffers; SHOW listen_addresses; SHOW password_encryption;")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["512MB", "127.0.0.1", "scram-sha-256"]


def test_role_sql_creates_the_database_right_and_is_idempotent(server: tuple[Path, Path]) -> None:
    _, sock = server
    sql = rendered_files()["postgres-role.sql"]
    for _ in range(2):  # the second run must succeed and change nothing
        result = psql(sock, "-q", stdin=sql)
        assert result.returncode == 0, result.stderr
    db = psql(sock, "-At", "-c", "SELECT datcollate, datctype, pg_encoding_to_char(encoding), "
              "pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'synapse'")
    assert db.stdout.split("|") == ["C", "C", "UTF8", f"{paths.POSTGRES_USER}\n"]


def test_synapse_role_logs_in_over_tcp_with_scram_only(server: tuple[Path, Path]) -> None:
    _, sock = server
    assert psql(sock, "-q", stdin=rendered_files()["postgres-role.sql"]).returncode == 0
    env = {**os.environ, "PGPASSWORD": FAKE_SECRETS["postgres_password"]}
    ok = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(PORT), "-U", paths.POSTGRES_USER, "-d", "synapse", "-Atc", "SELECT 1"],
        capture_output=True, text=True, env=env,
    )
    assert ok.stdout.strip() == "1", ok.stderr
    bad = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(PORT), "-U", paths.POSTGRES_USER, "-d", "synapse", "-Atc", "SELECT 1"],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": "wrong"},
    )
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    other_db = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(PORT), "-U", paths.POSTGRES_USER, "-d", "postgres", "-Atc", "SELECT 1"],
        capture_output=True, text=True, env=env,
    )
    assert other_db.returncode != 0  # pg_hba allows the synapse database only


def test_password_is_only_in_the_0600_sql_file() -> None:
    for spec in postgres.steps(make_context()):
        assert FAKE_SECRETS["postgres_password"] not in spec.script
        for file in spec.files:
            if FAKE_SECRETS["postgres_password"] in str(file.content):
                assert (file.mode, file.owner) == ("0600", "postgres")
