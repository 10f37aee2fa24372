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


UPGRADE_DRIVER = r"""
set -uo pipefail
work=$1 script=$2
export PATH=$work/bin:$PATH
install -d -m 0700 /var/lib/postgresql/15/main
echo 15 > /var/lib/postgresql/15/main/PG_VERSION
bash "$script" 15 17 > "$work/out" 2>&1
echo $? > "$work/rc"
"""
# debootstrap records how it was called and fails (nothing is downloaded); apt names a plain-HTTP mirror.
UPGRADE_STUBS = {
    "debootstrap": 'printf "%s\\n" "$@" > "$WORK/debootstrap.argv"; exit 1',
    "apt-get": 'echo "http://mirror.invalid/debian $(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)"',
    "apt-config": "true",
}


def test_the_old_release_is_unpacked_only_with_checked_signatures(tmp_path: Path) -> None:
    """The 12 -> 13 upgrade unpacks PostgreSQL 15 with debootstrap from the droplet's mirror, which may be
    plain HTTP: the call names Debian's archive keyring and forces the signature check."""
    from tests.templates.sandbox import run_in_sandbox

    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    for name, body in UPGRADE_STUBS.items():
        (work / "bin" / name).write_text(f"#!/bin/bash\n{body}\n")
        (work / "bin" / name).chmod(0o755)
    script = next(str(f.content) for s in postgres.steps(make_context(dropletImage="debian-13-x64"))
                  for f in s.files if f.path == postgres.UPGRADE_COMMAND)
    (work / "upgrade.sh").write_text(script.replace("data_mount=/srv/matrix", "data_mount=/var/lib"))
    driver = UPGRADE_DRIVER.replace("export PATH", f"export WORK={work}\nexport PATH")
    proc = run_in_sandbox(tmp_path, driver, [str(work), str(work / "upgrade.sh")], tmpfs=["/var/cache", "/var/log"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = (work / "out").read_text()
    assert "could not unpack PostgreSQL 15" in out, out
    argv = (work / "debootstrap.argv").read_text().splitlines()
    assert f"--keyring={postgres.DEBIAN_ARCHIVE_KEYRING}" in argv and "--force-check-gpg" in argv, argv
    assert argv[-3:-1] == ["bookworm", "/var/cache/matrix-stack/postgresql-15-root.partial"], argv
    assert argv[-1] == "http://mirror.invalid/debian"
