"""What happens at the memory limit: which process the OOM killer picks, and how the server comes back.

    python -m tests.bench.oom [--size s-1vcpu-1gb] [--swap-mb 1024]

Needs root, like the end-to-end suite. Boots one test host capped at the memory of `--size`, deploys,
and while the benchmark's steady load runs through the edge, a process in the guest grows by 4 MiB
every 50 ms, touching every page, until the kernel kills something. Twice:
- "a runaway process": the grower has the default OOM score adjustment, as apt, pip or a backup has;
- "the server's own processes": the memory goes to files on a tmpfs in the guest, 8 MiB per short-lived
  writer, so no process holds it and the kernel has to choose among the server's processes, as when
  Synapse itself grows (e.g. joining a large federated room). (Exempting a grower with oom_score_adj
  -1000 would need CAP_SYS_RESOURCE, which neither the guest nor this machine's root has.)
Each time it prints the kernel's victims (the host's kernel log), which services lost their main process
or restarted, how long until Synapse answered /health again, and the load's lost messages and errors.
The grower stops itself after 120 s. `--swap-mb` repeats it with a swap file of that size: swap belongs
to the kernel the guest shares with this machine, so the file is the host's (on for this run only, off
and deleted after), and the guest's memory cgroup may then use that much swap beyond its memory limit,
as a droplet with a swap file of that size could. Numbers only; asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench.benchmark import MEMORY_SCRIPT, bench_parser, capped_host, command_line, mib, publish, timed_apply
from tests.e2e.deployment import HOMESERVER, Deployment
from tests.e2e.load import LoadConfig, LoadResult, LoadUser, provision_users, run_load
from tests.e2e.testhost import limits

DEFAULT_INDEX = int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "64"))
OUTPUT = Path("build/benchmark-oom.md")
SERVICES = ("matrix-synapse.service nginx.service coturn.service ssh.service "
            "$(systemctl list-units --plain --no-legend 'postgresql@*' | awk '{print $1}')")
GROWER_UNIT = "matrix-stack-bench-grower"
GROWER = (
    "import mmap, time\n"
    "chunks, deadline = [], time.monotonic() + 120\n"
    "while time.monotonic() < deadline:\n"
    "    m = mmap.mmap(-1, 4 << 20)\n"
    "    for i in range(0, 4 << 20, 4096):\n"
    "        m[i] = 1\n"
    "    chunks.append(m)\n"
    "    time.sleep(0.05)\n"
)
HEALTH = "curl -fsS -m 2 http://127.0.0.1:8008/health"
FILL_DIR = "/run/matrix-stack-bench-fill"
# Memory no process owns: tmpfs files written by one short `head` each, until 120 s or a write fails.
FILLER = (f"mkdir -p {FILL_DIR} && mount -t tmpfs -o size=4g tmpfs {FILL_DIR} && "
          f"end=$((SECONDS + 120)); i=0; while [ $SECONDS -lt $end ]; do i=$((i + 1)); "
          f"head -c 8M /dev/zero > {FILL_DIR}/$i || break; sleep 0.1; done")
_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")
_KILLED = re.compile(r"Killed process (\d+) \((\S+)\).*?anon-rss:(\d+)kB.*?shmem-rss:(\d+)kB.*?oom_score_adj:(-?\d+)")


def service_state(deployment: Deployment) -> dict[str, dict[str, str]]:
    """MainPID, NRestarts and Result of each service (one `systemctl show` per unit pattern)."""
    out = deployment.ssh(f"for u in {SERVICES}; do systemctl show -p Id -p MainPID -p NRestarts "
                         "-p Result \"$u\"; echo; done")
    states: dict[str, dict[str, str]] = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[fields.get("Id", "?")] = fields
    return states


def _kernel_log() -> list[tuple[float, str]]:
    lines = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [(float(m.group(1)), line) for line in lines if (m := _STAMP.match(line))]


def kernel_kills(since: float) -> list[str]:
    """The host kernel's OOM kills logged after time `since` (the guest's memory cgroup is the host's)."""
    return [line for stamp, line in _kernel_log() if stamp > since and "Killed process" in line]


def kernel_now() -> float:
    log = _kernel_log()
    return log[-1][0] if log else 0.0


def victims(kills: list[str]) -> str:
    """Each killed process: name, pid, anonymous and shared memory, its score adjustment."""
    found = [m.groups() for m in map(_KILLED.search, kills) if m]
    return "; ".join(f"{name} (pid {pid}, anon {int(anon) >> 10} MiB, shmem {int(shmem) >> 10} MiB, adj {adj})"
                     for pid, name, anon, shmem, adj in found) or "nothing"


def start_grower(deployment: Deployment, unowned: bool) -> None:
    program = f"bash -c {shlex.quote(FILLER)}" if unowned else f"python3 -c {shlex.quote(GROWER)}"
    deployment.ssh(f"systemd-run --quiet --unit={GROWER_UNIT} {program}")


def stop_grower(deployment: Deployment) -> None:
    deployment.ssh(f"systemctl stop {GROWER_UNIT} 2>/dev/null; systemctl reset-failed {GROWER_UNIT} 2>/dev/null; "
                   f"if mountpoint -q {FILL_DIR}; then umount {FILL_DIR}; fi; true")


