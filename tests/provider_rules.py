"""What the real providers refuse that no schema says: their own checks, each a named rule citing where it
comes from, applied to everything the program registers and invokes (tests/harness.py does, on every
recording).

Sources, read for this: terraform-provider-cloudflare v5.19.1 (bundled by pulumi-cloudflare 6.23.1) and
terraform-provider-digitalocean v2.99.1 (the newest tag available; pulumi-digitalocean 4.84.1 bundles a
later one whose inputs for these resources are the same but for the firewall rules' `action`), paths
under internal/services/ and digitalocean/; the Cloudflare and DigitalOcean API documentation where the
provider leaves a check to the API ("API:" below). Paths are relative to each repository.

A rule sees one registration (inputs as the engine gets them, options, dependencies) and the whole
recording, and answers what the provider or API would refuse, one line each.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.harness import Recording, Registration

Check = Callable[["Registration", "Recording"], Iterable[str]]
ArgumentCheck = Callable[[dict[str, Any]], Iterable[str]]

CF = "cloudflare:index/"
DO = "digitalocean:index/"


@dataclass(frozen=True)
class Rule:
    """One provider-side check: `name` says what, `source` where the provider (or API) does it."""

    name: str
    token: str  # the resource type it applies to ("*": every registration)
    source: str
    check: Check


@dataclass(frozen=True)
class ArgumentRule:
    """The same for a function's arguments (an invoke)."""

    name: str
    token: str
    source: str
    check: ArgumentCheck


RULES: list[Rule] = []
ARGUMENT_RULES: list[ArgumentRule] = []


