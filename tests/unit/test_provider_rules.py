"""What the real providers accept, enforced offline: every recording is checked against the pinned providers'
schemas (read from their SDKs: tests/provider_schema.py) and their own checks (tests/provider_rules.py).

Here: every option set passes, and each check refuses what it is meant to refuse, seen on crafted
registrations (the harness's own tests: a check that cannot fail protects nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from components.cloud.adoption import volume_description
from tests import provider_rules, provider_schema
from tests.harness import CloudMocks, Recording, Registration, record, refusals

KEPT = "matrix-old-example-org-data"
OPTION_SETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "turnDroplet": ({"turnDroplet": True}, {}),
    "database-managed": ({"database": "managed"}, {}),
    "mediaStorage-spaces": ({"mediaStorage": "spaces"}, {}),
    "synapseWorkers": ({"synapseWorkers": True, "dropletSize": "s-2vcpu-4gb"}, {}),
    "adoptVolume": ({"adoptVolume": KEPT}, {"volumes": {KEPT: {
        "id": "0c8a2d5e-kept", "size": 10, "filesystemType": "xfs", "dropletIds": [], "region": "nyc3",
        "description": volume_description("example.org")}}}),
    "parent-zone": ({"domain": "chat.example.org", "cloudflareZone": "example.org"}, {"zones": ("example.org",)}),
    "debian-12": ({"dropletImage": "debian-12-x64"}, {}),
    "everything": ({"turnDroplet": True, "database": "managed", "mediaStorage": "spaces", "synapseWorkers": True,
                    "dropletSize": "s-2vcpu-4gb", "domain": "chat.example.org", "cloudflareZone": "example.org"},
                   {"zones": ("example.org",)}),
}


@pytest.mark.parametrize("name", OPTION_SETS)
def test_every_option_set_is_what_the_real_providers_accept(name: str) -> None:
    """record() itself raises ProviderRefusal listing each refusal."""
    config, mocks = OPTION_SETS[name]
    recording = record(config, mocks=CloudMocks(**mocks))
    assert refusals(recording) == []


def test_every_cloud_type_the_program_uses_has_provider_rules() -> None:
    """The issue's list: droplet, volume and attachment, firewall, ssh key, project, database cluster, user and
    firewall, Spaces bucket and key, DNS record, origin pulls and their certificate."""
    config, mocks = OPTION_SETS["everything"]
    recording = record(config, mocks=CloudMocks(**mocks))
    used = {r.type for r in recording.registrations if r.custom and r.type.startswith(("cloudflare:", "digitalocean:"))}
    assert used <= {r.token for r in provider_rules.RULES}
    functions = {token for token, _ in recording.invokes} - {"cloudflare:index/getZones:getZones",
                                                             "cloudflare:index/getIpRanges:getIpRanges"}
    assert functions <= {a.token for a in provider_rules.ARGUMENT_RULES}


def registration(type_: str, inputs: dict[str, Any], **options: Any) -> Registration:
    return Registration(urn=f"urn:pulumi:test::matrix-stack::{type_}::x", id="x-id", type=type_, name="x", parent="",
                        custom=True, raw_inputs=inputs, dependencies=[], property_dependencies={}, protect=False,
                        ignore_changes=options.get("ignore_changes", []),
                        replace_on_changes=options.get("replace_on_changes", []), additional_secret_outputs=[],
                        delete_before_replace=options.get("delete_before_replace", False), retain_on_delete=False,
                        import_id="", custom_timeouts={}, raw_outputs={})


ZONE = "0123456789abcdef0123456789abcdef"
CF, DO = "cloudflare:index/", "digitalocean:index/"
GOOD_FIREWALL_RULE = {"protocol": "tcp", "portRange": "443", "sourceAddresses": ["0.0.0.0/0"]}
GOOD_MONITOR_ALERT = {"type": "v1/insights/droplet/cpu", "compare": "GreaterThan", "value": 90.0, "window": "30m",
                      "description": "cpu", "entities": ["1"], "alerts": {"emails": ["ops@example.org"]}}
GOOD_UPTIME_ALERT = {"checkId": "c", "name": "down", "type": "down_global", "period": "5m",
                     "notifications": [{"emails": ["ops@example.org"]}]}


@pytest.mark.parametrize(("rule", "type_", "inputs", "options"), [
    ("origin-pulls-one-hostname", f"{CF}authenticatedOriginPulls:AuthenticatedOriginPulls",
     {"zoneId": ZONE, "configs": [{"hostname": "a.example.org"}, {"hostname": "b.example.org"}]},
     {"replace_on_changes": ["configs[*].hostname"], "delete_before_replace": True}),
    ("origin-pulls-hostname-change-replaces", f"{CF}authenticatedOriginPulls:AuthenticatedOriginPulls",
     {"zoneId": ZONE, "configs": [{"hostname": "a.example.org"}]}, {}),
    ("cloudflare-zone-id", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": "zone-1", "name": "a.example.org", "type": "A", "content": "192.0.2.1", "ttl": 1}, {}),
    ("dns-proxied-ttl", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": ZONE, "name": "a.example.org", "type": "A", "content": "192.0.2.1", "ttl": 300, "proxied": True}, {}),
    ("dns-ttl-range", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": ZONE, "name": "a.example.org", "type": "A", "content": "192.0.2.1", "ttl": 30}, {}),
    ("dns-proxiable-types", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": ZONE, "name": "a.example.org", "type": "TXT", "content": "x", "ttl": 1, "proxied": True}, {}),
    ("dns-address-content", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": ZONE, "name": "a.example.org", "type": "AAAA", "content": "192.0.2.1", "ttl": 1}, {}),
    ("dns-comment-length", f"{CF}dnsRecord:DnsRecord",
     {"zoneId": ZONE, "name": "a.example.org", "type": "A", "content": "192.0.2.1", "ttl": 1, "comment": "c" * 101}, {}),
    ("bot-management-sends-defaults", f"{CF}botManagement:BotManagement", {"zoneId": ZONE, "fightMode": False}, {}),
    ("droplet-backup-policy", f"{DO}droplet:Droplet",
     {"image": "debian-13-x64", "size": "s-1vcpu-1gb", "name": "a", "backupPolicy": {"plan": "daily"}}, {}),
    ("droplet-ssh-keys", f"{DO}droplet:Droplet",
     {"image": "debian-13-x64", "size": "s-1vcpu-1gb", "name": "a", "sshKeys": ["ab:cd"]}, {}),
    ("droplet-name", f"{DO}droplet:Droplet", {"image": "debian-13-x64", "size": "s-1vcpu-1gb", "name": "a_b"}, {}),
    ("digitalocean-tags", f"{DO}droplet:Droplet",
     {"image": "debian-13-x64", "size": "s-1vcpu-1gb", "name": "a", "tags": ["a b"]}, {}),
    ("volume-name", f"{DO}volume:Volume", {"name": "1data", "region": "nyc3", "size": 10}, {}),
    ("volume-size", f"{DO}volume:Volume", {"name": "data", "region": "nyc3", "size": 20000}, {}),
    ("volume-filesystem", f"{DO}volume:Volume",
     {"name": "data", "region": "nyc3", "size": 10, "initialFilesystemType": "btrfs"}, {}),
    ("volume-attachment-ids", f"{DO}volumeAttachment:VolumeAttachment", {"dropletId": 0, "volumeId": "v"}, {}),
    ("firewall-rules", f"{DO}firewall:Firewall", {"name": "fw", "inboundRules": [{"protocol": "tcp"}]}, {}),
    ("firewall-rules", f"{DO}firewall:Firewall",
     {"name": "fw", "inboundRules": [{"protocol": "icmp", "portRange": "1", "sourceAddresses": ["0.0.0.0/0"]}]}, {}),
    ("firewall-rules", f"{DO}firewall:Firewall",
     {"name": "fw", "inboundRules": [{"protocol": "tcp", "portRange": "22"}]}, {}),
    ("firewall-limits", f"{DO}firewall:Firewall",
     {"name": "fw", "inboundRules": [GOOD_FIREWALL_RULE], "dropletIds": list(range(1, 12))}, {}),
    ("ssh-key", f"{DO}sshKey:SshKey", {"name": "", "publicKey": "ssh-ed25519 AAAA"}, {}),
    ("project-fields", f"{DO}project:Project", {"name": "p", "environment": "Testing"}, {}),
    ("database-cluster", f"{DO}databaseCluster:DatabaseCluster",
     {"name": "db", "engine": "pg", "size": "db-s-1vcpu-1gb", "region": "nyc3", "nodeCount": 1}, {}),
    ("database-firewall", f"{DO}databaseFirewall:DatabaseFirewall",
     {"clusterId": "c", "rules": [{"type": "droplet", "value": "not-an-id"}]}, {}),
    ("spaces-bucket", f"{DO}spacesBucket:SpacesBucket", {"name": "media", "region": "nyc1", "acl": "private"},
     {"ignore_changes": ["name"]}),
    ("spaces-bucket-name-is-not-renamed", f"{DO}spacesBucket:SpacesBucket", {"name": "media", "region": "nyc3"}, {}),
    ("spaces-key-grants", f"{DO}spacesKey:SpacesKey", {"name": "k", "grants": [{"bucket": "media", "permission": "write"}]},
     {}),
    ("monitor-alert-fields", f"{DO}monitorAlert:MonitorAlert", {**GOOD_MONITOR_ALERT, "window": "15m"}, {}),
    ("monitor-alert-fields", f"{DO}monitorAlert:MonitorAlert", {**GOOD_MONITOR_ALERT, "value": -1.0}, {}),
    ("monitor-alert-fields", f"{DO}monitorAlert:MonitorAlert",
     {**GOOD_MONITOR_ALERT, "type": "v1/insights/lbaas/avg_cpu_utilization_percent"}, {}),
    ("monitor-alert-fields", f"{DO}monitorAlert:MonitorAlert", {**GOOD_MONITOR_ALERT, "alerts": {"emails": []}}, {}),
    ("monitor-alert-fields", f"{DO}monitorAlert:MonitorAlert", {**GOOD_MONITOR_ALERT, "entities": []}, {}),
    ("uptime-check-fields", f"{DO}uptimeCheck:UptimeCheck", {"name": "c", "target": "http://a.example.org/"}, {}),
    ("uptime-check-fields", f"{DO}uptimeCheck:UptimeCheck",
     {"name": "c", "target": "https://a.example.org/", "regions": ["eu_central"]}, {}),
    ("uptime-alert-fields", f"{DO}uptimeAlert:UptimeAlert", {**GOOD_UPTIME_ALERT, "period": "4m"}, {}),
    ("uptime-alert-fields", f"{DO}uptimeAlert:UptimeAlert", {**GOOD_UPTIME_ALERT, "type": "ssl_expiry"}, {}),
    ("uptime-alert-fields", f"{DO}uptimeAlert:UptimeAlert",
     {**GOOD_UPTIME_ALERT, "notifications": [{"emails": ["a@example.org"]}, {"emails": ["b@example.org"]}]}, {}),
], ids=lambda v: v if isinstance(v, str) and "/" not in v and ":" not in v else None)
def test_each_provider_rule_refuses_what_its_provider_refuses(rule: str, type_: str, inputs: dict[str, Any],
                                                              options: dict[str, Any]) -> None:
    recording = Recording(registrations=[registration(type_, inputs, **options)],
                          config={"digitalocean:spacesAccessId": "a", "digitalocean:spacesSecretKey": "s"})
    found = [line for line in provider_rules.violations(recording) if f"[{rule}:" in line]
    assert found, provider_rules.violations(recording)


@pytest.mark.parametrize(("token", "args", "rule"), [
    ("digitalocean:index/getVolume:getVolume", {"region": "nyc3"}, "get-volume-name"),
    ("digitalocean:index/getDroplet:getDroplet", {"id": 1, "name": "a"}, "get-droplet-one-of"),
    ("digitalocean:index/getDatabaseCa:getDatabaseCa", {}, "get-database-ca-cluster"),
    ("digitalocean:index/getAccount:getAccount", {"id": "x"}, "get-account-no-arguments"),
    ("cloudflare:index/getDnsRecords:getDnsRecords", {"zoneId": "zone-example"}, "cloudflare-zone-argument"),
    ("cloudflare:index/getRuleset:getRuleset", {"zoneId": ZONE}, "get-ruleset-id"),
])
def test_each_function_rule_refuses_arguments_its_provider_refuses(token: str, args: dict[str, Any], rule: str) -> None:
    found = provider_rules.violations(Recording(invokes=[(token, args)]))
    assert any(f"[{rule}:" in line for line in found), found


@pytest.mark.parametrize(("token", "inputs", "says"), [
    (f"{CF}dnsRecord:DnsRecord", {"zoneId": ZONE, "name": "a", "type": "A", "ttl": 1, "contents": "x"},
     "DnsRecord.contents: not an input of the schema"),
    (f"{CF}dnsRecord:DnsRecord", {"zoneId": ZONE, "name": "a", "ttl": 1}, "DnsRecord.type: required by the schema"),
    (f"{CF}dnsRecord:DnsRecord", {"zoneId": ZONE, "name": "a", "type": "A", "ttl": "1"}, "where the schema wants number"),
    (f"{CF}dnsRecord:DnsRecord", {"zoneId": ZONE, "name": "a", "type": "AA", "ttl": 1}, "'AA' is not one of A, AAAA"),
    (f"{DO}firewall:Firewall", {"inboundRules": [{"protocol": "tcp", "ports": "22"}]},
     "Firewall.inboundRules[0].ports: not an input of the schema"),
    (f"{DO}volumeAttachment:VolumeAttachment", {"dropletId": 1.5, "volumeId": "v"}, "where the schema wants integer"),
    ("command:remote:Command", {"connection": {"host": "h"}, "logging": "everything"}, "'everything' is not one of"),
], ids=["unknown", "required", "type", "enum", "nested-unknown", "integer", "enum-type"])
def test_the_schemas_refuse_unknown_missing_mistyped_and_disallowed_inputs(token: str, inputs: dict[str, Any],
                                                                          says: str) -> None:
    found = provider_schema.input_violations(token, inputs)
    assert any(says in line for line in found), found


def test_the_schema_of_a_function_and_of_outputs() -> None:
    assert provider_schema.argument_violations("cloudflare:index/getZones:getZones", {"zone": "x"})
    assert not provider_schema.argument_violations("cloudflare:index/getZones:getZones", {"name": "example.org"})
    assert provider_schema.output_violations("digitalocean:index/droplet:Droplet", {"ipv4": "192.0.2.1"})
    assert not provider_schema.output_violations("digitalocean:index/droplet:Droplet", {"ipv4Address": "192.0.2.1"})


@pytest.mark.parametrize(("type_", "inputs"), [
    (f"{DO}monitorAlert:MonitorAlert", GOOD_MONITOR_ALERT),
    (f"{DO}uptimeAlert:UptimeAlert", GOOD_UPTIME_ALERT),
    (f"{DO}uptimeCheck:UptimeCheck", {"name": "c", "target": "https://a.example.org/", "regions": ["us_east"]}),
])
def test_the_alert_rules_accept_what_their_provider_accepts(type_: str, inputs: dict[str, Any]) -> None:
    """The bases the refusals above mutate: so each refusal is the mutation's doing."""
    assert provider_rules.violations(Recording(registrations=[registration(type_, inputs)])) == []
