"""synapseWorkers' files, checked by the real tools: Synapse loads the shared config with each
worker's file and gives every process its job; systemd verifies the worker unit; a real Redis runs
on the rendered config and refuses clients without the password."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components import paths, worker_topology
from components.render import render
from components.services import synapse, synapse_workers
from tests.templates.conftest import REDIS_PASSWORD, REPLICATION_SECRET, make_context, parse_unit, prelude_function
from tests.templates.test_synapse import SYNAPSE_PY, _files, _install_for_check, _replace_line

CONFIG = {"synapseWorkers": "true", "dropletSize": "s-2vcpu-4gb"}

PROBE = r"""
import json, sys
from synapse.config.homeserver import HomeServerConfig
args = ["-c", sys.argv[1]] + (["-c", sys.argv[2]] if len(sys.argv) > 2 else [])
c = HomeServerConfig.load_config("", args)
listeners = c.worker.worker_listeners if len(sys.argv) > 2 else c.server.listeners
print(json.dumps({
    "app": c.worker.worker_app, "name": c.worker.instance_name,
    "listeners": [[l.port, l.bind_addresses, sorted(n for r in l.http_options.resources for n in r.names)]
                  for l in listeners],
    "redis": [c.redis.redis_enabled, c.redis.redis_host, c.redis.redis_port, c.redis.redis_password],
    "replication_secret": c.worker.worker_replication_secret,
    # "main" in the file; a worker's Synapse renames it "master", the main process's keeps it.
    "main": [m.host, m.port] if (m := c.worker.instance_map.get("master") or c.worker.instance_map.get("main")) else None,
    "sends_federation": c.worker.send_federation,
    "media_repo": c.media.can_load_media_repo,
    "media_background": getattr(c.media, "media_instance_running_background_jobs", None),
    "writes_events": c.worker.writers.events,
}))
"""


def _probe(*configs: Path) -> dict[str, object]:
    assert SYNAPSE_PY.exists(), f"{SYNAPSE_PY} missing: run tests/tools/install-deps.sh"
    for config in configs[1:]:
        check = subprocess.run([str(SYNAPSE_PY), "-m", "synapse.config", "-c", str(configs[0]), "-c", str(config)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0 and "Config parses OK!" in check.stdout, check.stderr
    probe = subprocess.run([str(SYNAPSE_PY), "-c", PROBE, *map(str, configs)], capture_output=True, text=True,
                           check=False)
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout)  # type: ignore[no-any-return]


def test_synapse_gives_every_process_its_job(tmp_path: Path) -> None:
    files = _files({s.name: s for s in synapse.steps(make_context(**CONFIG))}["synapse-config"])
    homeserver = _install_for_check(files, tmp_path)
    main = _probe(homeserver)
    assert main["app"] is None and main["name"] == "master"
    assert main["listeners"] == [[8008, ["127.0.0.1"], ["client", "federation"]],
                                 [worker_topology.REPLICATION_LISTEN[1], ["127.0.0.1"], ["replication"]]]
    assert main["redis"] == [True, "127.0.0.1", 6379, REDIS_PASSWORD]
    assert main["replication_secret"] == REPLICATION_SECRET
    assert main["main"] == ["127.0.0.1", worker_topology.REPLICATION_LISTEN[1]]
    # The main process persists events and no longer sends federation nor serves media.
    assert (main["sends_federation"], main["media_repo"], main["writes_events"]) == (False, False, ["master"])
    seen = {}
    for worker in worker_topology.WORKERS:
        text = files[f"{synapse_workers.WORKER_CONFIG_DIR}/{worker.name}.yaml"]
        log_config = tmp_path / f"{worker.name}.log.yaml"
        log_config.write_text(_replace_line(files[f"{synapse_workers.WORKER_CONFIG_DIR}/{worker.name}.log.yaml"],
                                            "filename", str(tmp_path / f"{worker.name}.log")))
        path = tmp_path / f"{worker.name}.yaml"
        path.write_text(_replace_line(text, "worker_log_config", str(log_config)))
        seen[worker.name] = _probe(homeserver, path)
    assert {name: (got["app"], got["name"]) for name, got in seen.items()} == {
        "sync1": ("synapse.app.generic_worker", "sync1"), "client1": ("synapse.app.generic_worker", "client1"),
        "media1": ("synapse.app.media_repository", "media1"),
        "federation_sender1": ("synapse.app.generic_worker", "federation_sender1")}
    assert seen["sync1"]["listeners"] == [[8083, ["127.0.0.1"], ["client"]]]
    assert seen["client1"]["listeners"] == [[8084, ["127.0.0.1"], ["client", "federation"]]]
    assert seen["media1"]["listeners"] == [[8085, ["127.0.0.1"], ["media"]]]
    assert seen["federation_sender1"]["listeners"] == []
    assert [name for name, got in seen.items() if got["sends_federation"]] == ["federation_sender1"]
    assert [name for name, got in seen.items() if got["media_repo"]] == ["media1"]
    # Only a process that loads the media repository reads which one runs its background jobs.
    assert seen["media1"]["media_background"] == "media1" and main["media_background"] is None
    assert all(got["redis"] == main["redis"] and got["replication_secret"] == main["replication_secret"]
               and got["main"] == main["main"] for got in seen.values())


def test_the_worker_unit_is_the_main_units_sandbox_tied_to_it(tmp_path: Path) -> None:
    files = _files({s.name: s for s in synapse.steps(make_context(**CONFIG))}["synapse-config"])
    main, worker = parse_unit(files[synapse.UNIT_PATH]), parse_unit(files[synapse_workers.WORKER_UNIT_FILE])
    assert worker["Unit"]["PartOf"] == paths.SYNAPSE_UNIT and paths.SYNAPSE_UNIT in worker["Unit"]["After"].split()
    assert worker["Install"]["WantedBy"] == paths.SYNAPSE_UNIT
    assert worker["Service"]["ExecStart"] == (
        f"{paths.SYNAPSE_VENV}/bin/python -m synapse.app.generic_worker --config-path={paths.SYNAPSE_CONFIG} "
        f"--config-path={synapse_workers.WORKER_CONFIG_DIR}/%i.yaml")
    # Stopping one worker must not remove the main process's runtime directory (its pid file).
    assert "RuntimeDirectory" not in worker["Service"]
    differing = {k for k in main["Service"].keys() | worker["Service"].keys()
                 if main["Service"].get(k) != worker["Service"].get(k)}
    assert differing == {"ExecStart", "RuntimeDirectory", "RuntimeDirectoryMode", "SyslogIdentifier"}
    # systemd's own checker, on an instance, with the units it names stubbed.
    shutil.which("systemd-analyze") or pytest.fail("systemd-analyze is missing")
    text = files[synapse_workers.WORKER_UNIT_FILE].replace(f"{paths.SYNAPSE_VENV}/bin/python", str(SYNAPSE_PY))
    (tmp_path / "matrix-synapse-worker@sync1.service").write_text(text)
    (tmp_path / paths.SYNAPSE_UNIT).write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    (tmp_path / paths.MOUNT_UNIT).write_text(f"[Mount]\nWhat=/dev/vdb\nWhere={paths.DATA_MOUNT}\n")
    (tmp_path / "postgresql.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "matrix-synapse-worker@sync1.service")],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_cli(port: int, *args: str, password: str = "") -> str:
    env = {**os.environ, "REDISCLI_AUTH": password} if password else {
        k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True,
                         env=env, timeout=10, check=False)
    return (out.stdout + out.stderr).strip()


def test_a_real_redis_runs_on_the_rendered_config_and_requires_the_password(tmp_path: Path) -> None:
    (step,) = [s for s in synapse.steps(make_context(**CONFIG)) if s.name == "synapse-redis"]
    (conf,) = [str(f.content) for f in step.files if f.path == synapse_workers.REDIS_CONF]
    assert shutil.which("redis-server"), "redis-server is missing (tests/tools/install-deps.sh)"
    (tmp_path / "redis.conf").write_text(conf)
    port = _free_port()  # the rendered file is used as is; only the port and directory are this test's
    server = subprocess.Popen(["redis-server", str(tmp_path / "redis.conf"), "--port", str(port),
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if "PONG" in _redis_cli(port, "ping", password=REDIS_PASSWORD):
                break
            time.sleep(0.05)
        assert _redis_cli(port, "ping", password=REDIS_PASSWORD) == "PONG"
        assert "NOAUTH" in _redis_cli(port, "ping")
        assert "WRONGPASS" in _redis_cli(port, "ping", password="not-the-password")

        def setting(name: str) -> str:
            reply = _redis_cli(port, "config", "get", name, password=REDIS_PASSWORD).split("\n")
            assert reply[0] == name, reply
            return reply[1] if len(reply) > 1 else ""

        assert (setting("bind"), setting("save"), setting("appendonly")) == ("127.0.0.1", "", "no")
        assert setting("maxmemory") == str(synapse_workers.REDIS_MAXMEMORY_MB * 1024 * 1024)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_redis_step_includes_its_config_once_and_pings_with_the_password_in_the_environment(
    tmp_path: Path,
) -> None:
    """synapse-redis, run here with stand-ins for systemctl and redis-cli: redis.conf includes this
    stack's file exactly once over two runs, Redis is restarted when the step is new, the password
    reaches redis-cli only through REDISCLI_AUTH, and the step reaches its end (ms_step_done)."""
    ctx = make_context(**CONFIG)
    (step,) = [s for s in synapse.steps(ctx) if s.name == "synapse-redis"]
    conf = tmp_path / "matrix-stack.conf"
    conf.write_text(str(step.files[0].content))
    main_conf = tmp_path / "redis.conf"
    main_conf.write_text("bind 127.0.0.1 -::1\n")
    script = render("synapse/redis.sh.j2", conf=str(conf), main_conf=str(main_conf),
                    unit=synapse_workers.REDIS_UNIT, host="127.0.0.1", port=6379)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stubs = {
        "systemctl": 'echo "systemctl $*" >> "$STUB_LOG"',
        "redis-cli": 'echo "redis-cli $* auth=${REDISCLI_AUTH:-}" >> "$STUB_LOG"; '
                     '[ "${REDISCLI_AUTH:-}" = "$STUB_PASSWORD" ] && echo PONG',
        "journalctl": "true",
        "sleep": "true",
        "runuser": 'echo "runuser $1 $2" >> "$STUB_LOG"; shift 3; exec "$@"',  # runuser -u USER -- CMD: as ourselves
    }
    for name, body in stubs.items():
        (bindir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bindir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    prelude = ('ms_log() { printf "[log] %s\\n" "$*" >&2; }\nms_changed() { [ "$MS_TEST_CHANGED" = 1 ]; }\n'
               'ms_step_done() { echo "step done" >> "$STUB_LOG"; }\n' + prelude_function("ms_enable"))

    def run(changed: bool, password: str = REDIS_PASSWORD) -> tuple[int, str]:
        log.write_text("")
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "STUB_LOG": str(log),
               "STUB_PASSWORD": password, "MS_TEST_CHANGED": "1" if changed else "0"}
        proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + prelude + script + "\nms_step_done\n"],
                              env=env, capture_output=True, text=True, check=False)
        return proc.returncode, log.read_text()

    rc, calls = run(changed=True)
    assert rc == 0 and f"systemctl restart {synapse_workers.REDIS_UNIT}" in calls and calls.endswith("step done\n")
    assert f"redis-cli -h 127.0.0.1 -p 6379 ping auth={REDIS_PASSWORD}" in calls  # not an argument
    assert "runuser -u redis" in calls  # redis.conf (in redis's /etc/redis) is appended to as redis
    rc, calls = run(changed=False)
    assert rc == 0 and "restart" not in calls and calls.endswith("step done\n")
    assert main_conf.read_text().count(f"include {conf}") == 1
    rc, calls = run(changed=False, password="another")  # Redis never answers this password
    assert rc != 0 and "step done" not in calls