def rule(name: str, token: str, source: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES.append(Rule(name, token, source, check))
        return check
    return register


def argument_rule(name: str, token: str, source: str) -> Callable[[ArgumentCheck], ArgumentCheck]:
    def register(check: ArgumentCheck) -> ArgumentCheck:
        ARGUMENT_RULES.append(ArgumentRule(name, token, source, check))
        return check
    return register


def _missing(values: dict[str, Any], *keys: str) -> list[str]:
    return [f"{k} is required" for k in keys if values.get(k) in (None, "")]


# -- Cloudflare --------------------------------------------------------------------------------------
AOP = f"{CF}authenticatedOriginPulls:AuthenticatedOriginPulls"
AOP_CERTIFICATE = f"{CF}authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate"
DNS_RECORD = f"{CF}dnsRecord:DnsRecord"
_CLOUDFLARE_ID = re.compile(r"^[0-9a-f]{32}$")


@rule("cloudflare-zone-id", "*", "API: identifiers are 32 hex digits (internal/services/ruleset/schema.go zone_id)")
def _zone_id(reg: Registration, _: Recording) -> Iterable[str]:
    zone = reg.inputs.get("zoneId", reg.inputs.get("zone_id")) if reg.type.startswith(CF) or (
        reg.type == "pulumi-python:dynamic:Resource" and "zone_id" in reg.inputs) else None
    if zone is not None and not _CLOUDFLARE_ID.match(str(zone)):
        yield f"zone id {zone!r} is not a Cloudflare identifier (32 hex digits)"


@rule("origin-pulls-one-hostname", AOP, "internal/services/authenticated_origin_pulls/resource.go L68-80, L162-174")
def _one_hostname(reg: Registration, _: Recording) -> Iterable[str]:
    configs = reg.inputs.get("configs") or []
    if len(configs) != 1:
        yield ("invalid config: config must contain exactly one hostname association. Create separate resources "
               f"to manage multiple hostnames. ({len(configs)} given)")
    for config in configs:
        if not config.get("hostname"):
            yield "missing hostname: config[0].hostname must not be empty"


@rule("origin-pulls-hostname-change-replaces", AOP,
      "internal/services/authenticated_origin_pulls/resource.go Update (L160-220): PUTs the new hostname, never voids "
      "the old association")
def _hostname_change(reg: Registration, _: Recording) -> Iterable[str]:
    if not any(p in ("configs", "configs[*].hostname", "configs[0].hostname") for p in reg.replace_on_changes) or \
            not reg.delete_before_replace:
        yield ("a changed hostname must replace the association, deleting (voiding) the old one first "
               "(replace_on_changes configs[*].hostname, delete_before_replace), or the old name stays associated")


@rule("origin-pulls-per-certificate", AOP, "API: 100 maximum associations on a single certificate")
def _per_certificate(reg: Registration, recording: Recording) -> Iterable[str]:
    cert = (reg.inputs.get("configs") or [{}])[0].get("certId")
    count = sum(1 for r in recording.of_type(AOP) for c in r.inputs.get("configs") or [] if c.get("certId") == cert)
    if cert and count > 100:
        yield f"{count} associations on certificate {cert} (at most 100)"


@rule("origin-pull-certificate-pem", AOP_CERTIFICATE, "API: certificate and private_key are PEM")
def _pem(reg: Registration, _: Recording) -> Iterable[str]:
    if "BEGIN CERTIFICATE" not in str(reg.inputs.get("certificate", "")):
        yield "certificate is not a PEM certificate"
    if "PRIVATE KEY" not in str(reg.inputs.get("privateKey", "")):
        yield "privateKey is not a PEM private key"


@rule("dns-proxied-ttl", DNS_RECORD, "internal/services/dns_record/resource.go L71-77 (Create)")
def _proxied_ttl(reg: Registration, _: Recording) -> Iterable[str]:
    if reg.inputs.get("proxied") and reg.inputs.get("ttl") != 1:
        yield "ttl must be set to 1 when `proxied` is true"


@rule("dns-ttl-range", DNS_RECORD, "internal/services/dns_record/schema.go ttl; API error 9021")
def _ttl(reg: Registration, _: Recording) -> Iterable[str]:
    ttl = reg.inputs.get("ttl")
    if not (ttl == 1 or (isinstance(ttl, (int, float)) and 60 <= ttl <= 86400)):
        yield f"ttl {ttl!r}: TTL must be between 60 and 86400 seconds, or 1 for Automatic"


@rule("dns-proxiable-types", DNS_RECORD, "API: only A, AAAA and CNAME records can be proxied")
def _proxiable(reg: Registration, _: Recording) -> Iterable[str]:
    if reg.inputs.get("proxied") and reg.inputs.get("type") not in ("A", "AAAA", "CNAME"):
        yield f"a {reg.inputs.get('type')} record cannot be proxied"


@rule("dns-comment-length", DNS_RECORD, "API: record comments of 100 characters on Free, 500 on paid plans")
def _comment(reg: Registration, _: Recording) -> Iterable[str]:
    if len(str(reg.inputs.get("comment") or "")) > 100:
        yield "comment longer than a Free zone allows (100 characters)"


@rule("dns-address-content", DNS_RECORD, "API: an A record's content is an IPv4 address, AAAA's IPv6 (the provider "
      "does not check: internal/services/dns_record/schema.go content)")
def _address(reg: Registration, _: Recording) -> Iterable[str]:
    kind, content = reg.inputs.get("type"), reg.inputs.get("content")
    version = {"A": 4, "AAAA": 6}.get(str(kind))
    try:
        ok = version is None or ipaddress.ip_address(str(content)).version == version
    except ValueError:
        ok = False
    if not ok:
        yield f"{kind} record content {content!r} is not an IPv{version} address"


@rule("bot-management-sends-defaults", f"{CF}botManagement:BotManagement",
      "internal/services/bot_management/schema.go L91-96, model.go L86-108: is_robots_txt_managed defaults to false "
      "and is sent on every create and update")
def _bot_management(reg: Registration, _: Recording) -> Iterable[str]:
    if reg.inputs.get("isRobotsTxtManaged") is None:
        yield ("sends is_robots_txt_managed=false (its schema default), switching off a Cloudflare-managed robots.txt "
               "for the whole zone")


# -- DigitalOcean -------------------------------------------------------------------------------------
DROPLET = f"{DO}droplet:Droplet"
_TAG = re.compile(r"^[a-zA-Z0-9:\-_]{1,255}$")
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,253}[a-zA-Z0-9])?$")


@rule("digitalocean-tags", "*", "digitalocean/tag/tags.go L14-42")
def _tags(reg: Registration, _: Recording) -> Iterable[str]:
    if reg.type.startswith(DO):
        for tag in reg.inputs.get("tags") or []:
            if not _TAG.match(str(tag)):
                yield f"tag {tag!r} must match {_TAG.pattern}"


@rule("droplet-backup-policy", DROPLET, "digitalocean/droplet/resource_droplet.go L345-351: backup_policy can only be "
      "set when backups are enabled")
