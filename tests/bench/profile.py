"""Where the CPU goes at the seed's minimum droplet (1 CPU, 1 GiB) under the benchmark's closed-loop load.

    python -m tests.bench.profile [--index 61] [--clients 20] [--duration 60] [--rate 100]

Needs root and py-spy in the project's venv (requirements-dev.txt). Boots the capped test host, deploys
the program, turns on pg_stat_statements in the guest (benchmark only: shared_preload_libraries and a
PostgreSQL restart before any load), then runs the closed-loop load from the host while

- py-spy samples Synapse's main process from the host side (`--nonblocking`: the process is never
  paused; the sampler's own CPU is outside the guest's 1-CPU cap; `--gil`: only the thread holding the
  GIL, i.e. where Synapse's Python spends CPU, not database threads waiting for PostgreSQL),
- the guest's per-service CPU time (utime + stime, and the reaped children's for PostgreSQL's
  short-lived backends) is read before and after.

Prints: CPU seconds per service during the load, Synapse's samples by area (the innermost frame
that belongs to an area decides), its hottest functions, and PostgreSQL's top statements by total
time. Numbers only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.deployment import HOMESERVER, Deployment, deployed_host
from tests.e2e.load import LoadConfig, provision_users, run_load
from tests.e2e.runner import run_all

CPU_QUOTA = 1.0
MEMORY_MAX = 1 << 30
PY_SPY = Path(sys.executable).with_name("py-spy")

# Per service: CPU seconds of its processes (utime+stime+cutime+cstime), by systemd unit.
CPU_SCRIPT = r"""
import json, os, re
ticks = os.sysconf("SC_CLK_TCK")
totals = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/cgroup" % pid) as f:
            units = re.findall(r"/([^/\s]+\.service)", f.read())
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    unit = units[-1] if units else "other"
    seconds = sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
    totals[unit] = totals.get(unit, 0.0) + seconds
print(json.dumps(totals))
"""

# Innermost frame first: the first area whose pattern matches a frame's file decides the sample.
AREAS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("TLS (client connections to Synapse are plain HTTP from nginx; this is outbound TLS)",
     re.compile(r"/ssl\.py|OpenSSL|twisted/protocols/tls\.py|_sslverify")),
    ("JSON encode/decode", re.compile(r"canonicaljson|/json/|simplejson|synapse/util/json")),
    ("database driver and pool (psycopg2, storage/database.py)",
     re.compile(r"psycopg2|synapse/storage/database\.py|synapse/storage/engines/")),
    ("event persistence", re.compile(r"synapse/storage/controllers/persist_events\.py|"
                                     r"synapse/storage/databases/main/events\.py|synapse/handlers/message\.py|"
                                     r"synapse/events/")),
    ("sync fan-out (notifier, sync handler)", re.compile(r"synapse/notifier\.py|synapse/handlers/sync\.py|"
                                                          r"synapse/rest/client/sync\.py|synapse/handlers/presence")),
    ("auth and access tokens", re.compile(r"synapse/api/auth|synapse/handlers/auth")),
    ("other storage queries", re.compile(r"synapse/storage/")),
    ("HTTP server and request handling", re.compile(r"synapse/http/|twisted/web/")),
    ("other Synapse code", re.compile(r"synapse/")),
    ("Twisted reactor and I/O", re.compile(r"twisted/")),
)


def synapse_host_pid(machine: str) -> int:
    """Synapse's main process as the host sees it: the homeserver process inside this guest's cgroup."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if "synapse.app.homeserver" in cmdline and machine in cgroup and "matrix-synapse.service" in cgroup:
            return int(pid)
    raise RuntimeError(f"no Synapse process in machine {machine}")


def areas_of(raw: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """py-spy's raw (collapsed) stacks -> samples per area, per innermost function, and the total."""
    by_area: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_leaf[frames[-1]] += count
        area = next((name for frame in reversed(frames) for name, pattern in AREAS if pattern.search(frame)),
                    "outside Python (C extensions, GC)")
        by_area[area] += count
    return by_area, by_leaf, total


def enable_pg_stat_statements(deployment: Deployment) -> None:
    deployment.ssh("runuser -u postgres -- psql -qc \"ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'\"")
    deployment.ssh("systemctl restart postgresql.service && runuser -u postgres -- psql -q synapse "
                   "-c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'")
    deployment.ssh("for _ in $(seq 60); do curl -fs http://127.0.0.1:8008/health >/dev/null && exit 0; sleep 1; done;"
                   " exit 1")


TOP_STATEMENTS_SQL = """
SELECT calls, round(total_exec_time)::bigint AS total_ms, round(mean_exec_time::numeric, 2) AS mean_ms,
       rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, default=int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "61")))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not PY_SPY.exists():
        print(f"needs root and {PY_SPY} (pip install py-spy)", file=sys.stderr)
        return 2
    volume_dir = Path(tempfile.mkdtemp(prefix="matrix-stack-profile-", dir="/var/tmp"))
    try:
        with deployed_host(args.index, volume_dir / "volume.img", outsider=False,
                           cpu_quota=CPU_QUOTA, memory_max=MEMORY_MAX) as deployment:
            run_all(deployment.record())
            enable_pg_stat_statements(deployment)
            users = provision_users(deployment.ssh, args.clients)
            deployment.ssh("runuser -u postgres -- psql -q synapse -c 'SELECT pg_stat_statements_reset()'")
            cpu_before = json.loads(deployment.ssh(f"python3 -c {shlex.quote(CPU_SCRIPT)}"))
            raw_file = volume_dir / "synapse.raw"
            sampler = subprocess.Popen(
                [str(PY_SPY), "record", "--pid", str(synapse_host_pid(deployment.host.addr.netns)),
                 "--duration", str(int(args.duration)), "--rate", str(args.rate), "--nonblocking", "--gil",
                 "--format", "raw", "--output", str(raw_file)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started = time.monotonic()
            result = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, users,
                                          LoadConfig(duration=args.duration, rate=0)))
            loaded = time.monotonic() - started
            cpu_after = json.loads(deployment.ssh(f"python3 -c {shlex.quote(CPU_SCRIPT)}"))
            _, sampler_err = sampler.communicate(timeout=120)
            statements = deployment.ssh(f"runuser -u postgres -- psql synapse -c {shlex.quote(TOP_STATEMENTS_SQL)}")
            raw = raw_file.read_text() if raw_file.exists() else ""
    finally:
        shutil.rmtree(volume_dir, ignore_errors=True)

    print(result.summary())
    print(f"\nCPU seconds per service during the load ({loaded:.0f} s wall, cap {CPU_QUOTA:g} CPU):")
    spent = {unit: cpu_after.get(unit, 0.0) - cpu_before.get(unit, 0.0) for unit in cpu_after}
    for unit, seconds in sorted(spent.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {unit:32s} {seconds:7.1f} s  ({100 * seconds / loaded:5.1f} % of one CPU)")
    by_area, by_leaf, total = areas_of(raw)
    if not total:
        print(f"\npy-spy recorded nothing: {sampler_err.decode()[-500:]}")
        return 1
    print(f"\nSynapse by area ({total} samples at {args.rate}/s of the thread holding the GIL):")
    for area, count in by_area.most_common():
        print(f"  {100 * count / total:5.1f} %  {area}")
    print("\nSynapse's hottest innermost functions:")
    for leaf, count in by_leaf.most_common(15):
        print(f"  {100 * count / total:5.1f} %  {leaf[:120]}")
    print("\nPostgreSQL's top statements by total time during the load:\n" + statements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
