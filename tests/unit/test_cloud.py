"""The cloud layer as recorded under mocks: DESIGN section 2, rule by rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.settings import DEFAULTS
from tests.harness import CLOUDFLARE_IPV4, CLOUDFLARE_IPV6, DEFAULT_CONFIG, Recording, record, unwrap, zone_id

ANYWHERE = ["0.0.0.0/0", "::/0"]
CLOUDFLARE = CLOUDFLARE_IPV4 + CLOUDFLARE_IPV6


def rule_set(rules: list[dict[str, Any]], source_key: str) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(r["protocol"], r.get("portRange", ""), tuple(sorted(r.get(source_key, [])))) for r in rules}


def test_firewall_inbound_rules_are_exactly_the_expected_set(graph: Recording) -> None:
    (firewall,) = graph.of_type("digitalocean:index/firewall:Firewall")
    relay = DEFAULTS["turnRelayPorts"]
    expected = {
        ("tcp", "22", tuple(sorted(DEFAULT_CONFIG["sshAllowedCidrs"]))),
        ("tcp", "80", tuple(sorted(CLOUDFLARE))),
        ("tcp", "443", tuple(sorted(CLOUDFLARE))),
        ("tcp", "3478", tuple(sorted(ANYWHERE))),
        ("udp", "3478", tuple(sorted(ANYWHERE))),
        ("tcp", "5349", tuple(sorted(ANYWHERE))),
        ("udp", "5349", tuple(sorted(ANYWHERE))),
        ("udp", relay, tuple(sorted(ANYWHERE))),
    }
    assert rule_set(firewall.inputs["inboundRules"], "sourceAddresses") == expected
    assert len(firewall.inputs["inboundRules"]) == len(expected)
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    assert firewall.inputs["dropletIds"] == [int(droplet.id)]


def test_firewall_allows_all_outbound_traffic(graph: Recording) -> None:
    (firewall,) = graph.of_type("digitalocean:index/firewall:Firewall")
    protocols = {r["protocol"] for r in firewall.inputs["outboundRules"]}
    assert protocols == {"tcp", "udp", "icmp"}
    assert all(sorted(r["destinationAddresses"]) == sorted(ANYWHERE) for r in firewall.inputs["outboundRules"])


def test_firewall_follows_cloudflare_ranges_and_config_changes() -> None:
    from tests.harness import CloudMocks

    recording = record(
        {"sshAllowedCidrs": ["198.51.100.0/24"], "turnRelayPorts": "50000-50010"},
        mocks=CloudMocks(cloudflare_ipv4=["192.0.2.0/24"], cloudflare_ipv6=[]),
    )
    (firewall,) = recording.of_type("digitalocean:index/firewall:Firewall")
    rules = rule_set(firewall.inputs["inboundRules"], "sourceAddresses")
    assert ("tcp", "443", ("192.0.2.0/24",)) in rules
    assert ("tcp", "22", ("198.51.100.0/24",)) in rules
    assert ("udp", "50000-50010", tuple(sorted(ANYWHERE))) in rules
    assert ("cloudflare:index/getIpRanges:getIpRanges") in [tok for tok, _ in recording.invokes]


def test_dns_records_proxied_for_web_names_and_dns_only_for_turn(graph: Recording) -> None:
    records = {(r.inputs["name"], r.inputs["type"]): r.inputs for r in graph.of_type("cloudflare:index/dnsRecord:DnsRecord")}
    for host in ("example.org", "matrix.example.org", "chat.example.org"):
        assert records[(host, "A")]["proxied"] is True
        assert records[(host, "A")]["content"] == "203.0.113.10"
        assert records[(host, "AAAA")]["proxied"] is True
        assert records[(host, "AAAA")]["content"] == "2001:db8::10"
    assert records[("turn.example.org", "A")]["proxied"] is False
    assert ("turn.example.org", "AAAA") not in records
    assert all(r["zoneId"] == zone_id("example.org") for r in records.values())
    assert all(r["comment"] == "matrix-stack:matrix-test-example-org" for r in records.values())
    assert len(records) == 7


def test_volume_is_retained_not_protected_xfs_and_attached(graph: Recording) -> None:
    """`pulumi destroy` must complete and keep the data.

    The engine fails any deployment that would delete a protected resource (Pulumi docs, "protect"),
    so the volume is retained instead: on destroy or replacement the engine never calls the
    provider's Delete and only drops it from the state (Pulumi docs, "retainOnDelete"). No setting
    may replace it: every input the provider can only apply by creating a new volume is ignored.
    """
    (volume,) = graph.of_type("digitalocean:index/volume:Volume")
    assert volume.protect is False and volume.retain_on_delete is True
    assert set(volume.ignore_changes) >= {"name", "region", "description", "initialFilesystemType", "snapshotId"}
    assert "size" not in volume.ignore_changes  # growing the volume is an in-place update
    assert volume.inputs["initialFilesystemType"] == "xfs"
    assert volume.inputs["size"] == DEFAULTS["volumeSizeGb"]
    (attachment,) = graph.of_type("digitalocean:index/volumeAttachment:VolumeAttachment")
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    assert attachment.inputs["dropletId"] == int(droplet.id) and attachment.inputs["volumeId"] == volume.id
    assert attachment.delete_before_replace is True
    assert "volumeIds" not in droplet.inputs  # never both volume_ids and VolumeAttachment
    # Nothing else is retained or protected: destroy removes everything but the volume, and leaves the
    # zone's Bot Fight Mode off (a zone setting other stacks in the zone rely on; test_edge.py).
    others = [r.name for r in graph.registrations if r.custom and r is not volume and (r.protect or r.retain_on_delete)]
    assert others == ["edge-bot-fight-mode-off"]


def test_a_resize_replaces_the_droplet_instead_of_a_hard_power_off(graph: Recording) -> None:
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    assert "size" in droplet.replace_on_changes


def test_the_volume_guard_stands_between_the_attachment_and_every_step(graph: Recording) -> None:
    """Dependents are deleted before what they depend on, so the guard's delete command (stop the
    writers, unmount) runs before the attachment goes, on destroy and on delete-before-replace."""
    (attachment,) = graph.of_type("digitalocean:index/volumeAttachment:VolumeAttachment")
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    guard, *steps = graph.commands()
    assert guard.name == "release-volume"
    assert attachment.urn in guard.dependencies
    assert guard.inputs["delete"] == "/usr/local/sbin/matrix-stack-release-volume"
    assert guard.delete_before_replace is True
    # Its identity is the attachment and the droplet: a new droplet replaces it, an edit does not.
    assert guard.inputs["triggers"] == [attachment.id, droplet.id]
    assert set(guard.property_dependencies["triggers"]) == {attachment.urn, droplet.urn}
    for step in steps:
        assert "delete" not in step.inputs or not step.inputs["delete"], step.name


def test_droplet_is_debian_with_ipv6_monitoring_and_deploy_key(graph: Recording) -> None:
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    assert droplet.inputs["image"] == "debian-13-x64"
    assert droplet.inputs["size"] == "s-1vcpu-1gb"
    assert droplet.inputs["ipv6"] is True and droplet.inputs["monitoring"] is True
    keys = {k.name: k for k in graph.of_type("tls:index/privateKey:PrivateKey") if k.name.startswith("host-")}
    assert set(keys) == {"host-deploy-key", "host-host-key"}
    assert {k.inputs["algorithm"] for k in keys.values()} == {"ED25519"}
    (do_key,) = graph.of_type("digitalocean:index/sshKey:SshKey")
    assert do_key.inputs["publicKey"] == "ssh-ed25519 AAAAfakeDeployKey deploy"
    assert droplet.inputs["sshKeys"] and "sshKeys" in droplet.ignore_changes


def test_the_droplet_gets_the_generated_host_key_and_every_step_pins_it(graph: Recording) -> None:
    """cloud-init installs the program's host key at creation (user data); every connection verifies
    it, so no step sends its stdin (which carries secrets) to a machine without that key."""
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    assert droplet.is_secret("userData")  # it holds the host's private key
    user_data = droplet.inputs["userData"]
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    assert config["ssh_keys"] == {"ed25519_private": "-----FAKE HOST PRIVATE KEY-----\n",
                                  "ed25519_public": "ssh-ed25519 AAAAfakeHostKey"}
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == ["ed25519"]
    for command in graph.commands():
        assert command.inputs["connection"]["hostKey"] == "ssh-ed25519 AAAAfakeHostKey", command.name
    assert "userData" not in droplet.ignore_changes  # a new host key needs a new droplet: never silently


def test_user_ssh_keys_are_registered_next_to_the_deploy_key() -> None:
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserOne a@b", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC b@c"]
    recording = record({"sshPublicKeys": keys})
    registered = [r.inputs["publicKey"] for r in recording.of_type("digitalocean:index/sshKey:SshKey")]
    assert registered[1:] == keys or sorted(registered) == sorted([*keys, "ssh-ed25519 AAAAfakeDeployKey deploy"])
    (droplet,) = recording.of_type("digitalocean:index/droplet:Droplet")
    assert len(droplet.inputs["sshKeys"]) == 3


def test_project_groups_droplet_and_volume(graph: Recording) -> None:
    (project,) = graph.of_type("digitalocean:index/project:Project")
    (droplet,) = graph.of_type("digitalocean:index/droplet:Droplet")
    (volume,) = graph.of_type("digitalocean:index/volume:Volume")
    assert sorted(project.inputs["resources"]) == [f"do:droplet:{droplet.id}", f"do:volume:{volume.id}"]


def urn_type(urn: str) -> str:
    """The resource type named by a URN (the last segment of its type chain)."""
    return urn.split("::")[2].rsplit("$", 1)[-1]


def test_every_resource_is_parented_to_its_component(graph: Recording) -> None:
    components = {r.urn for r in graph.registrations if not r.custom}
    for registration in graph.registrations:
        if registration.type == "pulumi:pulumi:Stack":
            continue
        assert registration.parent, registration.name
        parent_type = urn_type(registration.parent)
        if registration.type == "matrix-stack:index:MatrixStack":
            assert parent_type == "pulumi:pulumi:Stack", registration.name
            continue
        assert registration.parent in components, f"{registration.name} has a non-component parent"
        assert parent_type.startswith("matrix-stack:"), registration.name
    stack_children = [r for r in graph.registrations if r.parent and urn_type(r.parent) == "pulumi:pulumi:Stack"]
    assert [r.type for r in stack_children] == ["matrix-stack:index:MatrixStack"]


def test_generated_secrets_never_appear_in_plain_inputs(graph: Recording) -> None:
    secret_values = set()
    for r in graph.registrations:
        if r.type.startswith("random:") or r.type.startswith("tls:"):
            for key in ("result", "base64", "hex", "privateKeyOpenssh"):
                if key in r.raw_outputs and r.type != "random:index/randomString:RandomString":
                    secret_values.add(str(unwrap(r.raw_outputs[key])))
    secret_values.add(DEFAULT_CONFIG["certbotCloudflareToken"])
    assert len(secret_values) >= 8

    def plain_strings(value: Any) -> list[str]:
        from pulumi.runtime import rpc

        if rpc.is_rpc_secret(value):
            return []
        if isinstance(value, dict):
            return [s for v in value.values() for s in plain_strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in plain_strings(v)]
        return [value] if isinstance(value, str) else []

    for r in graph.registrations:
        for text in plain_strings(r.raw_inputs):
            for secret in secret_values:
                assert secret not in text, f"a secret appears in plain input of {r.name}"


def test_outputs_are_named_as_the_design_says(graph: Recording) -> None:
    outputs = graph.stack_outputs
    assert set(outputs) == {
        "homeserverUrl", "elementUrl", "serverName", "dropletIpv4", "dropletIpv6",
        "adminUserId", "adminPassword", "sshCommand", "dataVolume", "dataVolumeId", "dataVolumeKeptOnDestroy",
        "initialPasswords", "invitations", "alertEmail",
    }
    assert outputs["homeserverUrl"] == ("https://matrix.example.org", False)
    assert outputs["adminUserId"] == ("@admin:example.org", False)
    assert outputs["adminPassword"][1] is True
    assert outputs["sshCommand"][0] == "ssh root@203.0.113.10"
    assert outputs["alertEmail"] == ("owner@example.org", False)  # the account's own (getAccount), as the mocks say


@pytest.mark.parametrize("name", ["postgres-password", "admin-password", "turn-shared-secret"])
def test_secret_resources_are_stable_names(graph: Recording, name: str) -> None:
    # Renaming a random resource would regenerate the secret: the names are part of the contract.
    assert graph.named(f"secrets-{name}").type == "random:index/randomPassword:RandomPassword"
