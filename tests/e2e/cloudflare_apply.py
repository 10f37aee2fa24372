"""Apply the program's recorded Cloudflare resources to a zone's API stand-in, as `pulumi up` would.

The Cloudflare provider cannot run here, so this writes what each resource would make the provider
do: DNS records (replacing the stack's earlier ones, identified by their ownership comment), Bot
Fight Mode, the per-hostname origin-pull certificate and its hostname associations. The stack's
rules are the program's own code: ZoneRule's provider runs for real against the stand-in's Rulesets
API (create, or take over by ref; a rule the program no longer declares is deleted, as the engine
would). The edge stand-in then serves from that state.
"""

from __future__ import annotations

from typing import Any

from components.cloud.zone_rules import ZoneRuleProvider
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import Recording

RULE_FIELDS = ("zone_id", "phase", "ref", "description", "expression", "action", "action_parameters")


def _comment(recording: Recording) -> str:
    comments = {r.inputs["comment"] for r in recording.of_type("cloudflare:index/dnsRecord:DnsRecord")}
    assert len(comments) == 1, f"one ownership comment expected, found {comments}"
    return str(comments.pop())


def apply(recording: Recording, zone: CloudflareStandin) -> None:
    comment = _comment(recording)
    prefix = comment.split(":", 1)[1]
    with zone._lock:
        for record_id in [i for i, r in zone.records.items() if r.get("comment") == comment]:
            del zone.records[record_id]
    for record in recording.of_type("cloudflare:index/dnsRecord:DnsRecord"):
        inputs = record.inputs
        assert inputs["zoneId"] == zone.zone_id, f"{record.name} is for zone {inputs['zoneId']}, not {zone.domain}"
        zone.handle("POST", f"/client/v4/zones/{zone.zone_id}/dns_records", {}, {
            k: inputs[k] for k in ("name", "type", "content", "ttl", "proxied", "comment")})

    provider = ZoneRuleProvider(api_base=zone.url, token="e2e-cloudflare-api-token")
    declared: dict[str, dict[str, Any]] = {}
    for rule in recording.of_type("pulumi-python:dynamic:Resource"):
        declared[rule.inputs["ref"]] = {k: rule.inputs[k] for k in RULE_FIELDS}
    for phase in {*zone.rulesets, *(r["phase"] for r in declared.values())}:
        for existing in zone.rules_of(phase):
            if existing["ref"].startswith(f"{prefix}-") and existing["ref"] not in declared:
                outs = {"zone_id": zone.zone_id, "ruleset_id": zone.rulesets[phase]["id"], "rule_id": existing["id"]}
                provider.delete(f"{outs['ruleset_id']}/{existing['id']}", outs)
    for props in declared.values():
        provider.create(props)

    for bots in recording.of_type("cloudflare:index/botManagement:BotManagement"):
        zone.bot_fight_mode = bool(bots.inputs.get("fightMode", True))
    certificates = recording.of_type(
        "cloudflare:index/authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate")
    for certificate in certificates:
        zone.origin_pull_certificates[certificate.id] = {"certificate": certificate.inputs["certificate"],
                                                         "private_key": certificate.inputs["privateKey"]}
    for pulls in recording.of_type("cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls"):
        for config in pulls.inputs["configs"]:
            zone.origin_pull_hostnames[config["hostname"]] = {"cert_id": config["certId"], "enabled": config["enabled"]}