def _backup_policy(reg: Registration, _: Recording) -> Iterable[str]:
    if reg.inputs.get("backupPolicy") and not reg.inputs.get("backups"):
        yield "backup_policy can only be set when backups are enabled"


@rule("droplet-name", DROPLET, "API: a droplet name is a hostname (letters, digits, dots, dashes)")
def _droplet_name(reg: Registration, _: Recording) -> Iterable[str]:
    name = str(reg.inputs.get("name") or "")
    if not _HOSTNAME.match(name):
        yield f"droplet name {name!r} is not a hostname"


@rule("droplet-user-data-size", DROPLET, "API: user data of at most 64 KiB")
def _user_data(reg: Registration, _: Recording) -> Iterable[str]:
    size = len(str(reg.inputs.get("userData") or "").encode())
    if size > 64 * 1024:
        yield f"user data of {size} bytes (at most 65536)"


@rule("droplet-ssh-keys", DROPLET, "digitalocean/droplet/resource_droplet.go L232-240, L1072-1088 (ids or fingerprints)")
def _ssh_keys(reg: Registration, _: Recording) -> Iterable[str]:
    for key in reg.inputs.get("sshKeys") or []:
        if not key or not (str(key).isdigit() or re.fullmatch(r"([0-9a-f]{2}:){15}[0-9a-f]{2}", str(key))):
            yield f"ssh key {key!r} is neither a key id nor an MD5 fingerprint"


@rule("droplet-volume-ids-or-attachments", DROPLET, "docs/resources/droplet.md: volume_ids must not be mixed with "
      "digitalocean_volume_attachment for a droplet")
def _volume_ids(reg: Registration, recording: Recording) -> Iterable[str]:
    if reg.inputs.get("volumeIds") and recording.of_type(f"{DO}volumeAttachment:VolumeAttachment"):
        yield "volume_ids together with VolumeAttachment resources drift against each other"


@rule("volume-name", f"{DO}volume:Volume", "API (docs/resources/volume.md): lower-case letters, digits and dashes, a "
      "letter first, at most 64")
def _volume_name(reg: Registration, _: Recording) -> Iterable[str]:
    name = str(reg.inputs.get("name") or "")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", name):
        yield f"volume name {name!r} is not a DigitalOcean volume name"


@rule("volume-size", f"{DO}volume:Volume", "digitalocean/volume/resource_volume.go L50-54 (at least 1); API: 16 TiB")
def _volume_size(reg: Registration, _: Recording) -> Iterable[str]:
    size = reg.inputs.get("size")
    if not isinstance(size, (int, float)) or not 1 <= size <= 16384:
        yield f"size {size!r} GiB (1 to 16384)"


@rule("volume-filesystem", f"{DO}volume:Volume", "digitalocean/volume/resource_volume.go L70-103")
def _volume_filesystem(reg: Registration, _: Recording) -> Iterable[str]:
    kinds = [reg.inputs.get(k) for k in ("initialFilesystemType", "filesystemType") if reg.inputs.get(k) is not None]
    if len(kinds) > 1:
        yield "filesystem_type conflicts with initial_filesystem_type"
    for kind in kinds:
        if kind not in ("ext4", "xfs"):
            yield f"filesystem {kind!r} is not ext4 or xfs"
    if reg.inputs.get("description") == "":
        yield "description must not be empty when set (NoZeroValues)"


@rule("volume-attachment-ids", f"{DO}volumeAttachment:VolumeAttachment",
      "digitalocean/volume/resource_volume_attachment.go L24-38")
def _attachment(reg: Registration, _: Recording) -> Iterable[str]:
    droplet = reg.inputs.get("dropletId")
    if not isinstance(droplet, (int, float)) or not float(droplet).is_integer() or droplet == 0:
        yield f"droplet_id {droplet!r} is not a droplet's numeric id"
    yield from _missing(reg.inputs, "volumeId")


FIREWALL = f"{DO}firewall:Firewall"


@rule("firewall-rules", FIREWALL, "digitalocean/firewall/resource_firewall.go L28-58, firewalls.go L71-124; API: a rule "
      "needs a source or destination, ICMP takes no ports")
