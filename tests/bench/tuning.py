"""A/B rounds for tuning candidates at the seed's minimum droplet: is a change worth keeping?

    python -m tests.bench.tuning [--size s-1vcpu-1gb] [--rounds 2] [--only nginx-keepalive,...]

Needs root, like the end-to-end suite. Boots one test host capped at `--size`, deploys the program, then
for each candidate alternates the deployed configuration (A) and A plus the candidate (B), in the order
A/B, then B/A, so a trend over the run (the database growing, caches warming) favours neither. Before
every measurement Synapse restarts and nginx reloads, whichever side is measured, then 15 s to settle,
then the benchmark's closed loop through the edge (20 clients in pairs, each sending again as soon as its
send returns, every delivery checked by /sync). A candidate is a bench-only edit of a deployed file,
undone after its rounds; one that wins its ratio is then made in the program's templates. Prints every
measurement and the ratios B / A; asserts nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.benchmark import bench_parser, capped_host, command_line, publish, timed_apply
from tests.e2e.deployment import HOMESERVER, Deployment
from tests.e2e.load import LoadConfig, LoadResult, LoadUser, provision_users, run_load

DEFAULT_INDEX = int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "65"))
OUTPUT = Path("build/benchmark-tuning.md")
SETTLE_S = 15.0
NGINX_SITE = "/etc/nginx/sites-available/matrix-stack-matrix"
HOMESERVER_YAML = "/etc/matrix-synapse/homeserver.yaml"
LOG_YAML = "/etc/matrix-synapse/log.yaml"
RESTART = ("systemctl restart matrix-synapse && nginx -t -q && systemctl reload nginx && "
           "for i in $(seq 120); do curl -fsS -m 2 http://127.0.0.1:8008/health >/dev/null && exit 0; sleep 0.5; done; "
           "exit 1")


@dataclass(frozen=True)
class Candidate:
    name: str
    what: str
    files: tuple[str, ...]  # saved before `apply`, put back to undo it
    apply: str  # shell, run as root in the guest


CANDIDATES = (
    Candidate("nginx-keepalive", "nginx keeps idle HTTP/1.1 connections to Synapse open (upstream keepalive 16)",
              (NGINX_SITE,),
              f"sed -i -e 's#proxy_pass http://\\([0-9.]*:[0-9]*\\);#proxy_pass http://ms_bench_synapse;"
              f"\\n        proxy_set_header Connection \"\";#' {NGINX_SITE} && "
              f"grep -q ms_bench_synapse {NGINX_SITE} && "
              f"sed -i '1i upstream ms_bench_synapse {{\\n    server 127.0.0.1:8008;\\n    keepalive 16;\\n}}' {NGINX_SITE}"),
    Candidate("synapse-gc", "Synapse collects garbage less often (gc_thresholds [5000, 20, 20], Python's are [700, 10, 10])",
              (HOMESERVER_YAML,), f"printf '\\ngc_thresholds: [5000, 20, 20]\\n' >> {HOMESERVER_YAML}"),
    Candidate("synapse-log-warning", "Synapse logs warnings only (root logger WARNING instead of INFO)",
              (LOG_YAML,), f"sed -i '/^root:/,/^ *level:/ s/level: INFO/level: WARNING/' {LOG_YAML} && "
                           f"grep -A1 '^root:' {LOG_YAML} | grep -q WARNING"),
)


@dataclass
class Sample:
    candidate: str
    round: int
    on: bool
    closed: LoadResult


def switch(deployment: Deployment, candidate: Candidate, on: bool) -> None:
    saved = [f"/root/bench-saved{path.replace('/', '_')}" for path in candidate.files]
    restore = " && ".join(f"cp -p {copy} {path}" for copy, path in zip(saved, candidate.files, strict=True))
    save = " && ".join(f"cp -p {path} {copy}" for copy, path in zip(saved, candidate.files, strict=True))
    deployment.ssh(f"[ -f {saved[0]} ] || {{ {save}; }}; {restore}" + (f" && {candidate.apply}" if on else ""))
    deployment.ssh(RESTART, timeout=120)


def measure(deployment: Deployment, users: list[LoadUser], candidate: Candidate, round_: int, on: bool,
            duration: float) -> Sample:
    switch(deployment, candidate, on)
    time.sleep(SETTLE_S)
    closed = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, users,
                                  LoadConfig(duration=duration, rate=0)))
    print(f"{candidate.name} {'B' if on else 'A'}: {closed.summary()}", flush=True)
    return Sample(candidate.name, round_ + 1, on, closed)


def render(samples: list[Sample], candidates: list[Candidate], size: str, command: str) -> str:
    out = [f"## Tuning candidates: {size}", "",
           f"`{command}` on {datetime.date.today().isoformat()}, a machine with {os.cpu_count()} cores.", "",
           "| candidate | round | side | closed-loop msg/s | p50 / p99 | lost, errors |", "|---|---|---|---|---|---|"]
    for s in samples:
        out.append(f"| {s.candidate} | {s.round} | {'B' if s.on else 'A'} | {s.closed.messages_per_second:.1f} | "
                   f"{s.closed.latency_ms(50):.0f} / {s.closed.latency_ms(99):.0f} ms | "
                   f"{len(s.closed.lost)}, {len(s.closed.errors)} |")
    out += ["", "| candidate | what | msg/s A → B (median) | ratio B / A per round | p99 A → B (median) |",
            "|---|---|---|---|---|"]
    for c in candidates:
        mine = [s for s in samples if s.candidate == c.name]
        a = [s.closed for s in mine if not s.on]
        b = [s.closed for s in mine if s.on]
        ratios = ", ".join(f"{y.messages_per_second / x.messages_per_second:.2f}" for x, y in zip(a, b, strict=True))
        out.append(f"| {c.name} | {c.what} | {statistics.median(r.messages_per_second for r in a):.1f} → "
                   f"{statistics.median(r.messages_per_second for r in b):.1f} | {ratios} | "
                   f"{statistics.median(r.latency_ms(99) for r in a):.0f} → "
                   f"{statistics.median(r.latency_ms(99) for r in b):.0f} ms |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tests.bench.tuning", __doc__ or "", "s-1vcpu-1gb", DEFAULT_INDEX)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    wanted = [c for c in CANDIDATES if not args.only or c.name in args.only.split(",")]
    samples: list[Sample] = []
    with capped_host(args.size, args.index) as (deployment, _cpus, _memory):
        timed_apply(deployment)
        users = provision_users(deployment.ssh, args.clients)
        for candidate in wanted:
            for round_ in range(args.rounds):
                for on in ((False, True) if round_ % 2 == 0 else (True, False)):
                    samples.append(measure(deployment, users, candidate, round_, on, args.duration))
            switch(deployment, candidate, False)
    table = render(samples, wanted, args.size, command_line("tests.bench.tuning", argv))
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
