"""The user's Cloudflare zone, shared with their other sites: found, and read before anything is added.

The zone is `cloudflareZone`, or the first of `domain` and its parent names that is a zone of the
account (a stack can live at chat.example.com in the zone example.com). Before any resource, the
names the stack will own are read: a name it needs (matrix., chat., turn.) that already has records
of someone else's is refused; the server name itself (the "apex" of the Matrix server) may carry the
user's website, and then the stack leaves it alone (Edge serves delegation another way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_cloudflare as cloudflare

from components.settings import Settings, invalid

ADDRESS_TYPES = ("A", "AAAA", "CNAME")  # what makes a name point somewhere (MX, TXT do not)


def ownership_comment(settings: Settings) -> str:
    """The comment on every DNS record the stack makes: how later runs (and people) tell them apart."""
    return f"matrix-stack:{settings.resource_prefix}"


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    website_on_server_name: Sequence[str]  # someone else's records on `domain` ("A 192.0.2.1"), if any

    @property
    def has_website(self) -> bool:
        return bool(self.website_on_server_name)


def _foreign(settings: Settings, zone_id: str, name: str) -> list[str]:
    found = cloudflare.get_dns_records(zone_id=zone_id, name={"exact": name})
    return [f"{r.type} {r.content}" for r in (found.results or [])
            if r.type in ADDRESS_TYPES and (r.comment or "") != ownership_comment(settings)]


def look_up(settings: Settings) -> Zone:
    """The zone and what already lives on the stack's names (synchronous invokes, before any resource)."""
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
    return Zone(zone.id, zone.name, tuple(_foreign(settings, zone.id, settings.domain)))