def _firewall_rules(reg: Registration, _: Recording) -> Iterable[str]:
    inbound, outbound = reg.inputs.get("inboundRules") or [], reg.inputs.get("outboundRules") or []
    if not inbound and not outbound:
        yield "At least one rule must be specified"
    for direction, rules, prefix in (("inbound", inbound, "source"), ("outbound", outbound, "destination")):
        for i, r in enumerate(rules):
            where = f"{direction}[{i}]"
            if r.get("protocol") not in ("tcp", "udp", "icmp"):
                yield f"{where}: protocol {r.get('protocol')!r} is not tcp, udp or icmp"
            if r.get("protocol") != "icmp" and not r.get("portRange"):
                yield f"{where}: `port_range` of {direction} rules is required if protocol is `tcp` or `udp`"
            if r.get("protocol") == "icmp" and r.get("portRange"):
                yield f"{where}: an icmp rule takes no port_range (the API answers none, so it drifts)"
            if r.get("action") not in (None, "allow", "deny"):
                yield f"{where}: action {r.get('action')!r} is not allow or deny"
            ports = str(r.get("portRange") or "")
            if ports and ports != "all" and not re.fullmatch(r"\d{1,5}(-\d{1,5})?", ports):
                yield f"{where}: port_range {ports!r} is not a port, a range or all"
            targets = [r.get(f"{prefix}{k}") for k in ("Addresses", "DropletIds", "KubernetesIds", "LoadBalancerUids", "Tags")]
            if not any(targets):
                yield f"{where}: no {prefix} (the API refuses a rule without one)"
            for address in r.get(f"{prefix}Addresses") or []:
                try:
                    ipaddress.ip_network(str(address), strict=False)
                except ValueError:
                    yield f"{where}: {address!r} is not an address or CIDR"


@rule("firewall-limits", FIREWALL, "docs/resources/firewall.md: at most 10 droplet_ids and 5 tags")
def _firewall_limits(reg: Registration, _: Recording) -> Iterable[str]:
    if len(reg.inputs.get("dropletIds") or []) > 10:
        yield "more than 10 droplet_ids"
    if len(reg.inputs.get("tags") or []) > 5:
        yield "more than 5 tags"


@rule("ssh-key", f"{DO}sshKey:SshKey", "digitalocean/sshkey/resource_ssh_key.go L31-43 (NoZeroValues)")
def _ssh_key(reg: Registration, _: Recording) -> Iterable[str]:
    yield from _missing(reg.inputs, "name", "publicKey")


PROJECT = f"{DO}project:Project"


