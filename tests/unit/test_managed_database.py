"""`database: managed`: a DigitalOcean Managed PostgreSQL cluster for Synapse, as recorded under mocks.

Off (the default) the graph is the local-database one and `databaseSize` is ignored; on, a cluster of
the droplet image's PostgreSQL major that `pulumi destroy` keeps, Synapse's user, a trusted source
naming the main droplet alone, and the droplet's steps reaching it over verified TLS. The connection
budget follows DigitalOcean's formula (25 per GiB, 3 reserved).
"""

from __future__ import annotations

import configparser
from typing import Any

import pytest
import yaml

from components import paths
from components.settings import SettingsError, load
from tests.harness import (
    DEFAULT_CONFIG,
    CloudMocks,
    ManagedDbAnswers,
    Recording,
    changed_steps,
    parse_bundle,
    record,
    unwrap,
)

ANSWERS = ManagedDbAnswers()
# As `pulumi config` stores them: strings, lists as JSON.
RAW_CONFIG = {**{k: v if isinstance(v, str) else str(v) for k, v in DEFAULT_CONFIG.items()},
              "sshAllowedCidrs": '["203.0.113.7/32"]'}
DATABASE_TYPES = {"digitalocean:index/databaseCluster:DatabaseCluster", "digitalocean:index/databaseUser:DatabaseUser",
                  "digitalocean:index/databaseFirewall:DatabaseFirewall"}


@pytest.fixture(scope="module")
def managed() -> Recording:
    return record({"database": "managed"})


def resources(recording: Recording) -> dict[tuple[str, str], Any]:
    return {(r.type, r.name): r.inputs for r in recording.registrations if r.type != "pulumi:pulumi:Stack"}


def one(recording: Recording, type_: str) -> Any:
    (registration,) = recording.of_type(type_)
    return registration


def step_files(recording: Recording, step: str) -> dict[str, Any]:
    """The files a step places, by path."""
    command = next(c for c in recording.commands() if c.name == step)
    files, _ = parse_bundle(str(unwrap(command.raw_inputs["stdin"])))
    return {f.path: f for f in files}


def test_off_by_default_and_its_size_is_ignored_while_off(graph: Recording) -> None:
    assert not {r.type for r in graph.registrations} & DATABASE_TYPES
    names = {c.name for c in graph.commands()}
    assert "postgres-config" in names and "postgres-managed" not in names
    resized = record({"databaseSize": "db-s-2vcpu-4gb"})
    assert resources(resized) == resources(graph)


@pytest.mark.parametrize(("key", "value"), [("database", "remote"), ("databaseSize", "db-s-1vcpu"),
                                            ("databaseSize", "s-1vcpu-1gb-x"), ("databaseSize", "db-s-1vcpu-0gb")])
