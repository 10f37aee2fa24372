"""`database: managed` on two hosts: the shared deployment moves Synapse's database to a "managed cluster"
and back.

A second test host plays the DigitalOcean cluster (tests/e2e/managed_db.py): the droplet image's
PostgreSQL with TLS from the cluster's own CA on port 25060, only the droplet's address trusted, and an
admin role that is not a superuser. The program's recorded answers (the cluster's private host name,
its CA, the passwords DigitalOcean generates) are that host's. Only the steps `pulumi up` would run are
run. Then real clients: messages written before the move are read after it, Synapse's connections on
the cluster are TLS from the droplet, backups and the weekly VACUUM reach the cluster. Last, the
The way back in docs/grow.md (backup, marker removed, database local, restore) returns the shared host to its
local database with what was written on the cluster.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nio import LoginResponse, RoomCreateResponse, RoomMessagesResponse, RoomSendResponse

from components import paths
from components.services import backup, maintenance
from tests.e2e.clients import matrix_client, run
from tests.e2e.deployment import E2E_INDEX, HOMESERVER, Deployment
from tests.e2e.managed_db import (
    MANAGED_PORT,
    ManagedCluster,
    bare_host,
    leave_private_network,
    share_private_network,
)
from tests.e2e.runner import StepFailed, StepResult, run_all
from tests.harness import ManagedDbAnswers, changed_steps

pytestmark = pytest.mark.e2e

CLUSTER_INDEX = E2E_INDEX + 105
CLUSTER_HOST = "private-matrix-e2e-db-do-user-1.b.db.ondigitalocean.com"
# What `pulumi up` runs for the switch (tests/unit/test_managed_database.py checks the same set under
# mocks): postgres-config gives way to postgres-managed; postgres-install, Synapse's config, the tools'
# units and the self-check change.
COMMON_STEPS = {"postgres-install", "synapse-config", "backup-schedule", "maintenance-schedule", "selfcheck-verify",
                "health-schedule"}
SWITCH_STEPS = COMMON_STEPS | {"postgres-managed"}
BACK_STEPS = COMMON_STEPS | {"postgres-config"}


def send(deployment: Deployment, room_id: str | None, bodies: list[str]) -> str:
    """As the admin: create a room when `room_id` is None, send `bodies`; returns the room id."""
    async def go() -> str:
        client = matrix_client(HOMESERVER, "admin", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await client.login(deployment.admin_password), LoginResponse)
            room = room_id
            if room is None:
                created = await client.room_create(name="moves with the database")
                assert isinstance(created, RoomCreateResponse), created
                room = created.room_id
            for body in bodies:
                sent = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
                assert isinstance(sent, RoomSendResponse), sent
            return room
        finally:
            await client.close()

    return run(go)


def history(deployment: Deployment, room_id: str) -> list[str]:
    """The room's text messages, oldest first, as the admin reads them through the edge."""
    async def go() -> list[str]:
        client = matrix_client(HOMESERVER, "admin", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await client.login(deployment.admin_password), LoginResponse)
            page = await client.room_messages(room_id, start="", limit=100)
            assert isinstance(page, RoomMessagesResponse), page
            return [e.body for e in reversed(page.chunk) if hasattr(e, "body")]
        finally:
            await client.close()

    return run(go)