@rule("project-fields", PROJECT, "digitalocean/project/resource_project.go L31-95")
def _project(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    if not 1 <= len(str(values.get("name") or "")) <= 175:
        yield "name must be 1 to 175 characters"
    for key in ("description", "purpose"):
        if len(str(values.get(key) or "")) > 255:
            yield f"{key} longer than 255 characters"
    if values.get("environment") is not None and str(values["environment"]).lower() not in (
            "development", "staging", "production"):
        yield f"environment {values['environment']!r} is not development, staging or production"
    for urn in values.get("resources") or []:
        if not re.fullmatch(r"do:[a-z]+:[^:\s]+", str(urn)):
            yield f"resource {urn!r} is not a DigitalOcean URN (do:<type>:<id>)"


@rule("project-one-per-resource", PROJECT, "API: a resource belongs to one project (digitalocean/project/"
      "resource_project.go L245-265 moves it)")
def _one_project(reg: Registration, recording: Recording) -> Iterable[str]:
    counts = Counter(urn for p in recording.of_type(PROJECT) for urn in p.inputs.get("resources") or [])
    for urn in reg.inputs.get("resources") or []:
        if counts[urn] > 1:
            yield f"{urn} is in {counts[urn]} projects"


CLUSTER = f"{DO}databaseCluster:DatabaseCluster"


@rule("database-cluster", CLUSTER, "digitalocean/database/resource_database_cluster.go L40-101, L312-347")
def _cluster(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    yield from _missing(values, "name", "engine", "size", "region")
    if values.get("version") in (None, ""):
        yield "version is required (transitionVersionToRequired)"
    engine = values.get("engine")
    if engine not in ("pg", "mysql", "redis", "valkey", "mongodb", "kafka", "opensearch"):
        yield f"engine {engine!r} is not a managed database engine"
    if values.get("sqlMode") and engine != "mysql":
        yield "sql_mode is only for mysql"
    if values.get("evictionPolicy") and engine not in ("redis", "valkey"):
        yield "eviction_policy is only for redis and valkey"
    if not isinstance(values.get("nodeCount"), (int, float)) or not 1 <= values["nodeCount"] <= 3:
        yield f"node_count {values.get('nodeCount')!r} (1 to 3)"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", str(values.get("name") or "")):
        yield f"name {values.get('name')!r}: lower-case letters, digits and dashes, 3 to 63 (API)"


@rule("database-user", f"{DO}databaseUser:DatabaseUser", "digitalocean/database/resource_database_user.go L31-54")
def _database_user(reg: Registration, _: Recording) -> Iterable[str]:
    yield from _missing(reg.inputs, "name", "clusterId")
    plugin = reg.inputs.get("mysqlAuthPlugin")
    if plugin is not None and plugin not in ("mysql_native_password", "caching_sha2_password"):
        yield f"mysql_auth_plugin {plugin!r}"


DATABASE_FIREWALL = f"{DO}databaseFirewall:DatabaseFirewall"


@rule("database-firewall", DATABASE_FIREWALL, "digitalocean/database/resource_database_firewall.go L27-68")
def _database_firewall(reg: Registration, _: Recording) -> Iterable[str]:
    rules = reg.inputs.get("rules") or []
    if not rules:
        yield "at least one rule is required"
    for r in rules:
        if r.get("type") not in ("ip_addr", "droplet", "k8s", "tag", "app"):
            yield f"rule type {r.get('type')!r} is not ip_addr, droplet, k8s, tag or app"
        if r.get("value") in (None, ""):
            yield "rule value is required"
        elif r.get("type") == "droplet" and not str(r["value"]).isdigit():
            yield f"droplet rule value {r['value']!r} is not a droplet id"


@rule("database-firewall-one-per-cluster", DATABASE_FIREWALL, "digitalocean/database/resource_database_firewall.go "
      "L73-140: each replaces the cluster's whole rule set")
def _one_firewall(reg: Registration, recording: Recording) -> Iterable[str]:
    clusters = Counter(f.inputs.get("clusterId") for f in recording.of_type(DATABASE_FIREWALL))
    if clusters[reg.inputs.get("clusterId")] > 1:
        yield f"{clusters[reg.inputs.get('clusterId')]} database firewalls on one cluster overwrite each other"


BUCKET = f"{DO}spacesBucket:SpacesBucket"
SPACES_REGIONS = ("ams3", "atl1", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1")


@rule("spaces-bucket", BUCKET, "digitalocean/spaces/resource_spaces_bucket.go L35-204, spaces_entities.go L16; API: "
      "S3 bucket names")
def _bucket(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    if str(values.get("region") or "nyc3").lower() not in SPACES_REGIONS:
        yield f"region {values.get('region')!r} has no Spaces"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", str(values.get("name") or "")):
        yield f"bucket name {values.get('name')!r}: 3-63 lower-case letters, digits and dashes"
    if values.get("acl") not in (None, "private", "public-read"):
        yield f"acl {values.get('acl')!r} is not private or public-read"
    for lifecycle in values.get("lifecycleRules") or []:
        if len(str(lifecycle.get("id") or "")) > 255:
            yield "lifecycle rule id longer than 255"
        days = (lifecycle.get("expiration") or {}).get("days")
        if days is not None and days < 0:
            yield f"lifecycle expiration days {days} (at least 0)"


@rule("spaces-bucket-name-is-not-renamed", BUCKET, "digitalocean/spaces/resource_spaces_bucket.go L35-39 (name is not "
      "ForceNew) and its Update (never renames)")
def _bucket_rename(reg: Registration, _: Recording) -> Iterable[str]:
    if "name" not in reg.ignore_changes and "name" not in reg.replace_on_changes:
        yield ("a changed name is accepted and never applied (the bucket keeps its old name): ignore changes to it, "
               "or replace the bucket")


@rule("spaces-credentials", BUCKET, "digitalocean/config/config.go L42-46, provider.go L70-80: Spaces credentials not "
      "configured")
def _spaces_credentials(_reg: Registration, recording: Recording) -> Iterable[str]:
    for key, variable in (("digitalocean:spacesAccessId", "SPACES_ACCESS_KEY_ID"),
                          ("digitalocean:spacesSecretKey", "SPACES_SECRET_ACCESS_KEY")):
        if not recording.config.get(key) and not os.environ.get(variable):
            yield f"{key} is not configured (nor {variable})"


@rule("spaces-key-grants", f"{DO}spacesKey:SpacesKey", "digitalocean/spaces/resource_spaces_key.go L119-141 (any "
      "other permission is sent empty)")
def _spaces_key(reg: Registration, _: Recording) -> Iterable[str]:
    for grant in reg.inputs.get("grants") or []:
        permission = grant.get("permission")
        if permission not in ("read", "readwrite", "fullaccess"):
            yield f"grant permission {permission!r} is not read, readwrite or fullaccess"
        elif (permission == "fullaccess") != (grant.get("bucket") in ("", None)):
            yield "fullaccess goes with bucket \"\", read and readwrite with a bucket"


MONITOR_ALERT = f"{DO}monitorAlert:MonitorAlert"
UPTIME_CHECK = f"{DO}uptimeCheck:UptimeCheck"
UPTIME_ALERT = f"{DO}uptimeAlert:UptimeAlert"
_DROPLET_ALERT_TYPES = {f"v1/insights/droplet/{t}" for t in (
    "cpu", "memory_utilization_percent", "disk_utilization_percent", "public_outbound_bandwidth",
    "public_inbound_bandwidth", "private_outbound_bandwidth", "private_inbound_bandwidth", "disk_read", "disk_write",
    "load_1", "load_5", "load_15")}


def _notified_by_email(notify: Any) -> Iterable[str]:
    """The provider reads one notification block (config[0]); an empty address list mails nobody."""
    blocks = notify if isinstance(notify, list) else [notify] if notify else []
    if len(blocks) != 1:
        yield f"exactly one notification block is read by the provider ({len(blocks)} given)"
    for block in blocks[:1]:
        emails = (block or {}).get("emails") or []
        if not emails or any(not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(e)) for e in emails):
            yield f"emails must be one or more addresses (verified on the account), not {emails!r}"


@rule("monitor-alert-fields", MONITOR_ALERT, "digitalocean/monitoring/resource_monitor_alert.go L32-155 (type, "
      "compare, description, value >= 0, alerts MaxItems 1, entities MinItems 1, window), L187 (alerts[0] only)")
def _monitor_alert(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    yield from _missing(values, "type", "compare", "description", "window")
    if values.get("type") not in _DROPLET_ALERT_TYPES:  # the program watches droplets only
        yield f"type {values.get('type')!r} is not a droplet alert type"
    if values.get("compare") not in ("GreaterThan", "LessThan"):
        yield f"compare {values.get('compare')!r} must be GreaterThan or LessThan"
    if not isinstance(values.get("value"), (int, float)) or values["value"] < 0:
        yield f"value {values.get('value')!r} must be a number of at least 0"
    if values.get("window") not in ("5m", "10m", "30m", "1h"):
        yield f"window {values.get('window')!r} must be 5m, 10m, 30m or 1h"
    if "entities" in values and not values["entities"]:
        yield "entities, when given, needs at least one droplet (none: the policy watches every droplet)"
    yield from _notified_by_email(values.get("alerts"))


@rule("uptime-check-fields", UPTIME_CHECK, "digitalocean/uptime/resource_uptime_check.go L25-62; API: regions are "
      "us_east, us_west, eu_west, se_asia; an http(s) target is a URL of that scheme")
def _uptime_check(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    yield from _missing(values, "name", "target")
    kind = values.get("type") or "https"
    if kind not in ("ping", "http", "https"):
        yield f"type {kind!r} must be ping, http or https"
    elif kind != "ping" and not str(values.get("target") or "").startswith(f"{kind}://"):
        yield f"an {kind} check's target must be an {kind}:// URL, not {values.get('target')!r}"
    for region in values.get("regions") or []:
        if region not in ("us_east", "us_west", "eu_west", "se_asia"):
            yield f"region {region!r} is not an uptime region"


@rule("uptime-alert-fields", UPTIME_ALERT, "digitalocean/uptime/resource_uptime_alert.go L29-120, L152 "
      "(notifications[0] only); API: type, name, period and notifications are required, threshold and comparison "
      "for latency and ssl_expiry alerts")
def _uptime_alert(reg: Registration, _: Recording) -> Iterable[str]:
    values = reg.inputs
    yield from _missing(values, "checkId", "name", "type", "period")
    if values.get("type") not in ("latency", "down", "down_global", "ssl_expiry"):
        yield f"type {values.get('type')!r} must be latency, down, down_global or ssl_expiry"
    if values.get("period") not in ("2m", "3m", "5m", "10m", "15m", "30m", "1h"):
        yield f"period {values.get('period')!r} must be 2m, 3m, 5m, 10m, 15m, 30m or 1h"
    if values.get("type") in ("latency", "ssl_expiry") and (
            values.get("threshold") is None or values.get("comparison") not in ("greater_than", "less_than")):
        yield f"a {values.get('type')} alert needs a threshold and a comparison"
    yield from _notified_by_email(values.get("notifications"))


# -- functions ------------------------------------------------------------------------------------------
@argument_rule("get-volume-name", f"{DO}getVolume:getVolume", "digitalocean/volume/datasource_volume.go L24-47")
def _get_volume(args: dict[str, Any]) -> Iterable[str]:
    yield from _missing(args, "name")


@argument_rule("get-droplet-one-of", f"{DO}getDroplet:getDroplet", "digitalocean/droplet/datasource_droplet.go L23-40")
def _get_droplet(args: dict[str, Any]) -> Iterable[str]:
    given = [k for k in ("id", "tag", "name") if args.get(k) not in (None, "")]
    if len(given) != 1:
        yield f"exactly one of id, tag and name is required ({given or 'none'} given)"
    if args.get("gpu") and args.get("tag"):
        yield "gpu conflicts with tag"


@argument_rule("get-account-no-arguments", f"{DO}getAccount:getAccount",
               "digitalocean/account/datasource_account.go L15-52 (every field computed)")
def _get_account(args: dict[str, Any]) -> Iterable[str]:
    if args:
        yield f"getAccount takes no arguments ({sorted(args)} given)"


@argument_rule("get-database-ca-cluster", f"{DO}getDatabaseCa:getDatabaseCa",
               "digitalocean/database/datasource_database_ca.go")
def _get_database_ca(args: dict[str, Any]) -> Iterable[str]:
    yield from _missing(args, "clusterId")


def _zone_argument(args: dict[str, Any]) -> Iterable[str]:
    if not _CLOUDFLARE_ID.match(str(args.get("zoneId") or "")):
        yield f"zone_id {args.get('zoneId')!r}: the API path needs the zone's 32-hex id"


for _token, _source in (("getDnsRecords:getDnsRecords", "internal/services/dns_record/list_data_source.go"),
                        ("getRulesets:getRulesets", "internal/services/ruleset/list_data_source.go"),
                        ("getRuleset:getRuleset", "internal/services/ruleset/data_source.go"),
                        ("getBotManagement:getBotManagement", "internal/services/bot_management/data_source.go"),
                        ("getAuthenticatedOriginPullsHostnameCertificates:getAuthenticatedOriginPullsHostnameCertificates",
                         "internal/services/authenticated_origin_pulls_hostname_certificate/list_data_source.go")):
    ARGUMENT_RULES.append(ArgumentRule("cloudflare-zone-argument", f"{CF}{_token}", _source, _zone_argument))


@argument_rule("get-ruleset-id", f"{CF}getRuleset:getRuleset", "internal/services/ruleset/data_source.go L55-70")
def _get_ruleset(args: dict[str, Any]) -> Iterable[str]:
    if not (args.get("id") or args.get("rulesetId")):
        yield "id (or ruleset_id) is required"


# -- applying them --------------------------------------------------------------------------------------
def violations(recording: Recording) -> list[str]:
    """Every rule's refusals over a recording, each line naming the resource, the rule and its source."""
    found = []
    for reg in recording.registrations:
        if not reg.custom:
            continue
        for r in RULES:
            if r.token in ("*", reg.type):
                found += [f"{reg.name} ({reg.type.rsplit(':', 1)[-1]}): {line} [{r.name}: {r.source}]"
                          for line in r.check(reg, recording)]
    for token, args in recording.invokes:
        for a in ARGUMENT_RULES:
            if a.token == token:
                found += [f"invoke {token.rsplit(':', 1)[-1]}: {line} [{a.name}: {a.source}]" for line in a.check(args)]
    return found
