"""Backups on the real host: the daily timer, what a backup holds, pruning, a restore that brings
the database back (keeping the one it replaces), a damaged backup refused, the self-check noticing
a stopped timer, and the backup synapse-install takes before changing Synapse's version.

Runs after the tests that expect the host as first provisioned (see conftest): a restore rewinds
the database and the version change re-installs Synapse.
"""

from __future__ import annotations

import re
import secrets
import shlex

import pytest

from components import paths
from components.services import backup
from components.settings import DEFAULTS
from tests.e2e.accounts import create_user, guest_api, login
from tests.e2e.deployment import DOMAIN, Deployment
from tests.e2e.runner import StepFailed, run_all

pytestmark = pytest.mark.e2e

BACKUP_FILES = {"synapse.dump", "signing.key", "homeserver.yaml", "log.yaml", "SHA256SUMS"}
OTHER_VERSION = "1.163.1"  # a published Synapse release next to the default, same database schema


def backups(deployment: Deployment) -> list[str]:
    return deployment.ssh(f"ls -1 {paths.BACKUP_DIR}").split()


def take_backup(deployment: Deployment, label: str) -> str:
    """Run the backup command as an operator would; returns the new backup's directory."""
    path = deployment.ssh(f"{paths.BACKUP_COMMAND} {shlex.quote(label)}").strip().splitlines()[-1]
    assert path.startswith(f"{paths.BACKUP_DIR}/") and path.endswith(f"-{label}"), path
    return path


def user_status(deployment: Deployment, admin_token: str, localpart: str) -> int:
    """HTTP status of the admin API's user lookup (200: exists, 404: unknown), asked on the server."""
    return guest_api(deployment, admin_token, "GET", f"/_synapse/admin/v2/users/@{localpart}:{DOMAIN}")[0]


def psql(deployment: Deployment, database: str, sql: str) -> str:
    return deployment.ssh(f"cd / && runuser -u postgres -- psql -X -A -t -q -d {shlex.quote(database)}", stdin=sql)


@pytest.fixture(scope="module")
def admin_token(deployment: Deployment) -> str:
    return login(deployment, "admin", deployment.admin_password)[1]


def test_the_daily_timer_is_scheduled_and_its_run_writes_a_backup(deployment: Deployment) -> None:
    assert deployment.ssh(f"systemctl is-enabled {backup.TIMER}").strip() == "enabled"
    assert deployment.ssh(f"systemctl is-active {backup.TIMER}").strip() == "active"
    next_run = deployment.ssh(f"systemctl show -P NextElapseUSecRealtime {backup.TIMER}").strip()
    print(f"\nnext scheduled backup: {next_run}")
    assert next_run

    before = set(backups(deployment))
    deployment.ssh(f"systemctl start {backup.SERVICE}")  # what the timer starts; waits for the oneshot
    assert deployment.ssh(f"systemctl show -P Result {backup.SERVICE}").strip() == "success"
    new = set(backups(deployment)) - before
    assert len(new) == 1 and new.pop().endswith("-scheduled")


def test_a_backup_holds_the_database_the_signing_key_and_the_config(deployment: Deployment) -> None:
    path = take_backup(deployment, "manual")
    listing = deployment.ssh(f"stat -c '%n %a %U' {path} {path}/*").splitlines()
    modes = {line.split()[0].removeprefix(f"{path}/"): tuple(line.split()[1:]) for line in listing}
    assert modes.pop(path) == ("700", "root")
    assert set(modes) == BACKUP_FILES
    assert set(modes.values()) == {("600", "root")}, modes
    assert deployment.ssh(f"stat -c '%a %U' {paths.BACKUP_DIR}").split() == ["700", "root"]

    deployment.ssh(f"cd {path} && sha256sum --check --quiet --strict SHA256SUMS")
    deployment.ssh(f"cmp {path}/signing.key {paths.SYNAPSE_SIGNING_KEY} && cmp {path}/homeserver.yaml {paths.SYNAPSE_CONFIG}")
    contents = deployment.ssh(f"cd / && runuser -u postgres -- pg_restore --list < {path}/synapse.dump")
    assert re.search(r"TABLE DATA public users ", contents), "the users table's rows are not in the dump"
    assert re.search(r"TABLE public e2e_one_time_keys_json ", contents), "the one-time-keys table is missing"
    assert not re.search(r"TABLE DATA public e2e_one_time_keys_json ", contents), "one-time keys were dumped"


def test_old_backups_are_pruned_and_the_newest_and_recent_ones_kept(deployment: Deployment) -> None:
    old = "20200101T000000Z-scheduled"
    recent = deployment.ssh("date -u -d '1 day ago' +%Y%m%dT%H%M%SZ-scheduled").strip()
    deployment.ssh(f"cd {paths.BACKUP_DIR} && mkdir {old} {recent} .partial-killed && touch {old}/synapse.dump")
    try:
        path = take_backup(deployment, "manual")
        names = backups(deployment)
        hidden = deployment.ssh(f"ls -A {paths.BACKUP_DIR}").split()
        assert old not in names, "a backup older than backupKeepDays was kept"
        assert recent in names, "a backup within backupKeepDays was removed"
        assert path.rsplit("/", 1)[1] in names
        assert ".partial-killed" not in hidden, "an unfinished backup was left behind"
    finally:
        deployment.ssh(f"rm -rf {paths.BACKUP_DIR}/{old} {paths.BACKUP_DIR}/{recent}")