class ManagedSwitch:
    """The shared deployment switched to `database: managed` on a second host, and at the end back."""

    def __init__(self, deployment: Deployment, volume_image: Path) -> None:
        self.deployment = deployment
        self.volume_image = volume_image  # the cluster host's (unused) volume
        self.answers = ManagedDbAnswers(host=CLUSTER_HOST, admin_password=secrets.token_urlsafe(24),
                                        user_password=secrets.token_urlsafe(24))
        self.cluster: ManagedCluster | None = None
        self.room = ""
        self.before: list[str] = []
        self.on: tuple[set[str], list[StepResult]] = (set(), [])
        # The first try, with the cluster refusing every write of Synapse's role: what it left behind.
        self.failed_move: dict[str, str] = {}

    def boot_cluster(self) -> ManagedCluster:
        """DigitalOcean creates the cluster, its user and its trusted source before any step runs."""
        d = self.deployment
        host = bare_host(CLUSTER_INDEX, d.key_file, f"{d.settings.resource_prefix}-db-disk", self.volume_image)
        self.cluster = ManagedCluster(host, hostname=CLUSTER_HOST, admin_password=self.answers.admin_password)
        share_private_network(d.host.addr, host.addr)
        self.cluster.start(allowed=[d.host.address])
        self.cluster.create_user(paths.POSTGRES_USER, self.answers.user_password)
        self.answers = ManagedDbAnswers(host=CLUSTER_HOST, port=MANAGED_PORT, ca_pem=self.cluster.ca_pem,
                                        admin_password=self.answers.admin_password,
                                        user_password=self.answers.user_password)
        # The VPC's DNS: the droplet resolves the cluster's private host name to its private address.
        d.ssh(f"echo {shlex.quote(f'{host.address} {CLUSTER_HOST}')} >> /etc/hosts")
        return self.cluster

    def switch_on(self) -> None:
        """`pulumi up` with database: managed, twice: the first move fails (the cluster takes no writes
        from Synapse's role, so the restore is rolled back), the second, with writes allowed, works."""
        d = self.deployment
        self.before = [f"before the move {i}" for i in range(5)]
        self.room = send(d, None, self.before)
        cluster = self.boot_cluster()
        d.managed_db = self.answers
        assert d.recording is not None
        before = d.recording
        after = d.record(database="managed")
        d.apply_cloud()
        changed = changed_steps(before, after)
        read_only = f"ALTER ROLE {paths.POSTGRES_USER} SET default_transaction_read_only = "
        cluster.sql(read_only + "on")
        with pytest.raises(StepFailed) as failed:
            run_all(after, only=changed)
        self.failed_move = {
            "step": failed.value.result.name,
            "log": d.ssh("cat /var/log/matrix-stack/postgres-managed.log"),
            "history": "\n".join(history(d, self.room)),
            "marker": d.ssh(f"test -e {paths.DATABASE_MANAGED_MARKER} && echo present || echo absent").strip(),
        }
        cluster.sql(read_only + "off")
        self.on = (changed, run_all(after, only=changed))

    def switch_back(self) -> tuple[str, set[str], list[StepResult]]:
        """The The way back in docs/grow.md: refused while the marker exists; then backup, marker removed, up, restore."""
        d = self.deployment
        assert d.recording is not None
        before = d.recording
        after = d.record(database="local")
        changed = changed_steps(before, after)
        with pytest.raises(StepFailed) as refused:
            run_all(after, only=changed)
        backup_dir = d.ssh(f"{paths.BACKUP_COMMAND} before-local").strip().splitlines()[-1]
        d.ssh(f"rm {paths.DATABASE_MANAGED_MARKER}")
        results = run_all(after, only=changed)
        d.ssh(f"{paths.RESTORE_COMMAND} {shlex.quote(backup_dir)}")
        return str(refused.value), changed, results

    def destroy_cluster(self) -> None:
        if self.cluster is not None:
            leave_private_network(self.deployment.host.addr, self.cluster.host.addr)
            self.cluster.host.destroy(keep_volume=False)
            self.cluster = None
        self.deployment.managed_db = None


@pytest.fixture(scope="module")
def managed(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedSwitch]:
    switch = ManagedSwitch(deployment, tmp_path_factory.mktemp("managed-db") / "cluster.img")
    try:
        switch.switch_on()
        yield switch
    finally:
        switch.destroy_cluster()


def cluster_of(managed: ManagedSwitch) -> ManagedCluster:
    assert managed.cluster is not None
    return managed.cluster


def test_the_switch_runs_only_the_database_steps(managed: ManagedSwitch) -> None:
    changed, results = managed.on
    assert changed == SWITCH_STEPS | BACK_STEPS  # postgres-config's resource goes
    assert {r.name for r in results} == SWITCH_STEPS and all(r.returncode == 0 for r in results)
    for result in results:
        print(f"  {result.name:24s} {result.seconds:6.1f} s")


def test_a_failed_move_leaves_synapse_on_the_local_database(managed: ManagedSwitch) -> None:
    failed = managed.failed_move
    assert failed["step"] == "postgres-managed"
    assert "the restore into the managed cluster failed and was rolled back" in failed["log"]
    assert failed["history"].split("\n") == managed.before  # Synapse answered again, from its own data
    assert failed["marker"] == "absent"


def test_the_data_moved_without_loss(managed: ManagedSwitch) -> None:
    d, cluster = managed.deployment, cluster_of(managed)
    assert history(d, managed.room) == managed.before
    marker = dict(line.split("=", 1) for line in d.ssh(f"cat {paths.DATABASE_MANAGED_MARKER}").splitlines() if "=" in line)
    assert marker["cluster"] == CLUSTER_HOST
    print(f"\nmoved {marker['moved_tables']} tables, {marker['moved_rows']} rows")
    assert int(marker["moved_tables"]) > 100 and int(marker["moved_rows"]) > 0
    # The cluster holds Synapse's tables, owned by Synapse's role (pg_restore --no-owner as that role).
    owners = cluster.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", database="synapse")
    assert owners.split() == [paths.POSTGRES_USER]
    assert int(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database="synapse")) == \
        int(marker["moved_tables"])
    # The droplet's own PostgreSQL is off for good, its data kept on the volume.
    major = d.settings.platform.postgres_major
    assert d.ssh(f"systemctl is-active postgresql@{major}-main || true").strip() == "inactive"
    assert d.ssh(f"cat /etc/postgresql/{major}/main/start.conf").strip() == "manual"
    assert d.ssh(f"test -f {paths.POSTGRES_BASE}/{major}/main/PG_VERSION && echo kept").strip() == "kept"


