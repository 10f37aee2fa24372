"""Where provisioning spends its time: every step, fresh and re-run, line by line.

    python -m tests.bench.provision [--size s-1vcpu-1gb] [--top 4]

Needs root, like the end-to-end suite. Boots one test host capped at the CPUs and memory of `--size`,
runs the program's recorded steps (the same bundles, in the same order) once on the fresh host and once
more with nothing changed, each under bash's xtrace with a timestamp per traced line, and prints per
step its time and the lines that took longest (a line's time runs until the next traced line starts, so
a function call's time is its callee's). Traces stay in a root-only directory under build/; they may
hold the test stack's generated secrets, so only each line's first characters are printed. Numbers only.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.benchmark import bench_parser, capped_host, command_line, publish
from tests.e2e.runner import connect, deploy_key_file
from tests.harness import Registration

DEFAULT_INDEX = int(os.environ.get("MATRIX_STACK_BENCH_INDEX", "62"))
OUTPUT = Path("build/benchmark-provision.md")
TRACE_DIR = Path("build/provision-traces")
# The provider's command, with the bundle run under xtrace (timestamps, to a file of its own).
TRACED_RUN = ('set -e; f=$(mktemp /root/.matrix-stack-step.XXXXXX); trap \'rm -f "$f" "$f.trace"\' EXIT; cat > "$f"; '
              'bash -c \'PS4="+\\${EPOCHREALTIME} "; exec 19>"$1"; BASH_XTRACEFD=19; set -x; source "$0"\' '
              '"$f" "$f.trace" </dev/null; rc=$?; cat "$f.trace" >&2; exit $rc')
_TRACE_LINE = re.compile(r"^(\++)(\d+\.\d+) (.*)$")
SHOWN_CHARS = 60


@dataclass
class StepTiming:
    name: str
    seconds: float
    slowest: list[tuple[float, str]]


def slowest_lines(trace: str, top: int) -> list[tuple[float, str]]:
    """The traced lines that took longest: each lasts until the next traced line starts."""
    points = [(float(m.group(2)), m.group(3)) for m in map(_TRACE_LINE.match, trace.splitlines()) if m]
    spans = [(later[0] - t, text) for (t, text), later in itertools.pairwise(points)]
    return sorted(spans, reverse=True)[:top]


def run_traced(command: Registration, key: Path, top: int) -> StepTiming:
    started = time.monotonic()
    proc = subprocess.run([*connect(command, key), TRACED_RUN], input=command.inputs.get("stdin", ""),
                          capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"step {command.name} exited {proc.returncode}: {proc.stderr[-3000:]}")
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    TRACE_DIR.chmod(0o700)
    (TRACE_DIR / f"{command.name}.trace").write_text(proc.stderr)
    return StepTiming(command.name, seconds, slowest_lines(proc.stderr, top))


def render(runs: dict[str, list[StepTiming]], size: str, walls: dict[str, float], command: str) -> str:
    out = [f"## Provisioning profile: {size}", "", f"`{command}`", ""]
    for label, timings in runs.items():
        out += [f"### {label}: {walls[label]:.1f} s wall, {sum(t.seconds for t in timings):.1f} s in steps", "",
                "| step | s | slowest lines (s, first characters) |", "|---|---|---|"]
        for t in timings:
            lines = "; ".join(f"{s:.1f} `{text[:SHOWN_CHARS].replace('|', '/').replace('`', '')}`"
                              for s, text in t.slowest if s >= 0.1)
            out.append(f"| {t.name} | {t.seconds:.1f} | {lines} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tests.bench.provision", __doc__ or "", "s-1vcpu-1gb", DEFAULT_INDEX)
    parser.add_argument("--top", type=int, default=4, help="slowest lines shown per step")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    runs: dict[str, list[StepTiming]] = {}
    walls: dict[str, float] = {}
    with capped_host(args.size, args.index) as (deployment, _cpus, _memory):
        recording = deployment.record()
        deployment.apply_cloud()
        key = deploy_key_file(recording, TRACE_DIR.parent)
        for label in ("fresh", "re-run, nothing changed"):
            started = time.monotonic()
            runs[label] = []
            for step in recording.commands():
                runs[label].append(run_traced(step, key, args.top))
                print(f"  {label:24s} {step.name:24s} {runs[label][-1].seconds:6.1f} s", flush=True)
            walls[label] = time.monotonic() - started
        key.unlink()
    table = render(runs, args.size, walls, command_line("tests.bench.provision", argv))
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
