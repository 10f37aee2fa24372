"""synapseWorkers on a test host: which Synapse process nginx sent each request to, from its upstream log."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components import paths, worker_topology
from components.services import nginx

PORTS = {paths.SYNAPSE_LISTEN[1]: "main", **{w.port: w.name for w in worker_topology.http_workers()}}


@dataclass(frozen=True)
class Routed:
    method: str
    uri: str
    status: int
    process: str  # "main", a worker's name, or the raw upstream address when it is neither


def parse(text: str) -> list[Routed]:
    """Lines of nginx.UPSTREAM_LOG: time, method, URI, status, upstream address, request time."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        port = re.fullmatch(r"127\.0\.0\.1:(\d+)", fields[4])
        process = PORTS.get(int(port.group(1)), fields[4]) if port else fields[4]
        out.append(Routed(fields[1], fields[2], int(fields[3]), process))
    return out


UPSTREAM_LOG = nginx.UPSTREAM_LOG
