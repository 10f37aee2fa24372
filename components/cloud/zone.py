"""The user's Cloudflare zone, shared with their other sites: found, and read before anything is added.

The zone is `cloudflareZone`, or the first of `domain` and its parent names that is a zone of the
account (a stack can live at chat.example.com in the zone example.com). Before any resource, with the
Cloudflare provider's functions (synchronous invokes), the program reads what it must not trip over:
- the names the stack will own: a name it needs (matrix., chat., turn.) that already has records of
  someone else's is refused; the server name itself (the "apex" of the Matrix server) may carry the
  user's website, which the stack then leaves alone (Edge serves delegation another way); a website
  there that Cloudflare does not proxy cannot get that delegation and is refused with what to do;
- the zone's plan and what of its quotas others use (quotas.py): its rules per phase not of this stack,
  its per-hostname origin-pull certificates not of this stack;
- whether Bot Fight Mode is on (the stack turns it off for the whole zone, and says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_cloudflare as cloudflare

from components.cloud.edge_rules import STACK_PHASES
from components.settings import PROJECT, Settings, SettingsError, invalid

ADDRESS_TYPES = ("A", "AAAA", "CNAME")  # what makes a name point somewhere (MX, TXT do not)


def ownership_comment(settings: Settings) -> str:
    """The comment on every DNS record the stack makes: how later runs (and people) tell them apart."""
    return f"matrix-stack:{settings.resource_prefix}"


def is_own_rule(settings: Settings, ref: str) -> bool:
    """A rule of this stack: its ref is the stack's prefix and a rule key (edge.py)."""
    return ref.startswith(f"{settings.resource_prefix}-")


def is_own_certificate(settings: Settings, issuer: str) -> bool:
    """An origin-pull certificate of this stack: issued by its CA, whose subject names the stack (origin_pulls.py)."""
    return f"OU={settings.resource_prefix}" in [part.strip() for part in issuer.split(",")]


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    website_on_server_name: Sequence[str]  # someone else's records on `domain` ("A 192.0.2.1"), if any
    plan: str = "free"  # the zone's plan (legacy id: free, pro, business, enterprise)
    foreign_rules: Mapping[str, int] = field(default_factory=dict)  # phase -> rules not of this stack
    foreign_certificates: int = 0  # per-hostname origin-pull certificates not of this stack
    bot_fight_mode: bool = False  # on now (the stack turns it off zone-wide)

    @property
    def has_website(self) -> bool:
        return bool(self.website_on_server_name)


def _records(settings: Settings, zone_id: str, name: str) -> list[Any]:
    found = cloudflare.get_dns_records(zone_id=zone_id, name={"exact": name})
    return [r for r in (found.results or [])
            if r.type in ADDRESS_TYPES and (r.comment or "") != ownership_comment(settings)]


def _foreign(settings: Settings, zone_id: str, name: str) -> list[str]:
    return [f"{r.type} {r.content}" for r in _records(settings, zone_id, name)]


def _check_website_is_proxied(settings: Settings, zone_id: str) -> list[str]:
    """The website on the server name, refused when Cloudflare does not proxy it and it was not said to serve
    the well-known files itself (the delegation redirect only runs on traffic Cloudflare proxies)."""
    records = _records(settings, zone_id, settings.domain)
    direct = [f"{r.type} {r.content}" for r in records if not r.proxied]
    if direct and not settings.well_known_on_website:
        raise SettingsError(
            f"config {PROJECT}:domain={settings.domain!r}: the website on {settings.domain} ({', '.join(direct)}) is "
            "not proxied by Cloudflare, so Cloudflare cannot send /.well-known/matrix/* to the homeserver (fix: proxy "
            "that record in Cloudflare's dashboard, or serve /.well-known/matrix/server and /.well-known/matrix/client "
            "from that website as docs/cloudflare.md shows and pulumi config set wellKnownOnWebsite true)")
    return [f"{r.type} {r.content}" for r in records]


def _foreign_rules(settings: Settings, zone_id: str) -> dict[str, int]:
    """Rules of the stack's phases in the zone's entry points that are not this stack's."""
    counts = {phase: 0 for phase in STACK_PHASES}
    for ruleset in cloudflare.get_rulesets(zone_id=zone_id).rulesets or []:
        if ruleset.kind != "zone" or ruleset.phase not in counts:
            continue
        rules = cloudflare.get_ruleset(zone_id=zone_id, id=ruleset.id).rules or []
        counts[ruleset.phase] = sum(1 for rule in rules if not is_own_rule(settings, rule.ref or ""))
    return counts


def _plan(zone: Any) -> str:
    """The zone's plan (legacy id). The zones API still answers it; the SDK marks the field deprecated in favour of
    the subscription API, whose answer for a Free zone is undocumented, so it is read without the getter's
    deprecation notice (which `pulumi up` would print on every run)."""
    plan = pulumi.get(zone, "plan")
    return str((pulumi.get(plan, "legacy_id") if plan is not None else "") or "free")


def look_up(settings: Settings) -> Zone:
    """The zone and what already lives in it (synchronous invokes, before any resource)."""
    zone = None
    for candidate in settings.zone_candidates:
        results = cloudflare.get_zones(name=candidate).results or []
        zone = next((z for z in results if z.name == candidate), None)
        if zone is not None:
            break
    if zone is None:
        tried = ", ".join(settings.zone_candidates)
        key, value = ("cloudflareZone", settings.cloudflare_zone) if settings.cloudflare_zone else ("domain", settings.domain)
        raise invalid(key, value, f"a name in a Cloudflare zone of this account (no zone named {tried}; "
                      "add the zone to Cloudflare, or check the API token's Zone:Read permission)")
    for name, key in ((settings.matrix_host, "matrixSubdomain"), (settings.chat_host, "chatSubdomain"),
                      (settings.turn_host, "turnSubdomain")):
        taken = _foreign(settings, zone.id, name)
        if taken:
            raise invalid(key, name.split(".", 1)[0], f"a name with no records of someone else's ({name} has "
                          f"{', '.join(taken)}): pick another subdomain, or delete those records")
    certificates = cloudflare.get_authenticated_origin_pulls_hostname_certificates(zone_id=zone.id).results or []
    return Zone(
        id=zone.id,
        name=zone.name,
        website_on_server_name=tuple(_check_website_is_proxied(settings, zone.id)),
        plan=_plan(zone),
        foreign_rules=_foreign_rules(settings, zone.id),
        foreign_certificates=sum(1 for c in certificates if not is_own_certificate(settings, c.issuer or "")),
        bot_fight_mode=bool(cloudflare.get_bot_management(zone_id=zone.id).fight_mode),
    )
