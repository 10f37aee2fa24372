"""Network namespaces and veth pairs for one test host, addressed inside 198.18.0.0/15.

Scheme for host index N (0..255):
  guest netns  ms-e2e-N      veth ms-e2e-N-h (root ns, 198.18.N.1/30) <-> eth0 (guest, 198.18.N.2/30)
  outsider     ms-e2e-N-out  veth "out" (198.19.N.2/30) <-> eth1 in the guest netns (198.19.N.1/30)
The guest has no default route: it reaches only the host side (proxy, ACME, Cloudflare stand-in).
The outsider is wired straight into the guest's namespace, so no forwarding is switched on in the
host; it has a route to 198.18.N.0/30 via the guest's eth1, so it reaches the guest's main
address 198.18.N.2 from a source that is neither the host nor Cloudflare, and the guest answers
over its connected 198.19.N.0/30 link (no extra route in the guest).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ._proc import run

NETNS_DIR = Path("/run/netns")
PREFIX = "ms-e2e-"


@dataclass(frozen=True)
class Addresses:
    """Names and addresses of one test host's network."""

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 255:
            raise ValueError(f"test host index must be 0..255, got {self.index}")

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def host_if(self) -> str:
        return f"{PREFIX}{self.index}-h"

    @property
    def outsider_netns(self) -> str:
        return f"{PREFIX}{self.index}-out"

    @property
    def host_side(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def guest(self) -> str:
        return f"198.18.{self.index}.2"

    @property
    def guest_outsider_side(self) -> str:
        return f"198.19.{self.index}.1"

    @property
    def outsider(self) -> str:
        return f"198.19.{self.index}.2"

    @property
    def guest_subnet(self) -> str:
        return str(ipaddress.ip_network(f"{self.guest}/30", strict=False))


def _ip(*args: str) -> None:
    run(["ip", *args], timeout=30)


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(addr: Addresses) -> None:
    """Create the guest namespace and its veth to the host; idempotent start after `destroy`."""
    destroy(addr)
    _ip("netns", "add", addr.netns)
    _ip("link", "add", addr.host_if, "type", "veth", "peer", "name", f"{addr.host_if}c")
    _ip("link", "set", f"{addr.host_if}c", "netns", addr.netns)
    _ip("-n", addr.netns, "link", "set", f"{addr.host_if}c", "name", "eth0")
    _ip("addr", "add", f"{addr.host_side}/30", "dev", addr.host_if)
    _ip("link", "set", addr.host_if, "up")
    _ip("-n", addr.netns, "link", "set", "lo", "up")
    _ip("-n", addr.netns, "addr", "add", f"{addr.guest}/30", "dev", "eth0")
    _ip("-n", addr.netns, "link", "set", "eth0", "up")


def create_outsider(addr: Addresses) -> None:
    """A second namespace linked only to the guest: traffic from a non-Cloudflare, non-host source."""
    _ip("netns", "add", addr.outsider_netns)
    _ip("-n", addr.outsider_netns, "link", "add", "out", "type", "veth", "peer", "name", "eth1",
        "netns", addr.netns)
    _ip("-n", addr.outsider_netns, "link", "set", "lo", "up")
    _ip("-n", addr.outsider_netns, "addr", "add", f"{addr.outsider}/30", "dev", "out")
    _ip("-n", addr.outsider_netns, "link", "set", "out", "up")
    _ip("-n", addr.netns, "addr", "add", f"{addr.guest_outsider_side}/30", "dev", "eth1")
    _ip("-n", addr.netns, "link", "set", "eth1", "up")
    _ip("-n", addr.outsider_netns, "route", "add", addr.guest_subnet, "via", addr.guest_outsider_side)


def share_operator(addr: Addresses, other: Addresses) -> None:
    """Another droplet of the same operator: the host reaches this guest from `other`'s host-side address
    (the one address sshAllowedCidrs names), and the guest reaches that address (ACME, Cloudflare API)."""
    _ip("route", "replace", addr.guest_subnet, "dev", addr.host_if, "src", other.host_side)
    _ip("-n", addr.netns, "route", "add", f"{other.host_side}/32", "via", addr.host_side)


def destroy(addr: Addresses) -> None:
    """Remove both namespaces and the host-side veth if present (deleting one end removes the pair)."""
    for ns in (addr.outsider_netns, addr.netns):
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], timeout=30, check=False)
    if Path(f"/sys/class/net/{addr.host_if}").exists():
        run(["ip", "link", "del", addr.host_if], timeout=30, check=False)


def leftovers() -> list[int]:
    """Indexes of namespaces or veths of ours that exist now (e.g. after a crashed run)."""
    found: set[int] = set()
    names = [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []
    names += [p.name for p in Path("/sys/class/net").iterdir()]
    for name in names:
        if name.startswith(PREFIX):
            head = name[len(PREFIX):].split("-")[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)
