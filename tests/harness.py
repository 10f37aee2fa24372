"""Run the real Pulumi program in-process under mocks and record the whole resource graph.

The cloud APIs are unreachable here, so the program runs against pulumi's mock monitor. The
recording keeps what the engine would receive for every resource: type, name, parent, inputs
(secrets still marked), dependencies and options. Unit tests assert on it, and the end-to-end
runner executes the recorded remote commands for real.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import runpy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from tests import pki, provider_rules, provider_schema
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin, zone_id_of

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "matrix-stack"
COMMAND = "command:remote:Command"

DEFAULT_CONFIG: dict[str, Any] = {
    "domain": "example.org",
    "sshAllowedCidrs": ["203.0.113.7/32"],
    "letsencryptEmail": "ops@example.org",
    "certbotCloudflareToken": "cf-token-SECRET-0123456789abcdef",
}
CLOUDFLARE_IPV4 = ["173.245.48.0/20", "103.21.244.0/22", "104.16.0.0/13"]
CLOUDFLARE_IPV6 = ["2400:cb00::/32", "2606:4700::/32"]
# The Cloudflare provider's credentials, as a user sets them (a secret of the provider's format).
CLOUDFLARE_TOKEN = "cf-api-token-0123456789abcdefghijABCDEFGHIJ-_"


def unwrap(value: Any) -> Any:
    """Strip pulumi's secret markers, recursively."""
    if rpc.is_rpc_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def contains_secret_marker(value: Any) -> bool:
    if rpc.is_rpc_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret_marker(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret_marker(v) for v in value)
    return False


@dataclass
class Registration:
    """One RegisterResource request as the engine would see it."""

    urn: str
    id: str
    type: str
    name: str
    parent: str
    custom: bool
    raw_inputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    protect: bool
    ignore_changes: list[str]
    replace_on_changes: list[str]
    additional_secret_outputs: list[str]
    delete_before_replace: bool
    retain_on_delete: bool
    import_id: str
    custom_timeouts: dict[str, str]
    raw_outputs: dict[str, Any]

    @property
    def inputs(self) -> dict[str, Any]:
        return unwrap(self.raw_inputs)  # type: ignore[no-any-return]

    def is_secret(self, key: str) -> bool:
        return rpc.is_rpc_secret(self.raw_inputs.get(key))

    @property
    def explicit_dependencies(self) -> set[str]:
        implicit = {u for urns in self.property_dependencies.values() for u in urns}
        return set(self.dependencies) - implicit


@dataclass
class Recording:
    registrations: list[Registration] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stack_outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # name -> (value, secret?)
    config: dict[str, str] = field(default_factory=dict)  # the stack's config, as the program got it
    warnings: list[str] = field(default_factory=list)  # what `pulumi up` would print as warnings

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)

    def commands(self) -> list[Registration]:
        """Remote commands in an order that respects their dependencies (as the engine runs them)."""
        commands = self.of_type(COMMAND)
        done: set[str] = set()
        ordered: list[Registration] = []
        pending = list(commands)
        command_urns = {c.urn for c in commands}
        while pending:
            ready = [c for c in pending if set(c.dependencies) & command_urns <= done]
            if not ready:
                raise RuntimeError("dependency cycle among remote commands")
            for c in ready:
                ordered.append(c)
                done.add(c.urn)
                pending.remove(c)
        return ordered

    def triggers(self) -> dict[str, Any]:
        """Each remote command's triggers: what decides whether `pulumi up` runs it again."""
        return {c.name: unwrap(c.raw_inputs["triggers"]) for c in self.commands()}


def registered_resources(recording: Recording) -> list[Registration]:
    """What the program itself registered: the root stack is the engine's (registered once per
    process by pulumi's test runtime, so it shows up in whichever recording comes first)."""
    return [r for r in recording.registrations if r.type != "pulumi:pulumi:Stack"]


def changed_steps(before: Recording, after: Recording) -> set[str]:
    """The steps `pulumi up` would run going from `before` to `after`: new or gone, triggers differ
    (a replacement), or stdin differs (an update, which re-runs `create`; pulumi-command)."""
    def runs(recording: Recording) -> dict[str, Any]:
        return {c.name: (unwrap(c.raw_inputs["triggers"]), unwrap(c.raw_inputs.get("stdin"))) for c in recording.commands()}

    old, new = runs(before), runs(after)
    return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}


