"""Optional CPU and memory limits for the guest, through cgroup v1 directories made by hand.

nspawn's --property= needs systemd on the host, which is absent here. Instead the nspawn process
joins our own cpu and memory cgroups before it execs (children inherit them), so the whole guest is
limited. Memory groups are made below our current memory cgroup, so any outer limit still applies.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


def _current(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path.lstrip("/")
    raise RuntimeError(f"no cgroup v1 {controller} hierarchy")


def cgroup_dirs(name: str) -> list[Path]:
    """Where the cpu and memory groups of machine `name` live."""
    return [CGROUP_ROOT / c / _current(c) / name for c in ("cpu", "memory")]


class Limits:
    """cpu_quota in CPUs (0.5 = half a core), memory_max in bytes; None means unlimited."""

    def __init__(self, name: str, cpu_quota: float | None, memory_max: int | None) -> None:
        self.name = name
        self.cpu_quota = cpu_quota
        self.memory_max = memory_max
        self.procs_files: list[Path] = []

    def create(self) -> None:
        """Make the groups and set the limits; raise if the kernel refuses (e.g. no cgroup v1)."""
        cpu, memory = cgroup_dirs(self.name)
        if self.cpu_quota is not None:
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(int(self.cpu_quota * CFS_PERIOD_US)))
            self.procs_files.append(cpu / "cgroup.procs")
        if self.memory_max is not None:
            memory.mkdir(exist_ok=True)
            (memory / "memory.limit_in_bytes").write_text(str(self.memory_max))
            self.procs_files.append(memory / "cgroup.procs")

    def join(self) -> None:
        """Move the calling process into the groups; used as Popen's preexec_fn."""
        for procs in self.procs_files:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))


def remove(name: str) -> None:
    """Remove the groups of machine `name` once their processes are gone (empty rmdir only).

    Searched a few levels deep: a crashed run may have sat in another memory cgroup than ours.
    """
    groups = {g for c in ("cpu", "memory") for depth in range(4)
              for g in (CGROUP_ROOT / c).glob("/".join(["*"] * depth + [name]))}
    for group in sorted(groups, key=lambda g: -len(g.parts)):
        try:
            group.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # still busy: a later cleanup() removes it
