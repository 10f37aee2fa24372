"""How much memory the main droplet needs with MatrixRTC: the stack's own measured use plus upstream's figures
for the SFU and the token service, and a reserve for the kernel and the page cache.

The stack's figure is the benchmark's (docs/benchmarks.md, s-1vcpu-1gb): every process of the guest right after
the load, proportional set size. LiveKit and lk-jwt-service publish no memory figures of their own; the nearest
upstream ones are the requests ESS's chart (element-hq/ess-helm, matrix-rtc) gives their pods: what a pod is
expected to use when idle or lightly used. A busy group call grows the SFU (ESS lets it reach 4 GiB): the
droplet's memory alert (alertMemoryPercent) is what tells you to resize.
"""

from __future__ import annotations

from components import worker_topology

STACK_LOADED_MB = 328  # docs/benchmarks.md: whole guest, all processes, PSS right after the load
SYNAPSE_PROCESS_LOADED_MB = 157  # the same table: one Synapse process right after the load
SFU_MB = 150  # ESS matrix-rtc SFU memory request (150Mi)
TOKEN_SERVICE_MB = 50  # ESS lk-jwt-service memory request (50Mi)
RESERVE_MB = 256  # the kernel, sshd, journald, and a page cache for PostgreSQL to read from


def needed_mb(synapse_workers: bool) -> int:
    """The smallest droplet memory, in MB, that holds the stack under load, the SFU and the token service."""
    extra_processes = worker_topology.PROCESSES - 1 if synapse_workers else 0
    return STACK_LOADED_MB + extra_processes * SYNAPSE_PROCESS_LOADED_MB + SFU_MB + TOKEN_SERVICE_MB + RESERVE_MB