class ProviderRefusal(AssertionError):
    """What the program registers or invokes, the real providers would refuse (one line each)."""


def refusals(recording: Recording) -> list[str]:
    """The pinned providers' schemas (tests/provider_schema.py) and their own checks (tests/provider_rules.py)
    over everything recorded; the mocks' answers must be outputs the providers have."""
    found: list[str] = []
    for reg in recording.registrations:
        if not reg.custom or reg.type.startswith(("pulumi:", "pulumi-python:")):
            continue
        found += [f"{reg.name}: {v}" for v in provider_schema.input_violations(reg.type, reg.inputs)]
        found += [f"{reg.name} (mock): {v}" for v in provider_schema.output_violations(reg.type, unwrap(reg.raw_outputs))]
    for token, args in recording.invokes:
        found += [f"invoke: {v}" for v in provider_schema.argument_violations(token, unwrap(args))]
    return found + provider_rules.violations(recording)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, keeping every request it sees."""

    def __init__(self, mocks: pulumi_mocks.Mocks, recording: Recording) -> None:
        super().__init__(mocks)
        self.recording = recording

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        self.recording.registrations.append(
            Registration(
                urn=response.urn,
                id=response.id,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                raw_inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                protect=request.protect,
                ignore_changes=list(request.ignoreChanges),
                replace_on_changes=list(request.replaceOnChanges),
                additional_secret_outputs=list(request.additionalSecretOutputs),
                delete_before_replace=request.deleteBeforeReplace,
                retain_on_delete=request.retainOnDelete,
                import_id=request.importId,
                custom_timeouts={k: getattr(request.customTimeouts, k) for k in ("create", "update", "delete")
                                 if getattr(request.customTimeouts, k)},
                raw_outputs=rpc.deserialize_properties(response.object, keep_unknowns=True),
            )
        )
        return response

    def Invoke(self, request: Any) -> Any:
        self.recording.invokes.append((request.tok, rpc.deserialize_properties(request.args)))
        return super().Invoke(request)  # type: ignore[no-untyped-call]


def _stable(name: str, length: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    """Deterministic fake random values, so two runs of the program see the same secrets."""
    digest = hashlib.sha256(name.encode()).digest() * 4
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def identity(name: str, inputs: Mapping[str, Any], seed: str = "") -> str:
    """What a provider would derive a new resource from: its name, its inputs and (for random
    values) the entropy of one stack's life. Any change in them gives a different value, as a
    replacement would, so a change that replaces a secret or a droplet cannot go unnoticed."""
    return f"{seed}|{name}|{json.dumps(unwrap(dict(inputs)), sort_keys=True, default=str)}"


@dataclass(frozen=True)
class ManagedDbAnswers:
    """What DigitalOcean answers for a managed PostgreSQL cluster (database: managed): its private host
    name, its CA (getDatabaseCa) and the passwords it generates for doadmin and Synapse's user."""

    host: str = "private-matrix-db-mock.b.db.ondigitalocean.com"
    port: int = 25060
    ca_pem: str = "-----BEGIN CERTIFICATE-----\nRkFLRSBDQQ==\n-----END CERTIFICATE-----\n"
    admin_password: str = "AVNS_fakeAdminPassword0"
    user_password: str = "AVNS_fakeUserPassword00"


@dataclass(frozen=True)
class SpacesAnswers:
    """What DigitalOcean answers for a Spaces bucket and key (mediaStorage: spaces): the endpoint
    host (`<region>.digitaloceanspaces.com` for real; the e2e's S3 stand-in) and the key's pair."""

    endpoint: str = ""  # "" = <region>.digitaloceanspaces.com, as DigitalOcean answers
    access_key: str = "DO00FAKEACCESSKEY000"
    secret_key: str = "fakeSpacesSecretKey0000000000000000000000000"
    # The backups' own key (issue 26): another pair, so a test can tell which key a file holds.
    backup_access_key: str = "DO00FAKEBACKUPKEY000"
    backup_secret_key: str = "fakeBackupSecretKey000000000000000000000000"