def test_bad_values_are_one_line_errors_naming_the_setting(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({**RAW_CONFIG, key: value}, "test")
    message = str(error.value)
    assert "\n" not in message and key in message and value in message


def test_connection_budget_follows_digitaloceans_formula() -> None:
    """25 connections per GiB, 3 reserved by DigitalOcean, 3 kept for the droplet's tools."""
    def settings(**config: str) -> Any:
        return load({**RAW_CONFIG, "database": "managed", **config}, "test")[0]
    assert settings().database_connection_limit == 22  # DigitalOcean: the 1 GiB size offers 22
    assert settings(databaseSize="db-s-2vcpu-4gb").database_connection_limit == 97
    assert settings().synapse_pool_max == 10  # 22 - 3 leaves room for Synapse's usual 10
    local = load(RAW_CONFIG, "test")[0]
    assert local.synapse_pool_max == 10 and local.synapse_pool_max < local.tuning.pg_max_connections


def test_cluster_follows_the_image_and_outlives_the_stack(managed: Recording) -> None:
    cluster = one(managed, "digitalocean:index/databaseCluster:DatabaseCluster")
    inputs = cluster.inputs
    assert (inputs["engine"], inputs["version"], inputs["size"], inputs["region"], inputs["nodeCount"]) == (
        "pg", "17", "db-s-1vcpu-1gb", "nyc3", 1)
    assert inputs["projectId"] == "host-project-id"
    # Pulumi's retainOnDelete: the engine drops the cluster from the state and leaves it in the account
    # on `pulumi destroy`, on database back to local and on a replacement; protect would instead make
    # `pulumi destroy` fail.
    assert cluster.retain_on_delete and not cluster.protect
    bookworm = one(record({"database": "managed", "dropletImage": "debian-12-x64"}),
                   "digitalocean:index/databaseCluster:DatabaseCluster")
    assert bookworm.inputs["version"] == "15"  # the droplet's pg_dump and pg_restore speak its version


def test_trusted_sources_name_the_main_droplet_alone(managed: Recording) -> None:
    droplet = one(managed, "digitalocean:index/droplet:Droplet")
    firewall = one(managed, "digitalocean:index/databaseFirewall:DatabaseFirewall")
    assert firewall.inputs["rules"] == [{"type": "droplet", "value": droplet.id}]
    user = one(managed, "digitalocean:index/databaseUser:DatabaseUser")
    assert user.inputs["name"] == paths.POSTGRES_USER
    # The database steps start only once the cluster trusts the droplet.
    install = next(c for c in managed.commands() if c.name == "postgres-install")
    assert firewall.urn in install.dependencies


def test_synapse_reaches_the_cluster_over_verified_tls(managed: Recording) -> None:
    files = step_files(managed, "synapse-config")
    homeserver = yaml.safe_load(files[paths.SYNAPSE_CONFIG].content)
    args = homeserver["database"]["args"]
    assert (args["host"], args["port"], args["user"], args["dbname"]) == (
        ANSWERS.host, ANSWERS.port, paths.POSTGRES_USER, paths.POSTGRES_DB)
    assert (args["sslmode"], args["sslrootcert"], args["password"]) == (
        "verify-full", paths.MANAGED_DB_CA, ANSWERS.user_password)
    database = step_files(managed, "postgres-managed")
    assert database[paths.MANAGED_DB_CA].content == ANSWERS.ca_pem


def test_connection_files_keep_passwords_in_the_root_only_file(managed: Recording) -> None:
    files = step_files(managed, "postgres-managed")
    services = configparser.ConfigParser()
    services.read_string(files[paths.MANAGED_DB_SERVICES].content)
    for section, user, dbname in (("synapse", paths.POSTGRES_USER, paths.POSTGRES_DB), ("admin", "doadmin", "defaultdb")):
        entry = services[section]
        assert (entry["host"], entry["port"], entry["user"], entry["dbname"]) == (ANSWERS.host, str(ANSWERS.port), user, dbname)
        assert (entry["sslmode"], entry["sslrootcert"]) == ("verify-full", paths.MANAGED_DB_CA)
    secrets = (ANSWERS.user_password, ANSWERS.admin_password)
    for path, placed in files.items():
        holds = [s for s in secrets if s in placed.content]
        if path == paths.MANAGED_DB_PASSWORDS:
            assert holds == list(secrets) and (placed.mode, placed.owner) == ("0600", "root")
        else:
            assert not holds, path
    command = next(c for c in managed.commands() if c.name == "postgres-managed")
    assert command.is_secret("stdin")
    assert not any(s in str(unwrap(command.raw_inputs["create"])) for s in secrets)


def test_switching_runs_only_the_database_steps_and_back_converges(graph: Recording, managed: Recording) -> None:
    changed = changed_steps(graph, managed)
    # postgres-install stops (re)starting the droplet's PostgreSQL, postgres-config goes (deleted) and
    # postgres-managed comes; Synapse's config changes; the tools' units stop waiting for the local
    # PostgreSQL; the self-check checks the cluster instead, and the checks between deploys stop watching the
    # droplet's PostgreSQL.
    assert changed == {"postgres-install", "postgres-config", "postgres-managed", "synapse-config", "backup-schedule",
                       "maintenance-schedule", "selfcheck-verify", "health-schedule"}
    back = record({"database": "local"})
    assert changed_steps(graph, back) == set()
    assert resources(back) == resources(graph)


def test_a_new_cluster_size_changes_only_the_cluster(managed: Recording) -> None:
    bigger = record({"database": "managed", "databaseSize": "db-s-2vcpu-4gb"})
    before, after = resources(managed), resources(bigger)
    differ = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert differ == {("digitalocean:index/databaseCluster:DatabaseCluster", "database-cluster")}
    assert changed_steps(managed, bigger) == set()


def test_mocks_answer_like_the_provider() -> None:
    """The harness's answers have the provider's output names (a renamed output would read as None)."""
    mocks = CloudMocks()
    assert mocks.managed_db.host.startswith("private-")
