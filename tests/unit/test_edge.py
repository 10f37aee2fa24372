"""The stack's part of a shared Cloudflare zone, as recorded under mocks: the zone found from `domain`,
someone else's records respected, nothing zone-wide but Bot Fight Mode, rules scoped to the stack's
names, Authenticated Origin Pulls with its own CA, and two stacks side by side in one zone."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.settings import SettingsError
from tests.harness import CloudMocks, Recording, parse_bundle, record, registered_resources, unwrap, zone_id

RULE = "pulumi-python:dynamic:Resource"
RECORD = "cloudflare:index/dnsRecord:DnsRecord"


def rules(recording: Recording) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in recording.of_type(RULE)}


def dns(recording: Recording) -> set[tuple[str, str]]:
    return {(r.inputs["name"], r.inputs["type"]) for r in recording.of_type(RECORD)}


def test_the_zone_is_found_from_the_domain_upwards() -> None:
    recording = record({"domain": "chat.example.org"}, mocks=CloudMocks(zones=("example.org",)))
    looked = [a["name"] for tok, a in recording.invokes if tok == "cloudflare:index/getZones:getZones"]
    assert looked == ["chat.example.org", "example.org"]
    assert {r.inputs["zoneId"] for r in recording.of_type(RECORD)} == {zone_id("example.org")}
    assert ("chat.example.org", "A") in dns(recording) and ("matrix.chat.example.org", "A") in dns(recording)


def test_a_pinned_zone_is_the_only_one_looked_up() -> None:
    recording = record({"domain": "chat.example.org", "cloudflareZone": "example.org"},
                       mocks=CloudMocks(zones=("example.org", "chat.example.org")))
    looked = [a["name"] for tok, a in recording.invokes if tok == "cloudflare:index/getZones:getZones"]
    assert looked == ["example.org"]


SHOP = {"name": "matrix.example.org", "type": "CNAME", "content": "shop.example.net", "comment": "my shop"}
PROD_TURN = {"name": "turn.example.org", "type": "A", "content": "192.0.2.9",
             "comment": "matrix-stack:matrix-prod-example-org"}


@pytest.mark.parametrize(
    ("config", "mocks", "key", "says"),
    [
        ({"domain": "chat.example.net"}, CloudMocks(zones=("example.org",)), "domain",
         "no zone named chat.example.net, example.net"),
        ({}, CloudMocks(dns_records=[SHOP]), "matrixSubdomain", "matrix.example.org has CNAME shop.example.net"),
        ({}, CloudMocks(dns_records=[PROD_TURN]), "turnSubdomain", "A 192.0.2.9"),
    ],
    ids=["no-zone", "name-taken", "name-of-another-stack"],
)
def test_names_the_stack_cannot_have_are_refused_before_any_resource(
    config: dict[str, Any], mocks: CloudMocks, key: str, says: str
) -> None:
    recording = Recording()
    with pytest.raises(SettingsError) as error:
        record(config, mocks=mocks, into=recording)
    message = str(error.value)
    assert f"matrix-stack:{key}=" in message and says in message and "\n" not in message
    assert registered_resources(recording) == []


def test_nothing_is_set_zone_wide_but_bot_fight_mode_which_outlives_the_stack(graph: Recording) -> None:
    assert graph.of_type("cloudflare:index/zoneSetting:ZoneSetting") == []
    (bots,) = graph.of_type("cloudflare:index/botManagement:BotManagement")
    assert bots.inputs["fightMode"] is False and bots.retain_on_delete


def test_each_rule_is_scoped_to_the_stacks_proxied_names(graph: Recording) -> None:
    found = rules(graph)
    proxied = '{"example.org" "matrix.example.org" "chat.example.org"}'
    assert set(found) == {"edge-tls-strict", "edge-https-only", "edge-tls-floor", "edge-matrix-unchallenged"}
    for name, rule in found.items():
        assert f"http.host in {proxied}" in rule["expression"], name
        assert rule["ref"] == f"matrix-test-example-org-{name.removeprefix('edge-')}"
        assert rule["zone_id"] == zone_id("example.org")
    assert found["edge-tls-strict"]["phase"] == "http_config_settings"
    assert found["edge-tls-strict"]["action_parameters"] == {"ssl": "strict"}
    assert found["edge-https-only"]["phase"] == "http_request_dynamic_redirect"
    skip = found["edge-matrix-unchallenged"]
    assert skip["action"] == "skip" and skip["action_parameters"]["ruleset"] == "current"
    assert 'starts_with(http.request.uri.path, "/_matrix/")' in skip["expression"]
    assert found["edge-tls-floor"]["action"] == "block"


def test_a_website_on_the_server_name_is_left_alone_and_delegation_is_redirected() -> None:
    website = {"name": "example.org", "type": "A", "content": "192.0.2.80", "comment": "the shop"}
    recording = record(mocks=CloudMocks(dns_records=[website]))
    assert ("example.org", "A") not in dns(recording) and ("example.org", "AAAA") not in dns(recording)
    found = rules(recording)
    assert all("example.org\" \"matrix" not in r["expression"] for n, r in found.items() if n != "edge-delegation")
    delegation = found["edge-delegation"]
    assert delegation["phase"] == "http_request_dynamic_redirect"
    assert 'http.host eq "example.org"' in delegation["expression"]
    target = delegation["action_parameters"]["from_value"]["target_url"]["expression"]
    assert target == 'concat("https://matrix.example.org", http.request.uri.path)'
    (pulls,) = recording.of_type("cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls")
    assert {c["hostname"] for c in pulls.inputs["configs"]} == {"matrix.example.org", "chat.example.org"}


def test_our_own_records_on_the_server_name_are_not_a_website() -> None:
    ours = {"name": "example.org", "type": "A", "content": "203.0.113.10", "comment": "matrix-stack:matrix-test-example-org"}
    recording = record(mocks=CloudMocks(dns_records=[ours]))
    assert ("example.org", "A") in dns(recording) and "edge-delegation" not in rules(recording)


def test_origin_pulls_use_the_stacks_own_ca_for_its_names(graph: Recording, tmp_path: Path) -> None:
    (ca,) = graph.of_type("tls:index/selfSignedCert:SelfSignedCert")
    (client,) = graph.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert ca.inputs["isCaCertificate"] is True and "client_auth" in client.inputs["allowedUses"]
    (uploaded,) = graph.of_type(
        "cloudflare:index/authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate")
    assert uploaded.inputs["certificate"] == unwrap(client.raw_outputs)["certPem"]
    assert uploaded.is_secret("privateKey")
    (pulls,) = graph.of_type("cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls")
    assert pulls.inputs["configs"] == [{"hostname": h, "certId": uploaded.id, "enabled": True}
                                       for h in ("example.org", "matrix.example.org", "chat.example.org")]
    # nginx trusts exactly that CA, and the self-check's client certificate chains to it.
    nginx = graph.named("nginx-sites")
    files = {f.path: f.content for f in parse_bundle(nginx.inputs["stdin"])[0]}
    assert files[paths.ORIGIN_PULL_CA] == unwrap(ca.raw_outputs)["certPem"]
    (tmp_path / "ca.pem").write_text(files[paths.ORIGIN_PULL_CA])
    (tmp_path / "client.pem").write_text(files[paths.ORIGIN_PULL_CLIENT])
    verified = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "ca.pem"),
                               str(tmp_path / "client.pem")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert nginx.is_secret("stdin")
    # nginx starts requiring the certificate only after Cloudflare presents it.
    assert pulls.urn in nginx.dependencies


def two_stacks() -> tuple[Recording, Recording]:
    mocks = CloudMocks(zones=("example.org",))
    prod = record({"domain": "example.org"}, mocks=mocks, stack="prod")
    dev = record({"domain": "chat-dev.example.org", "cloudflareZone": "example.org"}, mocks=mocks, stack="dev")
    return prod, dev


def test_two_stacks_share_a_zone_without_sharing_anything_they_delete() -> None:
    """Everything one stack deletes on destroy is its own: records, rules, origin-pull hostnames and
    certificate. The one shared thing, Bot Fight Mode, is never deleted (retained)."""
    prod, dev = two_stacks()
    assert {r.inputs["zoneId"] for r in [*prod.of_type(RECORD), *dev.of_type(RECORD)]} == {zone_id("example.org")}
    assert not dns(prod) & dns(dev)
    assert not {r["ref"] for r in rules(prod).values()} & {r["ref"] for r in rules(dev).values()}

    def hostnames(recording: Recording) -> set[str]:
        (pulls,) = recording.of_type("cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls")
        return {c["hostname"] for c in pulls.inputs["configs"]}

    assert not hostnames(prod) & hostnames(dev)
    for recording in (prod, dev):
        deletable = [r for r in recording.registrations if r.type.startswith("cloudflare:") and not r.retain_on_delete]
        assert deletable and all(r.type != "cloudflare:index/botManagement:BotManagement" for r in deletable)
    # Each stack's rules name only its own hosts.
    assert all("chat-dev" not in r["expression"] for r in rules(prod).values())
    assert all('"example.org"' not in r["expression"] for r in rules(dev).values())
