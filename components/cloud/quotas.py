"""Cloudflare's per-zone quotas, checked before any resource against what the zone's other users hold.

A write over a quota fails in the middle of `up`, after the droplet exists. The limits are Cloudflare's
plans table (rules per phase and plan) and the API reference for per-hostname Authenticated Origin
Pulls (10 certificates per zone). A stack needs one certificate, and two for a moment while it rotates
(the new one is uploaded before the old one is deleted), so it needs room for two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from components.cloud.edge_rules import RuleSpec
from components.cloud.zone import Zone
from components.settings import SettingsError

# phase -> (what Cloudflare calls those rules, where the dashboard lists them, {plan: rules per zone})
RULE_QUOTAS: dict[str, tuple[str, str, dict[str, int]]] = {
    "http_request_firewall_custom": ("WAF custom rules", "Security > WAF > Custom rules",
                                     {"free": 5, "pro": 20, "business": 100, "enterprise": 1000}),
    "http_request_dynamic_redirect": ("single redirect rules", "Rules > Redirect Rules",
                                      {"free": 10, "pro": 25, "business": 50, "enterprise": 300}),
    "http_config_settings": ("configuration rules", "Rules > Configuration Rules",
                             {"free": 10, "pro": 25, "business": 50, "enterprise": 300}),
    "http_request_late_transform": ("request header transform rules", "Rules > Transform Rules",
                                    {"free": 10, "pro": 25, "business": 50, "enterprise": 300}),
}
ORIGIN_PULL_CERTIFICATES_PER_ZONE = 10
CERTIFICATES_PER_STACK = 2  # one, and its successor for a moment while it rotates


def limit(phase: str, plan: str) -> int:
    """Rules per zone in `phase` on `plan` (an unknown plan counts as Free, the smallest)."""
    per_plan = RULE_QUOTAS[phase][2]
    return per_plan.get(plan, per_plan["free"])


def check(zone: Zone, rules: Iterable[RuleSpec]) -> None:
    """Refuse, with one line naming the limit and the fix, a stack the zone has no room for."""
    for phase, needed in sorted(Counter(rule.phase for rule in rules).items()):
        label, where, _ = RULE_QUOTAS[phase]
        allowed, others = limit(phase, zone.plan), zone.foreign_rules.get(phase, 0)
        if others + needed > allowed:
            raise SettingsError(
                f"Cloudflare zone {zone.name} ({zone.plan} plan) allows {allowed} {label} and {others} are not this "
                f"stack's; this stack needs {needed} (fix: delete {others + needed - allowed} of them in Cloudflare's "
                f"dashboard, {where}, or move the zone to a plan with more)")
    others = zone.foreign_certificates
    if others + CERTIFICATES_PER_STACK > ORIGIN_PULL_CERTIFICATES_PER_ZONE:
        raise SettingsError(
            f"Cloudflare zone {zone.name} allows {ORIGIN_PULL_CERTIFICATES_PER_ZONE} per-hostname origin-pull "
            f"certificates and {others} are not this stack's; this stack needs room for {CERTIFICATES_PER_STACK} "
            "(one, and its successor while it rotates) (fix: delete unused ones in Cloudflare's dashboard, SSL/TLS > "
            "Origin Server > Authenticated Origin Pulls, or put this stack in another zone)")
