"""Benchmark the stack on a test host the size of a droplet (default: the smallest useful one, 1 CPU, 1 GiB).

    python -m tests.bench.benchmark [--size s-1vcpu-1gb] [--index 61] [--clients 20] [--duration 60] [--no-saturate]

Needs root, like the end-to-end suite. Boots a local test host whose guest is capped at the CPUs and
memory of `--size` (cgroup v1 limits on the whole nspawn guest), deploys the program for real with
that `dropletSize` (so PostgreSQL's and Synapse's memory settings follow it) and measures:

- provisioning: a fresh run and a forced re-run (every step again, nothing changed), total and per step;
- memory after 30 s idle, and again right after the last load: RSS and PSS per service (all processes
  of its systemd unit) and the guest total, and the guest cgroup's peak usage;
- send latency (PUT /rooms/../send round trip) through nginx and directly to Synapse. Both paths are
  measured by the same small stdlib client running *inside the guest*, over loopback, with one
  keep-alive connection per path and the two paths interleaved message by message: the only
  difference is nginx (TLS termination and the proxy hop). A client on the host side could not reach
  Synapse directly (it listens on 127.0.0.1 only), and an ssh -L forward would add the SSH channel
  to both paths and hide the difference being measured. The client shares the guest's CPU quota;
  it does so equally for both paths;
- load: 20 clients in pairs through nginx on 443 from the host side (tests/e2e/load.py), one message
  every two seconds each for 60 s (the load test's load), and optionally a closed loop (each client sends
  again as soon as its send returns) for the throughput the capped guest sustains.

Prints numbers and writes them as markdown to build/benchmark.md; asserts nothing about time.
Other processes on the machine (e.g. parallel test runs) skew the numbers: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import paths
from components.settings import memory_mb_of
from tests.e2e.deployment import DOMAIN, HOMESERVER, Deployment, deployed_host
from tests.e2e.load import LoadConfig, LoadResult, LoadUser, percentile, provision_users, run_load
from tests.e2e.runner import StepResult, run_all
from tests.e2e.testhost import limits

DEFAULT_INDEX = int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "61"))
DEFAULT_SIZE = "s-1vcpu-1gb"  # the seed guide's minimum droplet
_VCPUS_RE = re.compile(r"-(\d+)vcpu-")
OUTPUT = Path("build/benchmark.md")

# Runs in the guest with the system Python: RSS and PSS (kB, from smaps_rollup) per service.
MEMORY_SCRIPT = r"""
import json, os, re
SERVICES = ("synapse", "postgres", "nginx", "coturn", "redis")

def by_unit(pid):
    with open("/proc/%s/cgroup" % pid) as f:
        units = set(re.findall(r"/([^/\s]+\.service)", f.read()))
    for unit in units:
        if unit.startswith("matrix-synapse"): return "synapse"  # the main process and any worker
        if unit.startswith("postgresql"): return "postgres"
        if unit == "nginx.service": return "nginx"
        if unit == "coturn.service": return "coturn"
        if unit == "redis-server.service": return "redis"
    return None

