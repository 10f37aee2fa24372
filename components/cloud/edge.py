"""Cloudflare: the zone's DNS records and the TLS settings the origin relies on."""

from __future__ import annotations

import pulumi
import pulumi_cloudflare as cloudflare

from components.settings import Settings

# Settings the origin depends on: strict TLS to the origin (certbot certificate), HTTPS only.
ZONE_SETTINGS = {"ssl": "strict", "always_use_https": "on", "min_tls_version": "1.2"}


class Edge(pulumi.ComponentResource):
    """A/AAAA records (proxied for web names, DNS-only for TURN) and zone settings."""

    zone_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: Settings,
        ipv4: pulumi.Input[str],
        ipv6: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("matrix-stack:cloud:Edge", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        zone = cloudflare.get_zone_output(
            filter={"name": settings.domain, "match": "all"}, opts=pulumi.InvokeOptions(parent=self)
        )
        self.zone_id = zone.id

        proxied = {settings.domain: "apex", settings.matrix_host: "matrix", settings.chat_host: "chat"}
        for fqdn, label in proxied.items():
            for record_type, address in (("A", ipv4), ("AAAA", ipv6)):
                cloudflare.DnsRecord(
                    f"{name}-{label}-{record_type.lower()}",
                    zone_id=self.zone_id,
                    name=fqdn,
                    type=record_type,
                    content=address,
                    ttl=1,
                    proxied=True,
                    comment="matrix-stack",
                    opts=child,
                )
        # TURN cannot go through Cloudflare's proxy. IPv4 only: Chromium's WebRTC stack has been
        # seen to misbehave with a TURN host that also has an AAAA record.
        cloudflare.DnsRecord(
            f"{name}-turn-a",
            zone_id=self.zone_id,
            name=settings.turn_host,
            type="A",
            content=ipv4,
            ttl=300,
            proxied=False,
            comment="matrix-stack (TURN: DNS only)",
            opts=child,
        )
        for setting_id, value in ZONE_SETTINGS.items():
            cloudflare.ZoneSetting(
                f"{name}-{setting_id.replace('_', '-')}",
                zone_id=self.zone_id,
                setting_id=setting_id,
                value=value,
                opts=child,
            )
        self.register_outputs({"zoneId": self.zone_id})