class CloudMocks(pulumi_mocks.Mocks):
    """Answers for DigitalOcean, Cloudflare, random and tls, shaped like the real providers'."""

    def __init__(
        self,
        droplet_ipv4: str = "203.0.113.10",
        droplet_ipv6: str = "2001:db8::10",
        turn_ipv4: str = "203.0.113.20",
        cloudflare_ipv4: list[str] | None = None,
        cloudflare_ipv6: list[str] | None = None,
        deploy_key: tuple[str, str] | None = None,
        secret_seed: str = "",
        host_key: tuple[str, str] | None = None,
        turn_host_key: tuple[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, Any]] | None = None,
        droplet_names: Mapping[int, str] | None = None,
        zones: Sequence[str] | Mapping[str, CloudflareStandin] = ("example.org",),
        dns_records: Sequence[Mapping[str, Any]] = (),
        managed_db: ManagedDbAnswers | None = None,
        spaces: SpacesAnswers | None = None,
        account_email: str = "owner@example.org",
    ) -> None:
        self.droplet_ipv4 = droplet_ipv4
        self.droplet_ipv6 = droplet_ipv6
        self.turn_ipv4 = turn_ipv4  # the TURN droplet's (turnDroplet), which has no IPv6
        self.cloudflare_ipv4 = cloudflare_ipv4 if cloudflare_ipv4 is not None else CLOUDFLARE_IPV4
        self.cloudflare_ipv6 = cloudflare_ipv6 if cloudflare_ipv6 is not None else CLOUDFLARE_IPV6
        # (private OpenSSH PEM, public OpenSSH line); fake unless a real key is given (e2e).
        self.deploy_key = deploy_key or ("-----FAKE PRIVATE KEY-----\n", "ssh-ed25519 AAAAfakeDeployKey deploy")
        # The droplet's SSH host key (cloud-init user data, pinned in every connection).
        self.host_key = host_key or ("-----FAKE HOST PRIVATE KEY-----\n", "ssh-ed25519 AAAAfakeHostKey\n")
        # The TURN droplet's (turnDroplet): another key, so a test can tell which droplet a step pins.
        self.turn_host_key = turn_host_key or ("-----FAKE TURN HOST PRIVATE KEY-----\n", "ssh-ed25519 AAAAfakeTurnKey\n")
        # Another seed is another stack life: every generated secret differs (a stack re-created on a kept volume).
        self.secret_seed = secret_seed
        # Volumes already in the account, by name ({"id", "size", "filesystemType", "dropletIds", "region"}),
        # as getVolume answers for them, and the names of droplets by id (getDroplet).
        self.volumes = dict(volumes or {})
        self.droplet_names = dict(droplet_names or {})
        # The Cloudflare account: its zones, each the API stand-in's model of one (plan, records, rules,
        # origin-pull certificates, bot settings), which answers the provider's functions; `dns_records`
        # ({name, type, content, comment, proxied}) are added to the zone that holds their name.
        self.zones: dict[str, CloudflareStandin] = dict(zones) if isinstance(zones, Mapping) else {
            name: CloudflareStandin(None, 0, name) for name in zones}
        for record in dns_records:
            zone = next(z for name, z in self.zones.items() if record["name"] == name or record["name"].endswith("." + name))
            zone.handle("POST", f"/client/v4/zones/{zone.zone_id}/dns_records", {},
                        {"ttl": 1, "proxied": False, **record})
        self.managed_db = managed_db or ManagedDbAnswers()
        self.spaces = spaces or SpacesAnswers()
        self.account_email = account_email  # the DigitalOcean account's own, verified e-mail (getAccount)

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        typ, name = args.typ, args.name
        if typ == "digitalocean:index/droplet:Droplet":
            # A droplet of another image, size or user data is another droplet: another id.
            replaced_by = {k: args.inputs.get(k) for k in ("image", "size", "region", "userData")}
            droplet_id = str(int(_stable(identity(name, replaced_by), 8, "0123456789")) + 10_000_000)
            turn = name.endswith("-turn-droplet")
            outputs.update(
                ipv4Address=self.turn_ipv4 if turn else self.droplet_ipv4,
                ipv6Address="" if turn else self.droplet_ipv6,
                dropletUrn=f"do:droplet:{droplet_id}",
                memory=1024,
            )
            return droplet_id, outputs
        if typ == "digitalocean:index/volume:Volume":
            # An imported volume keeps its id (the `import` option's); a new one gets one of its own.
            volume_id = args.resource_id or f"vol-{_stable(name, 8)}"
            outputs.update(volumeUrn=f"do:volume:{volume_id}", filesystemType="xfs")
            return volume_id, outputs
        if typ == "digitalocean:index/volumeAttachment:VolumeAttachment":
            return f"{args.inputs['dropletId']}-{args.inputs['volumeId']}", outputs
        if typ == "digitalocean:index/sshKey:SshKey":  # an MD5 fingerprint, as DigitalOcean gives
            outputs.update(fingerprint=":".join(_stable(name, 32, "0123456789abcdef")[i : i + 2] for i in range(0, 32, 2)))
            return "1234", outputs
        if typ == "digitalocean:index/databaseCluster:DatabaseCluster":
            db = self.managed_db
            cluster_id = f"db-{_stable(identity(name, {k: args.inputs.get(k) for k in ('region', 'engine')}), 8)}"
            outputs.update(host=db.host.removeprefix("private-"), privateHost=db.host, port=db.port,
                           user="doadmin", password=rpc.wrap_rpc_secret(db.admin_password), database="defaultdb",
                           urn=f"do:dbaas:{cluster_id}")
            return cluster_id, outputs
        if typ == "digitalocean:index/databaseUser:DatabaseUser":
            outputs.update(password=rpc.wrap_rpc_secret(self.managed_db.user_password), role="normal")
            return f"{args.inputs['clusterId']},{args.inputs['name']}", outputs
        if typ == "digitalocean:index/spacesBucket:SpacesBucket":
            region = args.inputs["region"]
            endpoint = self.spaces.endpoint or f"{region}.digitaloceanspaces.com"
            outputs.update(endpoint=endpoint, bucketDomainName=f"{args.inputs['name']}.{endpoint}",
                           bucketUrn=f"do:space:{args.inputs['name']}")
            return f"{region},{args.inputs['name']}", outputs
        if typ == "digitalocean:index/spacesKey:SpacesKey":
            backups = name.endswith("backup-key")
            access = self.spaces.backup_access_key if backups else self.spaces.access_key
            secret = self.spaces.backup_secret_key if backups else self.spaces.secret_key
            outputs.update(accessKey=access, secretKey=rpc.wrap_rpc_secret(secret))
            return access, outputs
        seed = identity(name, args.inputs, self.secret_seed)
        if typ.startswith("tls:index/"):
            return f"{name}-id", {**outputs, **self._tls(typ, name, seed, args.inputs)}
        if typ == "random:index/randomPassword:RandomPassword":
            outputs.update(result=rpc.wrap_rpc_secret(_stable(seed, int(args.inputs["length"]))))
            return f"{name}-id", outputs
        if typ == "random:index/randomString:RandomString":
            outputs.update(result=_stable(seed, int(args.inputs["length"]), "abcdefghijklmnopqrstuvwxyz0123456789"))
            return f"{name}-id", outputs
        if typ == "random:index/randomBytes:RandomBytes":
            import base64

            raw = hashlib.sha256(seed.encode()).digest()[: int(args.inputs["length"])]
            outputs.update(base64=rpc.wrap_rpc_secret(base64.b64encode(raw).decode()), hex=rpc.wrap_rpc_secret(raw.hex()))
            return f"{name}-id", outputs
        if typ == "command:remote:Command":
            outputs.update(stdout="", stderr="")
        return f"{name}-id", outputs

    def _tls(self, typ: str, name: str, seed: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """What pulumi-tls returns: the SSH keys the test gives (deploy, host), real PKI for the rest."""
        plain = unwrap(dict(inputs))
        if typ == "tls:index/privateKey:PrivateKey" and plain.get("algorithm") == "ED25519":
            private, public = (self.turn_host_key if name.endswith("-turn-host-key") else
                               self.host_key if name.endswith("-host-key") else self.deploy_key)
            return {"privateKeyOpenssh": rpc.wrap_rpc_secret(private), "publicKeyOpenssh": public}
        if typ == "tls:index/privateKey:PrivateKey":
            private = pki.private_key_pem(seed)
            return {"privateKeyPem": rpc.wrap_rpc_secret(private), "publicKeyPem": pki.public_key_pem(private)}
        hours = int(plain.get("validityPeriodHours") or 24)
        uses = list(plain.get("allowedUses") or [])
        if typ == "tls:index/selfSignedCert:SelfSignedCert":
            return {"certPem": pki.self_signed_cert(seed, plain["privateKeyPem"], plain.get("subject"),
                                                    bool(plain.get("isCaCertificate")), uses, hours)}
        if typ == "tls:index/certRequest:CertRequest":
            return {"certRequestPem": pki.cert_request(seed, plain["privateKeyPem"], plain.get("subject"))}
        if typ == "tls:index/locallySignedCert:LocallySignedCert":
            return {"certPem": pki.locally_signed_cert(seed, plain["certRequestPem"], plain["caPrivateKeyPem"],
                                                       plain["caCertPem"], uses, hours)}
        raise NotImplementedError(typ)

    def _zone(self, zone_id: str) -> CloudflareStandin:
        return next(z for z in self.zones.values() if z.zone_id == zone_id)

    @staticmethod
    def _api(zone: CloudflareStandin, path: str, query: Mapping[str, str] | None = None) -> Any:
        """A GET to the zone's API stand-in, as the provider's function makes it; its result in wire names."""
        status, result = zone.handle("GET", f"/client/v4/zones/{zone.zone_id}{path}", dict(query or {}), None)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {result}")
        return wire_names(result)

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        token, arguments = args.token, args.args
        if token == "cloudflare:index/getZones:getZones":
            zone = self.zones.get(str(arguments.get("name")))
            return {"results": [wire_names(zone._zone())] if zone is not None else []}
        if token.startswith("cloudflare:index/") and token != "cloudflare:index/getIpRanges:getIpRanges":
            zone = self._zone(arguments.get("zoneId", ""))
            if token == "cloudflare:index/getDnsRecords:getDnsRecords":
                name = (arguments.get("name") or {}).get("exact", "")
                return {"results": self._api(zone, "/dns_records", {"name.exact": name})}
            if token == "cloudflare:index/getRulesets:getRulesets":  # the provider fills both (list_data_source.go)
                found = self._api(zone, "/rulesets")
                return {"results": found, "rulesets": found}
            if token == "cloudflare:index/getRuleset:getRuleset":
                return dict(self._api(zone, f"/rulesets/{arguments.get('id') or arguments.get('rulesetId')}"))
            if token.endswith(":getAuthenticatedOriginPullsHostnameCertificates"):
                return {"results": self._api(zone, "/origin_tls_client_auth/hostnames/certificates")}
            if token == "cloudflare:index/getBotManagement:getBotManagement":
                return dict(self._api(zone, "/bot_management"))
        if args.token == "digitalocean:index/getVolume:getVolume":
            found = self.volumes.get(args.args.get("name", ""))
            if found is None or found.get("region", args.args.get("region")) != args.args.get("region"):
                return {}, [("name", f"no volumes found with name {args.args.get('name')}")]  # type: ignore[return-value]
            return {"name": args.args["name"], "region": args.args.get("region"), "filesystemLabel": "",
                    "tags": [], "urn": f"do:volume:{found['id']}", **found}
        if args.token == "digitalocean:index/getDroplet:getDroplet":
            return {"id": args.args["id"], "name": self.droplet_names[int(args.args["id"])]}
        if args.token == "digitalocean:index/getAccount:getAccount":
            return {"email": self.account_email, "emailVerified": True, "dropletLimit": 25, "floatingIpLimit": 3,
                    "status": "active", "statusMessage": "", "uuid": "a1b2c3d4-account", "id": "a1b2c3d4-account"}
        if args.token == "digitalocean:index/getDatabaseCa:getDatabaseCa":
            return {"clusterId": args.args["clusterId"], "certificate": self.managed_db.ca_pem, "id": args.args["clusterId"]}
        if args.token == "cloudflare:index/getIpRanges:getIpRanges":
            return {"ipv4Cidrs": self.cloudflare_ipv4, "ipv6Cidrs": self.cloudflare_ipv6, "etag": "e", "jdcloudCidrs": []}
        raise NotImplementedError(f"the mocks have no answer for {token}")


def wire_names(value: Any) -> Any:
    """An API answer (snake_case) as a provider function's result reaches the SDK (camelCase wire names);
    values inside a map of user keys (headers) keep their keys."""
    if isinstance(value, list):
        return [wire_names(v) for v in value]
    if isinstance(value, dict):
        return {(k if "-" in k else re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k)): wire_names(v)
                for k, v in value.items()}
    return value