def by_name(pid):
    with open("/proc/%s/cmdline" % pid, "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    with open("/proc/%s/comm" % pid) as f:
        comm = f.read().strip()
    if "synapse.app." in cmdline: return "synapse"
    if comm.startswith("postgres") or cmdline.startswith("postgres:"): return "postgres"
    if comm == "nginx": return "nginx"
    if comm == "turnserver": return "coturn"
    if comm == "redis-server": return "redis"
    return None

totals = {name: {"procs": 0, "rss_kb": 0, "pss_kb": 0, "matched_by": "unit"} for name in SERVICES + ("all",)}
rows = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/smaps_rollup" % pid) as f:
            rollup = f.read()
        rss = re.search(r"^Rss:\s+(\d+)", rollup, re.M)
        pss = re.search(r"^Pss:\s+(\d+)", rollup, re.M)
        if not rss:
            continue  # kernel thread
        rows.append((by_unit(pid), by_name(pid), int(rss.group(1)), int(pss.group(1)) if pss else 0))
    except (OSError, ValueError):
        continue
for unit, name, rss, pss in rows:
    for key in ("all", unit):
        if key:
            totals[key]["procs"] += 1; totals[key]["rss_kb"] += rss; totals[key]["pss_kb"] += pss
for service in SERVICES:
    if totals[service]["procs"] == 0:  # no unit in /proc/PID/cgroup: fall back to process names
        totals[service]["matched_by"] = "name"
        for unit, name, rss, pss in rows:
            if name == service:
                totals[service]["procs"] += 1; totals[service]["rss_kb"] += rss; totals[service]["pss_kb"] += pss
print(json.dumps(totals))
"""

# Runs in the guest with the system Python: interleaved sends through nginx and straight to Synapse.
LATENCY_SCRIPT = r"""
import http.client, json, socket, ssl, sys, time, urllib.parse
args = json.loads(sys.stdin.readline())
host = args["host"]
context = ssl.create_default_context(cadata=args["ca"])
# nginx answers only Cloudflare's origin-pull client certificate; the self-check's copy is it.
context.load_cert_chain(args["client_cert"])

class Nginx(http.client.HTTPSConnection):
    def connect(self):  # nginx on this host, with the public name for SNI, Host and verification
        sock = socket.create_connection(("127.0.0.1", 443), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=host)

class Direct(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

paths = {"nginx": Nginx(host, 443, timeout=60, context=context), "direct": Direct("127.0.0.1", 8008, timeout=60)}

def call(conn, method, path, token, body):
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    began = time.perf_counter()
    conn.request(method, "/_matrix/client/v3" + path, body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - began
    if response.status != 200:
        raise SystemExit("%s %s: %s %s" % (method, path, response.status, payload[:200]))
    return json.loads(payload), elapsed

sender, partner = args["tokens"]
room, _ = call(paths["direct"], "POST", "/createRoom", sender, {"preset": "private_chat", "invite": [args["partner"]]})
room_id = urllib.parse.quote(room["room_id"])
call(paths["direct"], "POST", "/join/" + room_id, partner, {})
times = {"nginx": [], "direct": []}
for i in range(args["warmup"] + args["samples"]):
    for name in (("nginx", "direct") if i % 2 == 0 else ("direct", "nginx")):
        _, elapsed = call(paths[name], "PUT", "/rooms/%s/send/m.room.message/%s-%d" % (room_id, name, i), sender,
                          {"msgtype": "m.text", "body": "latency %s %d" % (name, i)})
        if i >= args["warmup"]:
            times[name].append(elapsed)
print(json.dumps(times))
"""


@dataclass
class Numbers:
    fresh: list[StepResult]
    fresh_wall: float
    rerun: list[StepResult]
    rerun_wall: float
    idle_seconds: float
    memory: dict[str, dict[str, Any]]
    guest_cgroup: dict[str, int]
    loaded_memory: dict[str, dict[str, Any]]
    loaded_cgroup: dict[str, int]
    latency: dict[str, list[float]]
    samples: int
    steady: LoadResult
    saturated: LoadResult | None
    synapse_version: str
    size: str
    cpus: int
    memory_max: int


def timed_apply(deployment: Deployment) -> tuple[list[StepResult], float]:
    started = time.monotonic()

    def show(result: StepResult) -> None:
        print(f"  {result.name:24s} {result.seconds:6.1f} s", flush=True)

    results = run_all(deployment.record(), on_step=show)
    deployment.results = results
    return results, time.monotonic() - started


def guest_cgroup_memory(deployment: Deployment) -> dict[str, int]:
    """The guest's memory cgroup as the host sees it (bytes): rss, page cache, peak usage."""
    try:
        memory = limits.cgroup_dirs(deployment.host.addr.netns)[1]
        stat = dict(line.split() for line in (memory / "memory.stat").read_text().splitlines())
        return {"rss": int(stat["total_rss"]), "cache": int(stat["total_cache"]),
                "peak": int((memory / "memory.max_usage_in_bytes").read_text()),
                "limit": int((memory / "memory.limit_in_bytes").read_text())}
    except (OSError, KeyError, ValueError) as error:
        print(f"(guest memory cgroup not readable: {error})", file=sys.stderr)
        return {}


def measure_latency(deployment: Deployment, users: list[LoadUser], samples: int, warmup: int = 20) -> dict[str, list[float]]:
    # Straight to nginx on the droplet (not through the edge): its certificate chains to the ACME root.
    args = {"host": f"matrix.{DOMAIN}", "ca": deployment.origin_ca_file.read_text(),
            "client_cert": paths.ORIGIN_PULL_CLIENT, "samples": samples, "warmup": warmup,
            "tokens": [users[0].access_token, users[1].access_token], "partner": users[1].user_id}
    out = deployment.ssh(f"python3 -c {shlex.quote(LATENCY_SCRIPT)}", json.dumps(args) + "\n", timeout=600)
    times: dict[str, list[float]] = json.loads(out)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:.0f}"


def guest_size(slug: str) -> tuple[int, int]:
    """CPUs and memory (bytes) of a droplet size slug such as s-2vcpu-4gb."""
    match = _VCPUS_RE.search(slug)
    if not match:
        raise SystemExit(f"--size {slug}: a DigitalOcean size slug naming its vCPUs and memory, e.g. s-2vcpu-4gb")
    return int(match.group(1)), memory_mb_of(slug) << 20


def bench_parser(module: str, doc: str, size: str, index: int) -> argparse.ArgumentParser:
    """The options every benchmark shares: the droplet size it models and the test host's index."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--size", default=size, help="dropletSize; the guest gets its CPUs and memory")
    parser.add_argument("--index", type=int, default=index, help="test host index (network 198.18.<index>.0/30)")
    return parser


def publish(table: str, output: Path) -> None:
    """Print a benchmark's table and keep it under build/ for the README."""
    print("\n" + table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    print(f"written to {output}")


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as typed, for the report."""
    given = sys.argv[1:] if argv is None else argv
    return f"python -m {module}" + ("" if not given else " " + " ".join(given))


@contextlib.contextmanager
def capped_host(size: str, index: int) -> Iterator[tuple[Deployment, int, int]]:
    """A test host whose guest has the CPUs and memory of `size`, the deployment's dropletSize set to
    it (PostgreSQL's and Synapse's memory settings follow it); nothing provisioned yet. Needs root."""
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, systemd-nspawn, cgroups, loop devices)")
    cpus, memory_max = guest_size(size)
    volume_dir = Path(tempfile.mkdtemp(prefix="matrix-stack-bench-", dir="/var/tmp"))
    try:
        with deployed_host(index, volume_dir / "volume.img", outsider=False,
                           cpu_quota=float(cpus), memory_max=memory_max) as deployment:
            deployment.config["dropletSize"] = size
            print(f"test host {deployment.host.address}, guest capped at {cpus} CPU / {memory_max >> 20} MiB")
            yield deployment, cpus, memory_max
    finally:
        shutil.rmtree(volume_dir, ignore_errors=True)


def memory_rows(memory: dict[str, dict[str, Any]], cgroup: dict[str, int], when: str) -> list[str]:
    rows = []
    for service in ("synapse", "postgres", "nginx", "coturn", "redis", "all"):
        m = memory[service]
        label = "whole guest (all processes)" if service == "all" else f"{service} ({m['procs']} processes)"
        rows.append(f"| memory {when}, {label}: RSS / PSS | {mib(m['rss_kb'])} MiB / {mib(m['pss_kb'])} MiB |")
    if cgroup:
        rows.append(f"| guest memory cgroup {when}: RSS / page cache / peak so far (limit {cgroup['limit'] >> 20} MiB) | "
                    f"{cgroup['rss'] >> 20} MiB / {cgroup['cache'] >> 20} MiB / {cgroup['peak'] >> 20} MiB |")
    return rows


def render(n: Numbers, command: str) -> str:
    fresh_steps = sum(r.seconds for r in n.fresh)
    rerun_steps = sum(r.seconds for r in n.rerun)
    nginx, direct = n.latency["nginx"], n.latency["direct"]
    out = [
        f"## Benchmark: {n.size} ({n.cpus} CPU, {n.memory_max >> 20} MiB)",
        "",
        f"`{command}` on {datetime.date.today().isoformat()}: a local Debian test host (systemd-nspawn) whose guest "
        f"is capped at {n.cpus} CPU and {n.memory_max >> 20} MiB, dropletSize {n.size}, Synapse {n.synapse_version}, "
        f"on a machine with {os.cpu_count()} cores (the load's clients run outside the guest's cap).",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| fresh provisioning (all steps, wall / sum of steps) | {n.fresh_wall:.0f} s / {fresh_steps:.0f} s |",
        f"| forced re-run, nothing changed (wall / sum of steps) | {n.rerun_wall:.0f} s / {rerun_steps:.0f} s |",
    ]
    out += memory_rows(n.memory, n.guest_cgroup, f"idle after {n.idle_seconds:.0f} s")
    out += [
        f"| send latency through nginx (in-guest client, {n.samples} sends): p50 / p99 | "
        f"{ms(percentile(nginx, 50))} ms / {ms(percentile(nginx, 99))} ms |",
        f"| send latency direct to Synapse 127.0.0.1:8008 ({n.samples} sends): p50 / p99 | "
        f"{ms(percentile(direct, 50))} ms / {ms(percentile(direct, 99))} ms |",
        f"| nginx overhead, ratio nginx / direct: p50 / p99 | "
        f"{percentile(nginx, 50) / percentile(direct, 50):.2f} / {percentile(nginx, 99) / percentile(direct, 99):.2f} |",
    ]
    for label, load in (("steady", n.steady), ("closed loop", n.saturated)):
        if load is None:
            continue
        mode = "closed loop" if load.config.rate == 0 else f"{load.config.rate:g} msg/s each"
        out += [
            f"| load, {load.clients} clients, {mode}, {load.config.duration:g} s: messages/s | "
            f"{load.messages_per_second:.1f} (sent {load.sent}, received {load.received}, lost {len(load.lost)}, "
            f"errors {len(load.errors)}) |",
            f"| load ({label}): send→receive latency via /sync p50 / p90 / p99 | "
            f"{load.latency_ms(50):.0f} ms / {load.latency_ms(90):.0f} ms / {load.latency_ms(99):.0f} ms |",
        ]
    out += memory_rows(n.loaded_memory, n.loaded_cgroup, "right after the last load")
    out += ["", "| step | fresh (s) | re-run (s) |", "|---|---|---|"]
    rerun = {r.name: r.seconds for r in n.rerun}
    for r in n.fresh:
        out.append(f"| {r.name} | {r.seconds:.1f} | {rerun.get(r.name, float('nan')):.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tests.bench.benchmark", __doc__ or "", DEFAULT_SIZE, DEFAULT_INDEX)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=LoadConfig.rate, help="messages per second per client in the steady run")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before measuring memory")
    parser.add_argument("--samples", type=int, default=300, help="sends per path for the latency comparison")
    parser.add_argument("--no-saturate", action="store_true", help="skip the closed-loop load run")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    command = command_line("tests.bench.benchmark", argv)
    with capped_host(args.size, args.index) as (deployment, cpus, memory_max):
        print("fresh provisioning:", flush=True)
        fresh, fresh_wall = timed_apply(deployment)
        print("forced re-run (nothing changed):", flush=True)
        rerun, rerun_wall = timed_apply(deployment)
        print(f"idle for {args.idle:g} s ...", flush=True)
        time.sleep(args.idle)
        memory = json.loads(deployment.ssh(f"python3 -c {shlex.quote(MEMORY_SCRIPT)}"))
        cgroup = guest_cgroup_memory(deployment)
        version = deployment.ssh("/opt/synapse/venv/bin/python -c 'import synapse; print(synapse.__version__)'").strip()

        users = provision_users(deployment.ssh, args.clients + 2)
        print(f"latency: {args.samples} interleaved sends per path, in the guest ...", flush=True)
        latency = measure_latency(deployment, users[args.clients:], args.samples)
        load_users = users[: args.clients]
        steady = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, load_users,
                                      LoadConfig(duration=args.duration, rate=args.rate)))
        print(steady.summary(), flush=True)
        saturated = None
        if not args.no_saturate:
            saturated = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, load_users,
                                             LoadConfig(duration=args.duration, rate=0)))
            print(saturated.summary(), flush=True)
        loaded_memory = json.loads(deployment.ssh(f"python3 -c {shlex.quote(MEMORY_SCRIPT)}"))
        loaded_cgroup = guest_cgroup_memory(deployment)

    numbers = Numbers(fresh, fresh_wall, rerun, rerun_wall, args.idle, memory, cgroup, loaded_memory, loaded_cgroup,
                      latency, args.samples, steady, saturated, version, args.size, cpus, memory_max)
    table = render(numbers, command)
    publish(table, args.output)
    problems = [f"{label}: {len(r.errors)} errors, {len(r.lost)} lost"
                for label, r in (("steady", steady), ("closed loop", saturated))
                if r is not None and (r.errors or r.lost or r.mismatched)]
    for problem in problems:
        print(f"WARNING: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
