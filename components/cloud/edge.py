"""Cloudflare, in a zone shared with the user's other sites: the stack's DNS records, rules scoped to its
own names, and Authenticated Origin Pulls with its own certificate. Nothing zone-wide but Bot Fight Mode.

- DNS: A/AAAA for the server name (unless the user's website owns it), matrix. and chat., proxied;
  A for turn., DNS only (Cloudflare does not proxy TURN), at the droplet that runs coturn. Each carries
  the stack's ownership comment.
- Rules (edge_rules.py), each a ZoneRule of its own: strict SSL, HTTPS only, TLS 1.2+, Matrix paths
  never challenged, and .well-known delegation beside a website.
- Bot Fight Mode off: the Free plan's Bot Fight Mode challenges other homeservers and cannot be skipped
  by a rule (Cloudflare docs, "Configure a rule with the Skip action"). It is a zone setting; it is
  kept off when a stack is destroyed (retain_on_delete), so destroying one stack never turns it back
  on under another stack in the same zone.
- Authenticated Origin Pulls: the client certificate (origin_pulls.py) uploaded as a per-hostname
  certificate and enabled for the proxied names only.
"""

from __future__ import annotations

import pulumi
import pulumi_cloudflare as cloudflare

from components.cloud.edge_rules import edge_rules
from components.cloud.origin_pulls import OriginPullCertificates
from components.cloud.zone import Zone, ownership_comment
from components.cloud.zone_rules import ZoneRule
from components.settings import Settings


class Edge(pulumi.ComponentResource):
    """The stack's part of the zone."""

    origin_pull_ca_pem: pulumi.Output[str]
    origin_pull_client_pem: pulumi.Output[str]  # secret: certificate and key, for the origin's self-check
    origin_pulls: cloudflare.AuthenticatedOriginPulls

    def __init__(
        self,
        name: str,
        settings: Settings,
        zone: Zone,
        ipv4: pulumi.Input[str],
        ipv6: pulumi.Input[str],
        turn_ipv4: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("matrix-stack:cloud:Edge", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        comment = ownership_comment(settings)
        proxied = {settings.matrix_host: "matrix", settings.chat_host: "chat"}
        if not zone.has_website:
            proxied = {settings.domain: "apex", **proxied}
        for fqdn, label in proxied.items():
            for record_type, address in (("A", ipv4), ("AAAA", ipv6)):
                cloudflare.DnsRecord(
                    f"{name}-{label}-{record_type.lower()}",
                    zone_id=zone.id,
                    name=fqdn,
                    type=record_type,
                    content=address,
                    ttl=1,
                    proxied=True,
                    comment=comment,
                    opts=child,
                )
        # TURN cannot go through Cloudflare's proxy. IPv4 only: Chromium's WebRTC stack has been
        # seen to misbehave with a TURN host that also has an AAAA record.
        cloudflare.DnsRecord(
            f"{name}-turn-a",
            zone_id=zone.id,
            name=settings.turn_host,
            type="A",
            content=turn_ipv4,
            ttl=300,
            proxied=False,
            comment=comment,
            opts=child,
        )
        for spec in edge_rules(settings, list(proxied), zone.has_website):
            ZoneRule(
                f"{name}-{spec.key}",
                zone_id=zone.id,
                phase=spec.phase,
                ref=f"{settings.resource_prefix}-{spec.key}",
                description=spec.description,
                expression=spec.expression,
                action=spec.action,
                action_parameters=spec.action_parameters,
                opts=child,
            )
        cloudflare.BotManagement(
            f"{name}-bot-fight-mode-off",
            zone_id=zone.id,
            fight_mode=False,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )

        certificates = OriginPullCertificates(f"{name}-origin-pull", settings, self)
        uploaded = cloudflare.AuthenticatedOriginPullsHostnameCertificate(
            f"{name}-origin-pull-certificate",
            zone_id=zone.id,
            certificate=certificates.client_cert_pem,
            private_key=certificates.client_key_pem,
            opts=child,
        )
        self.origin_pulls = cloudflare.AuthenticatedOriginPulls(
            f"{name}-origin-pull-hostnames",
            zone_id=zone.id,
            configs=[
                cloudflare.AuthenticatedOriginPullsConfigArgs(hostname=fqdn, cert_id=uploaded.id, enabled=True)
                for fqdn in proxied
            ],
            opts=child,
        )
        self.origin_pull_ca_pem = certificates.ca_cert_pem
        self.origin_pull_client_pem = pulumi.Output.secret(
            pulumi.Output.all(certificates.client_cert_pem, certificates.client_key_pem).apply(
                lambda pems: pems[0].rstrip("\n") + "\n" + pems[1].rstrip("\n") + "\n"
            )
        )
        self.register_outputs({"zoneId": zone.id})
