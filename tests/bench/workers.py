"""Benchmark synapseWorkers: the same load on one capped test host, Synapse alone and with workers.

    python -m tests.bench.workers [--size s-2vcpu-4gb] [--rounds 2] [--clients 20] [--duration 60]

Needs root, like the end-to-end suite. Boots one test host capped at the CPUs and memory of `--size`,
deploys the program with that dropletSize, then alternates the two configurations, `pulumi up`'s way
(only the changed steps run): each round measures both, in the order off/on, then on/off, so a trend
over the run (caches warming, the database growing) does not favour one side. Each measurement is the
benchmark's steady load (tests/e2e/load.py: 20 clients in pairs through the edge, one message every
two seconds each) and a closed loop (each client sends again as soon as its send returns), then the
memory of Synapse's processes and Redis. Prints every round, the medians per configuration and the
ratios with/without; asserts nothing. The load's clients run on the same machine outside the guest's
cap, so on a 2-core machine they compete with a 2-CPU guest: the numbers are a floor, the same for both.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.benchmark import MEMORY_SCRIPT, bench_parser, capped_host, command_line, mib, publish, timed_apply
from tests.e2e.deployment import HOMESERVER, Deployment
from tests.e2e.load import LoadConfig, LoadResult, LoadUser, provision_users, run_load

DEFAULT_INDEX = int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "61"))
OUTPUT = Path("build/benchmark-workers.md")
SETTLE_S = 15.0  # after a switch: the restarted processes warm up before the load starts


@dataclass
class Sample:
    workers: bool
    steady: LoadResult
    closed: LoadResult
    synapse_pss_kb: float
    redis_pss_kb: float
    switch_seconds: float


def measure(deployment: Deployment, users: list[LoadUser], workers: bool, duration: float, rate: float) -> Sample:
    started = time.monotonic()
    changed, results = deployment.apply_changes(synapseWorkers=True if workers else None)
    failed = [r.name for r in results if r.returncode != 0]
    if failed:
        raise SystemExit(f"switching synapseWorkers to {workers} failed in {failed}")
    switch = time.monotonic() - started
    print(f"synapseWorkers {'on' if workers else 'off'}: ran {sorted(changed)} in {switch:.0f} s", flush=True)
    time.sleep(SETTLE_S)
    steady = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, users,
                                  LoadConfig(duration=duration, rate=rate)))
    print(steady.summary(), flush=True)
    closed = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, users,
                                  LoadConfig(duration=duration, rate=0)))
    print(closed.summary(), flush=True)
    memory = json.loads(deployment.ssh(f"python3 -c {shlex.quote(MEMORY_SCRIPT)}"))
    return Sample(workers, steady, closed, memory["synapse"]["pss_kb"], memory["redis"]["pss_kb"], switch)


def median(samples: list[Sample], value: str) -> float:
    getters = {
        "steady_rate": lambda s: s.steady.messages_per_second, "steady_p50": lambda s: s.steady.latency_ms(50),
        "steady_p99": lambda s: s.steady.latency_ms(99), "closed_rate": lambda s: s.closed.messages_per_second,
        "closed_p50": lambda s: s.closed.latency_ms(50), "closed_p99": lambda s: s.closed.latency_ms(99),
        "synapse_pss": lambda s: s.synapse_pss_kb, "redis_pss": lambda s: s.redis_pss_kb,
    }
    return float(statistics.median(getters[value](s) for s in samples))


def render(samples: list[Sample], size: str, cpus: int, memory_max: int, command: str) -> str:
    off = [s for s in samples if not s.workers]
    on = [s for s in samples if s.workers]
    out = [
        f"## synapseWorkers benchmark: {size} ({cpus} CPU, {memory_max >> 20} MiB)",
        "",
        f"`{command}` on {datetime.date.today().isoformat()}: one local test host capped at {cpus} CPU and "
        f"{memory_max >> 20} MiB, {len(samples) // 2} rounds alternating Synapse alone and with workers, on a "
        f"machine with {os.cpu_count()} cores (the load's clients run outside the guest's cap).",
        "",
        "| round | workers | steady msg/s | steady p50 / p99 | closed msg/s | closed p50 / p99 | Synapse PSS | Redis PSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(samples):
        out.append(f"| {i // 2 + 1} | {'on' if s.workers else 'off'} | {s.steady.messages_per_second:.1f} | "
                   f"{s.steady.latency_ms(50):.0f} / {s.steady.latency_ms(99):.0f} ms | "
                   f"{s.closed.messages_per_second:.1f} | {s.closed.latency_ms(50):.0f} / "
                   f"{s.closed.latency_ms(99):.0f} ms | {mib(s.synapse_pss_kb)} MiB | {mib(s.redis_pss_kb)} MiB |")
    out += ["", "| median | off | on | ratio on / off |", "|---|---|---|---|"]
    for label, value, unit in (("steady messages/s", "steady_rate", ""), ("steady p50", "steady_p50", " ms"),
                               ("steady p99", "steady_p99", " ms"), ("closed-loop messages/s", "closed_rate", ""),
                               ("closed-loop p50", "closed_p50", " ms"), ("closed-loop p99", "closed_p99", " ms"),
                               ("Synapse PSS (all its processes)", "synapse_pss", " KiB")):
        a, b = median(off, value), median(on, value)
        out.append(f"| {label} | {a:.1f}{unit} | {b:.1f}{unit} | {b / a:.2f} |" if a else f"| {label} | {a} | {b} | - |")
    problems = sum(len(s.steady.errors) + len(s.steady.lost) + len(s.closed.errors) + len(s.closed.lost)
                   for s in samples)
    out += ["", f"Errors and lost messages over all loads: {problems}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tests.bench.workers", __doc__ or "", "s-2vcpu-4gb", DEFAULT_INDEX)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=LoadConfig.rate, help="messages per second per client (steady)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    command = command_line("tests.bench.workers", argv)
    samples: list[Sample] = []
    with capped_host(args.size, args.index) as (deployment, cpus, memory_max):
        timed_apply(deployment)
        users = provision_users(deployment.ssh, args.clients)
        for round_ in range(args.rounds):
            for workers in ((False, True) if round_ % 2 == 0 else (True, False)):
                samples.append(measure(deployment, users, workers, args.duration, args.rate))
    table = render(samples, args.size, cpus, memory_max, command)
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