def run_scenario(deployment: Deployment, users: list[LoadUser], label: str, unowned: bool) -> dict[str, Any]:
    before = service_state(deployment)
    mark = kernel_now()
    holder: dict[str, LoadResult] = {}
    load = threading.Thread(target=lambda: holder.setdefault("load", asyncio.run(run_load(
        HOMESERVER, deployment.edge_address, deployment.ca_file, users, LoadConfig(duration=90, rate=0.5)))))
    load.start()
    time.sleep(15)
    started = time.monotonic()
    start_grower(deployment, unowned)
    kills: list[str] = []
    while time.monotonic() - started < 130 and not kills:
        time.sleep(0.2)
        kills = kernel_kills(mark)
    killed_after = time.monotonic() - started
    stop_grower(deployment)
    time.sleep(1)
    kills = kernel_kills(mark)
    healthy_after = None
    while time.monotonic() - started < 240:
        if deployment.host.ssh(HEALTH, timeout=10).returncode == 0:
            healthy_after = time.monotonic() - started
            break
        time.sleep(0.5)
    load.join()
    after = service_state(deployment)
    changed = {unit: f"MainPID {before[unit].get('MainPID')} -> {state.get('MainPID')}, NRestarts "
                     f"{before[unit].get('NRestarts')} -> {state.get('NRestarts')}, Result {state.get('Result')}"
               for unit, state in after.items()
               if unit in before and (state.get("MainPID") != before[unit].get("MainPID")
                                      or state.get("NRestarts") != before[unit].get("NRestarts"))}
    result = holder["load"]
    print(f"{label}: kills {kills}; changed {changed}; load {result.summary()}", flush=True)
    return {"label": label, "unowned": unowned, "kills": kills, "killed_after": killed_after,
            "healthy_after": healthy_after, "changed": changed, "load": result}


SWAP_FILE = Path("/var/tmp/matrix-stack-bench.swap")


@contextlib.contextmanager
def host_swap(megabytes: int) -> Iterator[None]:
    """A swap file on the host for this run (0: none); swapped off and deleted after the guest is gone."""
    if not megabytes:
        yield
        return
    subprocess.run(["fallocate", "-l", f"{megabytes}M", str(SWAP_FILE)], check=True)
    SWAP_FILE.chmod(0o600)
    subprocess.run(["mkswap", "-q", str(SWAP_FILE)], check=True)
    subprocess.run(["swapon", str(SWAP_FILE)], check=True)
    try:
        yield
    finally:
        subprocess.run(["swapoff", str(SWAP_FILE)], check=False)
        SWAP_FILE.unlink()


def allow_guest_swap(deployment: Deployment, megabytes: int) -> None:
    memory = limits.cgroup_dirs(deployment.host.addr.netns)[1]
    limit = int((memory / "memory.limit_in_bytes").read_text())
    (memory / "memory.memsw.limit_in_bytes").write_text(str(limit + (megabytes << 20)))


def render(scenarios: list[dict[str, Any]], memory: dict[str, Any], size: str, swap_mb: int, command: str) -> str:
    swap = f", a {swap_mb} MiB swap file" if swap_mb else ", no swap"
    out = [f"## At the memory limit: {size}{swap}", "", f"`{command}`", "",
           "Idle PSS before: " + ", ".join(f"{k} {mib(v['pss_kb'])} MiB" for k, v in memory.items()), "",
           "| scenario | the kernel killed | services whose main process changed | Synapse /health again after "
           "| load: msg/s, lost, errors |",
           "|---|---|---|---|---|"]
    for s in scenarios:
        changed = "; ".join(f"{u}: {c}" for u, c in s["changed"].items()) or "none"
        healthy = f"{s['healthy_after']:.0f} s after the grower started" if s["healthy_after"] else "not within 240 s"
        if "matrix-synapse.service" not in s["changed"]:
            healthy = "never down (same process)"
        load: LoadResult = s["load"]
        grower = "tmpfs files" if s["unowned"] else "a growing process"
        out.append(f"| {s['label']} ({grower}, first kill after {s['killed_after']:.0f} s) | "
                   f"{victims(s['kills'])} | {changed} | {healthy} | {load.messages_per_second:.1f}, {len(load.lost)}, "
                   f"{len(load.errors)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tests.bench.oom", __doc__ or "", "s-1vcpu-1gb", DEFAULT_INDEX)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--swap-mb", type=int, default=0, help="a swap file of this size (default: none)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    with host_swap(args.swap_mb), capped_host(args.size, args.index) as (deployment, _cpus, _memory):
        if args.swap_mb:
            allow_guest_swap(deployment, args.swap_mb)
        timed_apply(deployment)
        users = provision_users(deployment.ssh, args.clients)
        time.sleep(20)
        memory = json.loads(deployment.ssh(f"python3 -c {shlex.quote(MEMORY_SCRIPT)}"))
        scenarios = [run_scenario(deployment, users, "a runaway process", unowned=False),
                     run_scenario(deployment, users, "the server's own processes", unowned=True)]
    table = render(scenarios, memory, args.size, args.swap_mb, command_line("tests.bench.oom", argv))
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