def test_a_restore_brings_the_database_back_and_keeps_the_one_it_replaced(
    deployment: Deployment, admin_token: str
) -> None:
    carol_password = secrets.token_urlsafe(16)
    create_user(deployment, admin_token, "carol", carol_password)
    path = take_backup(deployment, "before-restore-test")
    create_user(deployment, admin_token, "dave", secrets.token_urlsafe(16))
    assert user_status(deployment, admin_token, "dave") == 200

    proc = deployment.host.ssh(f"{paths.RESTORE_COMMAND} {path}", timeout=600)
    log = proc.stderr.decode()
    print(f"\n{log}")
    assert proc.returncode == 0, log[-2000:]
    match = re.search(r"kept as (synapse_before_restore_\d+)", log)
    assert match, log
    kept = match.group(1)
    try:
        assert user_status(deployment, admin_token, "carol") == 200
        assert user_status(deployment, admin_token, "dave") == 404, "the restore did not rewind the database"
        assert login(deployment, "carol", carol_password)[0] == f"@carol:{DOMAIN}"  # through nginx, as a client
        # Nothing was lost: the replaced database, with dave in it, is still there.
        assert psql(deployment, kept, f"SELECT name FROM users WHERE name = '@dave:{DOMAIN}';").strip() == f"@dave:{DOMAIN}"
        assert psql(deployment, "postgres", "SELECT datcollate FROM pg_database WHERE datname = 'synapse';").strip() == "C"
        assert deployment.recording is not None
        run_all(deployment.recording, only={"selfcheck-verify"})
    finally:
        deployment.ssh(f"cd / && runuser -u postgres -- dropdb --if-exists {kept}")


def test_a_damaged_backup_is_refused_before_anything_is_stopped(deployment: Deployment) -> None:
    source = take_backup(deployment, "to-damage")
    damaged = f"{paths.BACKUP_DIR}/damaged-copy"
    pid = deployment.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip()
    deployment.ssh(f"cp -a {source} {damaged} && printf x >> {damaged}/synapse.dump")
    try:
        proc = deployment.host.ssh(f"{paths.RESTORE_COMMAND} {damaged}", timeout=120)
        assert proc.returncode != 0
        assert "is damaged (checksums differ)" in proc.stderr.decode()
        assert deployment.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip() == pid, "Synapse was touched"
    finally:
        deployment.ssh(f"rm -rf {damaged}")


def test_backup_and_restore_refuse_to_fill_the_volume_postgres_lives_on(deployment: Deployment) -> None:
    filler = f"{paths.DATA_MOUNT}/matrix-stack-test-filler"
    names = backups(deployment)
    pid = deployment.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip()
    # Leave 100 MiB free: enough for PostgreSQL for a few seconds, less than the tenth kept free.
    deployment.ssh(f"avail=$(df --output=avail -B1 {paths.DATA_MOUNT} | tail -n 1); "
                   f"fallocate -l $((avail - 100 * 1048576)) {filler}")
    try:
        proc = deployment.host.ssh(f"{paths.BACKUP_COMMAND} manual", timeout=120)
        print(f"\n{proc.stderr.decode()}")
        assert proc.returncode != 0 and f"not enough space on {paths.DATA_MOUNT}" in proc.stderr.decode()
        assert backups(deployment) == names
        proc = deployment.host.ssh(f"{paths.RESTORE_COMMAND} {paths.BACKUP_DIR}/{names[-1]}", timeout=120)
        print(proc.stderr.decode())
        assert proc.returncode != 0 and "not enough space for the restore" in proc.stderr.decode()
        assert deployment.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip() == pid, "Synapse was touched"
    finally:
        deployment.ssh(f"rm -f {filler}")


def test_the_self_check_fails_while_the_backup_timer_is_stopped(deployment: Deployment) -> None:
    assert deployment.recording is not None
    deployment.ssh(f"systemctl stop {backup.TIMER}")
    try:
        with pytest.raises(StepFailed) as failure:
            run_all(deployment.recording, only={"selfcheck-verify"})
        assert f"backups: {backup.TIMER} is not active" in str(failure.value)
    finally:
        deployment.ssh(f"systemctl start {backup.TIMER}")
    run_all(deployment.recording, only={"selfcheck-verify"})


def test_changing_synapses_version_takes_a_backup_first(deployment: Deployment) -> None:
    installed = f"{paths.SYNAPSE_VENV}/bin/python -c 'import importlib.metadata as m; print(m.version(\"matrix-synapse\"))'"
    assert deployment.ssh(installed).strip() == DEFAULTS["synapseVersion"]
    before = set(backups(deployment))
    try:
        changed, results = deployment.apply_changes(synapseVersion=OTHER_VERSION)
        assert changed == {"synapse-install", "synapse-config", "selfcheck-verify"}
        install_log = next(r.stderr for r in results if r.name == "synapse-install")
        print(f"\n{install_log}")
        new = set(backups(deployment)) - before
        assert [n.split("-", 1)[1] for n in new] == [f"before-synapse-{OTHER_VERSION}"], new
        assert install_log.index("taking a backup") < install_log.index(f"installing matrix-synapse {OTHER_VERSION}")
        assert deployment.ssh(installed).strip() == OTHER_VERSION
    finally:
        changed, results = deployment.apply_changes(synapseVersion=None)
    assert "synapse-install" in changed
    assert deployment.ssh(installed).strip() == DEFAULTS["synapseVersion"]
    assert any(n.endswith(f"-before-synapse-{DEFAULTS['synapseVersion']}") for n in backups(deployment))
