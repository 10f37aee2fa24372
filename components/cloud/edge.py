"""Cloudflare, in a zone shared with the user's other sites: the stack's DNS records, rules scoped to its
own names, and Authenticated Origin Pulls with its own certificate. Nothing zone-wide but Bot Fight Mode.

- DNS: A/AAAA for the server name (unless the user's website owns it), matrix. and chat., proxied;
  A for turn., DNS only (Cloudflare does not proxy TURN), at the droplet that runs coturn. Each carries
  the stack's ownership comment.
- Rules (edge_rules.py), each a ZoneRule of its own: strict SSL, HTTPS only, TLS 1.2+, Matrix paths
  never challenged, and .well-known delegation beside a website. Checked (rule_checks.py) and counted
  against the zone's plan (quotas.py) before any resource: `plan_edge`.
- Bot Fight Mode off (bot_fight_mode.py): the Free plan's Bot Fight Mode challenges other homeservers
  and cannot be skipped by a rule; it is a zone setting, kept off when a stack is destroyed.
- Authenticated Origin Pulls: the client certificate (origin_pulls.py) uploaded as a per-hostname
  certificate, one association per proxied name (terraform-provider-cloudflare >= 5.17 refuses more
  than one per resource: internal/services/authenticated_origin_pulls/resource.go), and nginx waits
  until Cloudflare reports them active (origin_pulls_ready.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

from components.cloud import quotas
from components.cloud.bot_fight_mode import BotFightModeOff
from components.cloud.edge_rules import RuleSpec, edge_rules
from components.cloud.origin_pulls import OriginPullCertificates
from components.cloud.origin_pulls_ready import OriginPullsReady
from components.cloud.rule_checks import rule_problems
from components.cloud.zone import Zone, ownership_comment
from components.cloud.zone_rules import ZoneRule
from components.settings import Settings, SettingsError


@dataclass(frozen=True)
class EdgePlan:
    """What the stack will have in the zone, decided and checked before any resource exists."""

    zone: Zone
    proxied: dict[str, str]  # the stack's proxied names -> their resource label
    rules: list[RuleSpec]


def plan_edge(settings: Settings, zone: Zone) -> EdgePlan:
    """The stack's names and rules in `zone`; a rule Cloudflare would refuse, or one the zone's plan has no
    room for, stops the program here with one line."""
    proxied = {settings.matrix_host: "matrix", settings.chat_host: "chat"}
    if not zone.has_website:
        proxied = {settings.domain: "apex", **proxied}
    delegate = zone.has_website and not settings.well_known_on_website
    rules = edge_rules(settings, list(proxied), delegate, zone.plan)
    problems = [f"{rule.key}: {problem}" for rule in rules
                for problem in rule_problems(rule.phase, rule.action, rule.expression, rule.action_parameters)]
    if problems:
        raise SettingsError(f"matrix-stack would write a Cloudflare rule the API refuses ({problems[0]}); please "
                            "report this with your settings")
    quotas.check(zone, rules)
    if zone.bot_fight_mode:
        pulumi.log.warn(f"Cloudflare zone {zone.name}: this stack turns Bot Fight Mode off for the whole zone, your "
                        "other sites in it too (it challenges other Matrix servers and no rule can skip it); it stays "
                        "off after `pulumi destroy`")
    return EdgePlan(zone, proxied, rules)


class Edge(pulumi.ComponentResource):
    """The stack's part of the zone."""

    origin_pull_ca_pem: pulumi.Output[str]
    origin_pull_client_pem: pulumi.Output[str]  # secret: certificate and key, for the origin's self-check
    origin_pulls: OriginPullsReady  # done once Cloudflare presents the certificate for every proxied name

    def __init__(
        self,
        name: str,
        settings: Settings,
        plan: EdgePlan,
        ipv4: pulumi.Input[str],
        ipv6: pulumi.Input[str],
        turn_ipv4: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("matrix-stack:cloud:Edge", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        zone = plan.zone
        comment = ownership_comment(settings)
        for fqdn, label in plan.proxied.items():
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
        for spec in plan.rules:
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
        # Kept when the stack goes: another stack of the zone may need it off too.
        BotFightModeOff(f"{name}-bot-fight-mode-off", zone_id=zone.id,
                        opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))

        certificates = OriginPullCertificates(f"{name}-origin-pull", settings, self)
        uploaded = cloudflare.AuthenticatedOriginPullsHostnameCertificate(
            f"{name}-origin-pull-certificate",
            zone_id=zone.id,
            certificate=certificates.client_cert_pem,
            private_key=certificates.client_key_pem,
            opts=child,
        )
        # One association per name. The provider changes an association's hostname in place and never voids
        # the old one (its Update PUTs the new name only), so a new name replaces the resource, the old
        # association voided (its delete) before the new one is made. A new certificate is an in-place edit.
        associations = [
            cloudflare.AuthenticatedOriginPulls(
                f"{name}-origin-pull-{label}",
                zone_id=zone.id,
                configs=[cloudflare.AuthenticatedOriginPullsConfigArgs(hostname=fqdn, cert_id=uploaded.id, enabled=True)],
                opts=pulumi.ResourceOptions(parent=self, replace_on_changes=["configs[*].hostname"],
                                            delete_before_replace=True),
            )
            for fqdn, label in plan.proxied.items()
        ]
        self.origin_pulls = OriginPullsReady(
            f"{name}-origin-pulls-active", zone_id=zone.id, certificate_id=uploaded.id, hostnames=list(plan.proxied),
            opts=pulumi.ResourceOptions(parent=self, depends_on=associations),
        )
        self.origin_pull_ca_pem = certificates.ca_cert_pem
        self.origin_pull_client_pem = pulumi.Output.secret(
            pulumi.Output.all(certificates.client_cert_pem, certificates.client_key_pem).apply(
                lambda pems: pems[0].rstrip("\n") + "\n" + pems[1].rstrip("\n") + "\n"
            )
        )
        self.register_outputs({"zoneId": zone.id})
