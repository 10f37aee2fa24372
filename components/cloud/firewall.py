"""The DigitalOcean cloud firewalls: web only via Cloudflare, SSH only from the operators, TURN open to
everyone on the droplet that runs coturn (the main one, or the TURN droplet with `turnDroplet`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_digitalocean as do

from components import paths
from components.settings import Settings

ANYWHERE = ["0.0.0.0/0", "::/0"]
TURN_PORTS = ("3478", "5349")
RTC_MEDIA_PORTS = (("tcp", str(paths.RTC_TCP_PORT)), ("udp", str(paths.RTC_UDP_PORT)))


@dataclass(frozen=True)
class InboundRule:
    """One inbound rule; the host firewall (ufw) is rendered from the same list."""

    protocol: str
    ports: str
    sources: pulumi.Input[Sequence[str]]


Role = Literal["main", "turn"]


def inbound_rules(settings: Settings, cloudflare_cidrs: pulumi.Input[Sequence[str]],
                  role: Role = "main") -> list[InboundRule]:
    """Exactly what may reach a droplet of this role; nothing else is allowed in.

    The main droplet serves the web through Cloudflare, and TURN unless the TURN droplet does; the TURN
    droplet serves TURN alone, and port 80 from anywhere for the CA's HTTP-01 check of turn. (certbot
    answers there only while it orders or renews; that droplet holds no DNS token: certificates.py).
    """
    rules = [InboundRule("tcp", "22", list(settings.ssh_allowed_cidrs))]
    if role == "main":
        rules += [InboundRule("tcp", port, cloudflare_cidrs) for port in ("80", "443")]
    else:
        rules.append(InboundRule("tcp", "80", ANYWHERE))
    if role == "turn" or not settings.turn_droplet:
        rules += [InboundRule(proto, port, ANYWHERE) for port in TURN_PORTS for proto in ("tcp", "udp")]
        rules.append(InboundRule("udp", settings.relay_port_range, ANYWHERE))
    if role == "main" and settings.matrix_rtc:
        # The SFU's media: clients reach the droplet's own address (Cloudflare proxies no UDP or raw TCP).
        rules += [InboundRule(proto, port, ANYWHERE) for proto, port in RTC_MEDIA_PORTS]
    return rules


class Firewall(pulumi.ComponentResource):
    """Attaches the inbound rules above, and allows all outbound traffic, to the droplet."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        droplet_id: pulumi.Input[int],
        rules: Sequence[InboundRule],
        opts: pulumi.ResourceOptions | None = None,
        suffix: str = "fw",
    ) -> None:
        super().__init__("matrix-stack:cloud:Firewall", name, {}, opts)
        self.firewall = do.Firewall(
            f"{name}-firewall",
            name=f"{settings.resource_prefix}-{suffix}",
            droplet_ids=[droplet_id],
            inbound_rules=[
                do.FirewallInboundRuleArgs(protocol=r.protocol, port_range=r.ports, source_addresses=r.sources)
                for r in rules
            ],
            # DigitalOcean blocks all outbound traffic of a firewall that lists no outbound rules.
            outbound_rules=[
                do.FirewallOutboundRuleArgs(protocol="tcp", port_range="1-65535", destination_addresses=ANYWHERE),
                do.FirewallOutboundRuleArgs(protocol="udp", port_range="1-65535", destination_addresses=ANYWHERE),
                do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=ANYWHERE),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
