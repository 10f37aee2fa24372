"""`synapseWorkers`: Synapse as a main process plus workers with Redis, as recorded under mocks.

Off (the default) the graph and every step are those of a single Synapse process. On, two more
generated secrets (Redis's password, the replication secret), Redis configured before Synapse, a
config and a unit instance per worker, nginx routing by path, and those secrets only in files
readable by root, Redis or Synapse.
"""

from __future__ import annotations

import pytest
import yaml

from components import paths, worker_topology
from components.services import synapse_workers
from components.settings import SettingsError, load
from tests.harness import Recording, changed_steps, parse_bundle, record, unwrap
from tests.unit.test_managed_database import RAW_CONFIG, resources, step_files

PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
ON = {"synapseWorkers": "true", "dropletSize": "s-2vcpu-4gb"}


@pytest.fixture(scope="module")
def on() -> Recording:
    return record(ON)


def _secret(recording: Recording, name: str) -> str:
    (password,) = [r for r in recording.of_type(PASSWORD_TYPE) if r.name == f"secrets-{name}"]
    return str(unwrap(password.raw_outputs["result"]))


def test_off_by_default_same_graph_and_steps(graph: Recording) -> None:
    assert not [r for r in graph.of_type(PASSWORD_TYPE) if r.name in ("secrets-redis-password",
                                                                       "secrets-replication-secret")]
    assert "synapse-redis" not in {c.name for c in graph.commands()}
    explicit_off = record({"synapseWorkers": "false", "dropletSize": "s-2vcpu-4gb"})
    bigger = record({"dropletSize": "s-2vcpu-4gb"})
    assert resources(explicit_off) == resources(bigger) and changed_steps(bigger, explicit_off) == set()
    homeserver = yaml.safe_load(step_files(graph, "synapse-config")[paths.SYNAPSE_CONFIG].content)
    assert "redis" not in homeserver and "instance_map" not in homeserver and len(homeserver["listeners"]) == 1


@pytest.mark.parametrize("size", ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb", "s-4vcpu-2gb", "c-2"])
def test_too_small_a_droplet_is_a_one_line_error(size: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({**RAW_CONFIG, **ON, "dropletSize": size}, "test")
    message = str(error.value)
    assert "\n" not in message and "matrix-stack:synapseWorkers" in message and "s-2vcpu-4gb" in message


def test_bigger_droplets_are_accepted() -> None:
    for size in ("s-2vcpu-4gb", "s-4vcpu-8gb", "g-2vcpu-8gb", "s-8vcpu-16gb"):
        settings, _ = load({**RAW_CONFIG, **ON, "dropletSize": size}, "test")
        assert settings.synapse_workers and settings.synapse_processes == worker_topology.PROCESSES


def test_each_process_gets_its_share_of_connections_and_cache() -> None:
    single, _ = load({**RAW_CONFIG, "dropletSize": "s-2vcpu-4gb", "database": "managed"}, "test")
    split, _ = load({**RAW_CONFIG, **ON, "database": "managed"}, "test")
    # db-s-1vcpu-1gb grants 22; the tools keep 3; 19 shared by 5 processes.
    assert (single.synapse_pool_max, split.synapse_pool_max) == (10, 19 // worker_topology.PROCESSES)
    assert split.synapse_pool_min <= split.synapse_pool_max
    assert split.synapse_pool_max * worker_topology.PROCESSES + 3 <= split.database_connection_limit
    local, _ = load({**RAW_CONFIG, **ON}, "test")
    assert local.synapse_pool_max * worker_topology.PROCESSES + 3 <= local.tuning.pg_max_connections
    assert split.tuning.synapse_cache_max_mb * worker_topology.PROCESSES <= single.tuning.synapse_cache_max_mb


def test_switching_on_runs_synapse_nginx_and_the_check(graph: Recording, on: Recording) -> None:
    bigger = record({"dropletSize": "s-2vcpu-4gb"})
    # The checks between deploys watch Redis and the workers too.
    assert changed_steps(bigger, on) == {"synapse-install", "synapse-redis", "synapse-config", "nginx-sites",
                                         "selfcheck-verify", "health-schedule"}
    names = [c.name for c in on.commands()]
    assert names.index("synapse-install") < names.index("synapse-redis") < names.index("synapse-config")
    assert {r.name for r in on.of_type(PASSWORD_TYPE)} - {r.name for r in graph.of_type(PASSWORD_TYPE)} == {
        "secrets-redis-password", "secrets-replication-secret"}
    back = record({"dropletSize": "s-2vcpu-4gb", "synapseWorkers": "false"})
    assert changed_steps(bigger, back) == set() and resources(back) == resources(bigger)


def test_the_shared_config_wires_every_process(on: Recording) -> None:
    files = step_files(on, "synapse-config")
    homeserver = yaml.safe_load(files[paths.SYNAPSE_CONFIG].content)
    redis_password, replication_secret = _secret(on, "redis-password"), _secret(on, "replication-secret")
    assert homeserver["redis"] == {"enabled": True, "host": "127.0.0.1", "port": 6379, "password": redis_password}
    assert homeserver["worker_replication_secret"] == replication_secret
    assert homeserver["instance_map"] == {"main": {"host": "127.0.0.1", "port": worker_topology.REPLICATION_LISTEN[1]}}
    replication = homeserver["listeners"][1]
    assert replication["bind_addresses"] == ["127.0.0.1"] and replication["resources"] == [{"names": ["replication"]}]
    assert homeserver["federation_sender_instances"] == ["federation_sender1"]
    assert homeserver["enable_media_repo"] is False and homeserver["media_instance_running_background_jobs"] == "media1"
    for worker in worker_topology.WORKERS:
        config = yaml.safe_load(files[f"{synapse_workers.WORKER_CONFIG_DIR}/{worker.name}.yaml"].content)
        assert (config["worker_name"], config["worker_app"]) == (worker.name, worker.app)
    lock = step_files(on, "synapse-install")["/opt/synapse/requirements.lock"].content
    assert "txredisapi==" in lock and "hiredis==" in lock


def test_the_secrets_are_only_in_files_for_root_redis_or_synapse(on: Recording) -> None:
    secrets = {_secret(on, "redis-password"), _secret(on, "replication-secret")}
    readable_by = {paths.SYNAPSE_CONFIG: ("0640", "root", "matrix-synapse"),
                   synapse_workers.REDIS_CONF: ("0640", "root", "redis")}
    seen = set()
    for command in on.commands():
        files, script = parse_bundle(str(unwrap(command.raw_inputs["stdin"])))
        assert not any(secret in script for secret in secrets), command.name
        holding = [f for f in files if any(secret in f.content for secret in secrets)]
        for placed in holding:
            assert (placed.mode, placed.owner, placed.group) == readable_by[placed.path], (command.name, placed.path)
            seen.add(placed.path)
        if holding:
            assert command.is_secret("stdin"), command.name
        assert not any(secret in str(unwrap(command.raw_inputs["create"])) for secret in secrets)
    assert seen == set(readable_by)
