"""synapseWorkers on the droplet: Redis, a config file and a unit instance per worker, and the
values homeserver.yaml and the Synapse step's script need (the topology is components/worker_topology.py).

Everything here is empty when synapseWorkers is off, so the Synapse step of a stack without workers
renders exactly as before. The workers share homeserver.yaml and run under the main unit's sandbox
(one template, rendered twice), as `matrix-synapse-worker@<name>.service`.
"""

from __future__ import annotations

from typing import Any

from components import paths, worker_topology
from components.remote import RemoteFile, StepSpec
from components.services import ServiceContext, rendered

WORKER_CONFIG_DIR = f"{paths.SYNAPSE_CONFIG_DIR}/workers"
WORKER_UNIT_FILE = "/etc/systemd/system/matrix-synapse-worker@.service"
REDIS_CONF = "/etc/redis/matrix-stack.conf"
REDIS_MAIN_CONF = "/etc/redis/redis.conf"
REDIS_UNIT = "redis-server.service"
REDIS_PACKAGE = "redis-server"  # Debian 12 and 13 alike (13 also has valkey-server)
REDIS_MAXMEMORY_MB = 128  # replication buffers and Synapse's small shared cache


def worker_unit(name: str) -> str:
    return f"matrix-synapse-worker@{name}.service"


def enabled(ctx: ServiceContext) -> bool:
    return ctx.settings.synapse_workers and ctx.worker_secrets is not None


def homeserver_values(ctx: ServiceContext) -> dict[str, Any]:
    """The shared config's part: replication listener, secret, Redis and who does what."""
    if not enabled(ctx):
        return {"workers": False}
    assert ctx.worker_secrets is not None
    return {
        "workers": True,
        "replication_address": worker_topology.REPLICATION_LISTEN[0],
        "replication_port": worker_topology.REPLICATION_LISTEN[1],
        "replication_secret": ctx.worker_secrets.replication_secret,
        "redis_host": worker_topology.REDIS_LISTEN[0],
        "redis_port": worker_topology.REDIS_LISTEN[1],
        "redis_password": ctx.worker_secrets.redis_password,
        "federation_senders": worker_topology.FEDERATION_SENDERS,
        "media_worker": worker_topology.MEDIA_WORKER,
    }


def script_values(ctx: ServiceContext) -> dict[str, Any]:
    """What synapse/install.sh.j2 (the Redis package) and config.sh.j2 (start, check and, when off,
    remove the workers) need."""
    listed = worker_topology.WORKERS if enabled(ctx) else ()
    host = paths.SYNAPSE_LISTEN[0]
    return {
        "redis_package": REDIS_PACKAGE if enabled(ctx) else "",
        "workers": [{"name": w.name, "health_url": f"http://{host}:{w.port}/health" if w.port else ""}
                    for w in listed],
        "worker_config_dir": WORKER_CONFIG_DIR,
        "worker_unit_file": WORKER_UNIT_FILE,
        "redis_conf": REDIS_CONF,
        "redis_main_conf": REDIS_MAIN_CONF,
        "redis_unit": REDIS_UNIT,
    }


def worker_files(ctx: ServiceContext, unit: Any) -> list[RemoteFile]:
    """Each worker's config and log config, and the template unit (`unit`: rendered by the caller)."""
    if not enabled(ctx):
        return []
    files: list[RemoteFile] = []
    for worker in worker_topology.WORKERS:
        log_config = f"{WORKER_CONFIG_DIR}/{worker.name}.log.yaml"
        files.append(RemoteFile(
            f"{WORKER_CONFIG_DIR}/{worker.name}.yaml",
            rendered("synapse/worker.yaml.j2", name=worker.name, app=worker.app, port=worker.port,
                     bind_address=paths.SYNAPSE_LISTEN[0], resources=worker.resources, log_config=log_config),
        ))
        files.append(RemoteFile(log_config, rendered("synapse/log.yaml.j2",
                                                     log_file=f"{paths.SYNAPSE_LOG_DIR}/{worker.name}.log")))
    files.append(RemoteFile(WORKER_UNIT_FILE, unit))
    return files


def redis_steps(ctx: ServiceContext) -> list[StepSpec]:
    """synapse-redis: this stack's Redis config (the package comes with synapse-install)."""
    if not enabled(ctx):
        return []
    assert ctx.worker_secrets is not None
    host, port = worker_topology.REDIS_LISTEN
    conf = rendered("synapse/redis.conf.j2", bind=host, port=port, password=ctx.worker_secrets.redis_password,
                    maxmemory_mb=REDIS_MAXMEMORY_MB)
    script = rendered("synapse/redis.sh.j2", conf=REDIS_CONF, main_conf=REDIS_MAIN_CONF, unit=REDIS_UNIT,
                      host=host, port=port)
    return [StepSpec(name="synapse-redis", script=str(script),
                     files=[RemoteFile(REDIS_CONF, conf, mode="0640", owner="root", group="redis")])]