def test_synapse_writes_to_the_cluster_over_verified_tls_from_the_droplet(managed: ManagedSwitch) -> None:
    d, cluster = managed.deployment, cluster_of(managed)
    count = "SELECT count(*) FROM events WHERE type = 'm.room.message'"
    before = int(cluster.sql(count, database="synapse"))
    send(d, managed.room, ["written on the cluster"])
    assert int(cluster.sql(count, database="synapse")) == before + 1
    sessions = cluster.sql("SELECT DISTINCT host(a.client_addr) || ' ' || s.ssl FROM pg_stat_activity a "
                           f"JOIN pg_stat_ssl s USING (pid) WHERE a.usename = '{paths.POSTGRES_USER}'")
    assert sessions.split("\n") == [f"{d.host.address} true"]


def test_the_cluster_is_made_as_on_digitalocean(managed: ManagedSwitch) -> None:
    """The database was created by an admin role that is not a superuser: UTF8 with C collation."""
    cluster = cluster_of(managed)
    assert cluster.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'doadmin'") == "f"
    made = cluster.sql("SELECT datcollate || ' ' || datctype || ' ' || pg_encoding_to_char(encoding) || ' ' || "
                       "pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'synapse'")
    assert made == "C C UTF8 doadmin"


def test_only_the_droplet_may_connect(managed: ManagedSwitch) -> None:
    """From another address (the machine's), the cluster refuses before any password is asked."""
    cluster = cluster_of(managed)
    attempt = subprocess.run(
        ["psql", "-X", "-At", "-c", "SELECT 1",
         f"host={cluster.host.address} port={MANAGED_PORT} dbname=defaultdb user=doadmin sslmode=require"],
        capture_output=True, text=True, timeout=30, env={"PGPASSWORD": managed.answers.admin_password, "PATH": "/usr/bin:/bin"},
    )
    assert attempt.returncode != 0 and "no pg_hba.conf entry" in attempt.stderr, attempt.stderr


def test_backup_and_upkeep_reach_the_cluster(managed: ManagedSwitch) -> None:
    d = managed.deployment
    written = d.ssh(f"{paths.BACKUP_COMMAND} e2e-managed").strip().splitlines()[-1]
    tables = d.ssh(f"pg_restore --list {shlex.quote(written)}/synapse.dump")
    assert " TABLE public events " in tables and " TABLE DATA public events " in tables
    d.ssh(f"systemctl start {maintenance.SERVICE}")
    assert d.ssh(f"systemctl show -P Result {maintenance.SERVICE}").strip() == "success"
    # The daily run is a systemd service too: it must not pull the droplet's PostgreSQL back in.
    d.ssh(f"systemctl start {backup.SERVICE}")
    major = d.settings.platform.postgres_major
    assert d.ssh(f"systemctl is-active postgresql@{major}-main || true").strip() == "inactive"


def test_rerunning_the_step_moves_nothing(managed: ManagedSwitch) -> None:
    d = managed.deployment
    assert d.recording is not None
    marker = d.ssh(f"cat {paths.DATABASE_MANAGED_MARKER}")
    (result,) = run_all(d.recording, only={"postgres-managed"})
    assert result.returncode == 0
    assert d.ssh(f"cat {paths.DATABASE_MANAGED_MARKER}") == marker
    assert "moving" not in result.stderr + result.stdout


def test_the_way_back_keeps_what_was_written_on_the_cluster(managed: ManagedSwitch) -> None:
    d = managed.deployment
    refused, changed, results = managed.switch_back()
    assert "Synapse's data is on the managed PostgreSQL cluster" in refused
    assert changed == SWITCH_STEPS | BACK_STEPS  # postgres-managed's resource goes
    assert {r.name for r in results} == BACK_STEPS
    assert history(d, managed.room) == [*managed.before, "written on the cluster"]
    major = d.settings.platform.postgres_major
    assert d.ssh(f"systemctl is-active postgresql@{major}-main").strip() == "active"
    managed.destroy_cluster()