def zone_id(name: str) -> str:
    """The id a zone has (the API stand-in's: 32 hex digits, stable per name)."""
    return zone_id_of(name)


def config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Config as `pulumi config set` stores it: strings, JSON for lists, numbers and booleans."""
    return {
        f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v)
        for k, v in config.items()
    }


def record(
    config: Mapping[str, Any] | None = None,
    mocks: CloudMocks | None = None,
    stack: str = "test",
    plain_keys: tuple[str, ...] = (),
    into: Recording | None = None,
    spaces_credentials: bool = True,
    cloudflare_credentials: Mapping[str, str] | None = None,
    check_providers: bool = True,
) -> Recording:
    """Run __main__.py under mocks with `config` (merged over DEFAULT_CONFIG) and record it all.

    Keys in `plain_keys` are stored as plain config (not secret), to test that mistake.
    `spaces_credentials`: the DigitalOcean provider's Spaces key is configured, as a user of
    mediaStorage: spaces has it. `cloudflare_credentials`: the Cloudflare provider's config (secret
    values; default an API token).
    `into` receives the registrations even when the program fails.
    `check_providers`: what the real providers would refuse in the recording fails it (ProviderRefusal).
    """
    merged = {**DEFAULT_CONFIG, **(config or {})}
    merged = {k: v for k, v in merged.items() if v is not None}
    recording = into if into is not None else Recording()
    mocks = mocks or CloudMocks()
    monitor = RecordingMonitor(mocks, recording)
    strings = config_strings(merged)
    secret_keys = [f"{PROJECT}:certbotCloudflareToken", f"{PROJECT}:smtpPassword"]
    secret_keys = [k for k in secret_keys if k in strings and k.split(":", 1)[1] not in plain_keys]
    if spaces_credentials:
        strings.update({"digitalocean:spacesAccessId": "DO00PROVIDERSPACESKEY",
                        "digitalocean:spacesSecretKey": "provider-secret"})
        secret_keys.append("digitalocean:spacesSecretKey")
    cloudflare = {"cloudflare:apiToken": CLOUDFLARE_TOKEN} if cloudflare_credentials is None else dict(cloudflare_credentials)
    strings.update(cloudflare)
    secret_keys += [k for k in cloudflare if k != "cloudflare:email"]
    recording.config = dict(strings)
    logger = logging.getLogger(f"matrix-stack.recording.{id(recording)}")
    logger.propagate = False
    logger.handlers = [_WarningsInto(recording.warnings)]
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, logger=logger)
    pulumi.runtime.set_all_config(strings, secret_keys=secret_keys)

    exported: dict[str, Any] = {}

    def capture_export(name: str, value: Any) -> None:
        exported[name] = value

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        original = pulumi.export
        pulumi.export = capture_export
        try:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        finally:
            pulumi.export = original
        names = list(exported)
        return pulumi.Output.all(
            *[pulumi.Output.from_input(exported[n]) for n in names],
            *[pulumi.Output.from_input(exported[n]).is_secret() for n in names],
        ).apply(lambda values: recording.stack_outputs.update(
            {n: (v, bool(secret)) for n, v, secret in zip(names, values[: len(names)], values[len(names) :])}
        ))

    program()
    if check_providers:
        refused = refusals(recording)
        if refused:
            raise ProviderRefusal("the real providers would refuse:\n  " + "\n  ".join(refused))
    return recording


class _WarningsInto(logging.Handler):
    """Keeps the program's `pulumi.log.warn` lines, which `pulumi up` prints."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@dataclass
class BundleFile:
    path: str
    mode: str
    owner: str
    group: str
    content: str


def parse_bundle(stdin: str) -> tuple[list[BundleFile], str]:
    """The files a step bundle writes (decoded) and its script, as the server will see them."""
    import base64
    import re

    files = [
        BundleFile(path, mode, owner, group, base64.b64decode(body).decode())
        for path, mode, owner, group, body in re.findall(
            r"^ms_put_file (\S+) (\S+) (\S+) (\S+) <<'MS_END_OF_FILE'\n(.*?)MS_END_OF_FILE$", stdin, re.M | re.S
        )
    ]
    script = stdin.split("# --- step script ---\n", 1)[1].split("# --- end of step script ---", 1)[0]
    return files, script
