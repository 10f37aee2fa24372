"""The stack's part of a shared Cloudflare zone, as recorded under mocks that read the zone from the API
stand-in's model: the zone found from `domain`, someone else's records respected, nothing zone-wide but Bot
Fight Mode, rules scoped to the stack's names and counted against the zone's plan before any resource,
Authenticated Origin Pulls with its own CA, and several stacks side by side in one Free zone."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.settings import SettingsError
from tests.e2e.engine import Engine, recorded_credentials
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import CloudMocks, Recording, parse_bundle, record, registered_resources, unwrap, zone_id

RULE = "pulumi-python:dynamic:Resource"
RECORD = "cloudflare:index/dnsRecord:DnsRecord"
PULLS = "cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls"
CUSTOM = "http_request_firewall_custom"


def rules(recording: Recording) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in recording.of_type(RULE) if "ref" in r.inputs}


def dns(recording: Recording) -> set[tuple[str, str]]:
    return {(r.inputs["name"], r.inputs["type"]) for r in recording.of_type(RECORD)}


def refused(config: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """The one-line error of a program that must stop before registering any resource."""
    recording = Recording()
    with pytest.raises(SettingsError) as error:
        record(config, into=recording, **kwargs)
    assert registered_resources(recording) == []
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def zone(zone_api: CloudflareStandin) -> CloudflareStandin:
    return zone_api
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


SHOP = {"name": "matrix.example.org", "type": "CNAME", "content": "shop.example.net", "comment": "my shop", "proxied": True}
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
    message = refused(config, mocks=mocks)
    assert f"matrix-stack:{key}=" in message and says in message


def test_nothing_is_set_zone_wide_but_bot_fight_mode_which_outlives_the_stack(graph: Recording) -> None:
    """Bot Fight Mode is turned off by a resource that names that one field (the provider's BotManagement would
    also switch off managed robots.txt), and it is retained: destroying a stack never turns it on again."""
    assert graph.of_type("cloudflare:index/zoneSetting:ZoneSetting") == []
    assert graph.of_type("cloudflare:index/botManagement:BotManagement") == []
    (bots,) = [r for r in graph.of_type(RULE) if r.name == "edge-bot-fight-mode-off"]
    assert bots.inputs["zone_id"] == zone_id("example.org") and bots.retain_on_delete


def test_up_says_that_bot_fight_mode_goes_off_for_the_whole_zone_only_while_it_is_on() -> None:
    standin = CloudflareStandin(None, 0, "example.org")
    warned = [w for w in record(mocks=CloudMocks(zones={"example.org": standin})).warnings if "Bot Fight Mode" in w]
    assert len(warned) == 1 and "whole zone" in warned[0] and "stays off after `pulumi destroy`" in warned[0]
    standin.bot_fight_mode = False
    assert not [w for w in record(mocks=CloudMocks(zones={"example.org": standin})).warnings if "Bot Fight Mode" in w]


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
    assert found["edge-tls-floor"]["phase"] == "http_request_late_transform"


def website(proxied: bool) -> dict[str, Any]:
    return {"name": "example.org", "type": "A", "content": "192.0.2.80", "comment": "the shop", "proxied": proxied}


def test_a_proxied_website_on_the_server_name_is_left_alone_and_delegation_is_redirected() -> None:
    recording = record(mocks=CloudMocks(dns_records=[website(proxied=True)]))
    assert ("example.org", "A") not in dns(recording) and ("example.org", "AAAA") not in dns(recording)
    found = rules(recording)
    assert all("example.org\" \"matrix" not in r["expression"] for n, r in found.items() if n != "edge-delegation")
    delegation = found["edge-delegation"]
    assert delegation["phase"] == "http_request_dynamic_redirect"
    assert 'http.host eq "example.org"' in delegation["expression"]
    target = delegation["action_parameters"]["from_value"]["target_url"]["expression"]
    assert target == 'concat("https://matrix.example.org", http.request.uri.path)'
    hostnames = {c["hostname"] for p in recording.of_type(PULLS) for c in p.inputs["configs"]}
    assert hostnames == {"matrix.example.org", "chat.example.org"}


def test_a_website_cloudflare_does_not_proxy_is_refused_unless_it_serves_the_well_known_files() -> None:
    """Cloudflare never sees that website's traffic, so its delegation redirect cannot work: the user proxies the
    record, or serves the two files from the website and says so."""
    message = refused(mocks=CloudMocks(dns_records=[website(proxied=False)]))
    assert message.startswith("config matrix-stack:domain='example.org'") and "A 192.0.2.80" in message
    assert "not proxied by Cloudflare" in message and "wellKnownOnWebsite true" in message
    recording = record({"wellKnownOnWebsite": True}, mocks=CloudMocks(dns_records=[website(proxied=False)]))
    assert "edge-delegation" not in rules(recording) and ("example.org", "A") not in dns(recording)


def test_our_own_records_on_the_server_name_are_not_a_website() -> None:
    ours = {"name": "example.org", "type": "A", "content": "203.0.113.10", "comment": "matrix-stack:matrix-test-example-org"}
    recording = record(mocks=CloudMocks(dns_records=[ours]))
    assert ("example.org", "A") in dns(recording) and "edge-delegation" not in rules(recording)


def test_origin_pulls_use_the_stacks_own_ca_one_association_per_name(graph: Recording, tmp_path: Path) -> None:
    (ca,) = graph.of_type("tls:index/selfSignedCert:SelfSignedCert")
    (client,) = graph.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert ca.inputs["isCaCertificate"] is True and "client_auth" in client.inputs["allowedUses"]
    (uploaded,) = graph.of_type(
        "cloudflare:index/authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate")
    assert uploaded.inputs["certificate"] == unwrap(client.raw_outputs)["certPem"]
    assert uploaded.is_secret("privateKey")
    associations = graph.of_type(PULLS)
    by_name = {p.inputs["configs"][0]["hostname"]: p.inputs["configs"] for p in associations}
    assert by_name == {h: [{"hostname": h, "certId": uploaded.id, "enabled": True}]
                       for h in ("example.org", "matrix.example.org", "chat.example.org")}
    assert len(associations) == 3
    for association in associations:  # a new name replaces it, the old association voided first
        assert association.replace_on_changes == ["configs[*].hostname"] and association.delete_before_replace
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
    # nginx starts requiring the certificate only once Cloudflare reports every association active.
    ready = graph.named("edge-origin-pulls-active")
    assert ready.urn in nginx.dependencies
    assert {p.urn for p in associations} <= set(ready.dependencies) and uploaded.urn in ready.dependencies
    assert sorted(ready.inputs["hostnames"]) == ["chat.example.org", "example.org", "matrix.example.org"]


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
        return {c["hostname"] for p in recording.of_type(PULLS) for c in p.inputs["configs"]}

    assert not hostnames(prod) & hostnames(dev)
    for recording in (prod, dev):
        deletable = [r for r in recording.registrations if (r.type.startswith("cloudflare:") or r.type == RULE)
                     and not r.retain_on_delete]
        assert deletable and all(r.name != "edge-bot-fight-mode-off" for r in deletable)
    # Each stack's rules name only its own hosts.
    assert all("chat-dev" not in r["expression"] for r in rules(prod).values())
    assert all('"example.org"' not in r["expression"] for r in rules(dev).values())


# -- quotas -----------------------------------------------------------------------------------------------
def others_rules(zone: CloudflareStandin, phase: str, count: int) -> None:
    """Rules of the user's (or of other stacks') in a phase, as the dashboard makes them."""
    rules_ = [{"ref": f"users-{n}", "expression": f'(http.host eq "shop{n}.example.org")', "action": "block"}
              for n in range(count)]
    status, answer = zone.handle("PUT", f"/client/v4/zones/{zone.zone_id}/rulesets/phases/{phase}/entrypoint", {},
                                 {"rules": rules_})
    assert status == 200, answer


def others_certificates(zone: CloudflareStandin, count: int) -> None:
    for _ in range(count):
        status, answer = zone.handle("POST", f"/client/v4/zones/{zone.zone_id}/origin_tls_client_auth/hostnames/"
                                     "certificates", {}, {"certificate": "-----BEGIN CERTIFICATE-----\nx\n",
                                                          "private_key": "-----BEGIN PRIVATE KEY-----\nx\n"})
        assert status == 200, answer


def test_a_free_zone_whose_custom_rules_are_all_taken_is_refused_before_any_resource() -> None:
    zone = CloudflareStandin(None, 0, "example.org")
    others_rules(zone, CUSTOM, 5)
    message = refused(mocks=CloudMocks(zones={"example.org": zone}))
    assert message.startswith("Cloudflare zone example.org (free plan) allows 5 WAF custom rules and 5 are not this "
                              "stack's; this stack needs 1") and "delete 1 of them" in message
    zone.handle("DELETE", f"/client/v4/zones/{zone.zone_id}/rulesets/{zone.rulesets[CUSTOM]['id']}/rules/"
                f"{zone.rulesets[CUSTOM]['rules'][0]['id']}", {}, None)
    assert record(mocks=CloudMocks(zones={"example.org": zone}))  # 4 of 5: room for this stack's one


def test_a_pro_zone_has_the_room_its_plan_gives() -> None:
    zone = CloudflareStandin(None, 0, "example.org", plan="pro")
    others_rules(zone, CUSTOM, 19)
    recording = record(mocks=CloudMocks(zones={"example.org": zone}))
    assert "http_request_sbfm" in rules(recording)["edge-matrix-unchallenged"]["action_parameters"]["phases"]
    others_rules(zone, CUSTOM, 20)
    assert "allows 20 WAF custom rules" in refused(mocks=CloudMocks(zones={"example.org": zone}))


def test_origin_pull_certificates_need_room_for_the_stacks_and_its_successor() -> None:
    zone = CloudflareStandin(None, 0, "example.org")
    others_certificates(zone, 9)
    message = refused(mocks=CloudMocks(zones={"example.org": zone}))
    assert "allows 10 per-hostname origin-pull certificates and 9 are not this stack's" in message
    zone.origin_pull_certificates.pop(next(iter(zone.origin_pull_certificates)))
    assert record(mocks=CloudMocks(zones={"example.org": zone}))


def test_five_stacks_fit_in_one_free_zone_and_a_later_up_does_not_count_its_own(zone: CloudflareStandin) -> None:
    """Each stack takes one of the zone's five WAF custom rules; each stack's rules and certificate are applied as
    `pulumi up` does (tests/e2e/engine.py) before the next one reads the zone. A sixth is refused before any
    resource, and the first one's next `up` still fits (its own rule and certificate are not counted)."""
    mocks = CloudMocks(zones={"example.org": zone})
    engines = []
    for n in range(5):
        recording = record({"domain": f"s{n}.example.org", "cloudflareZone": "example.org"}, mocks=mocks, stack=f"s{n}")
        engine = Engine(zone, recorded_credentials(recording))
        engine.up(recording, steps=())
        engines.append((engine, recording))
    assert len(zone.rules_of(CUSTOM)) == 5 and len(zone.origin_pull_certificates) == 5
    assert "allows 5 WAF custom rules and 5 are not this stack's" in refused(
        {"domain": "s5.example.org", "cloudflareZone": "example.org"}, mocks=mocks, stack="s5")
    again = record({"domain": "s0.example.org", "cloudflareZone": "example.org"}, mocks=mocks, stack="s0")
    engines[0][0].up(again, steps=())
    assert len(zone.rules_of(CUSTOM)) == 5


# -- credentials ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("credentials", "says"), [
    ({}, "config cloudflare:apiToken is required"),
    ({"cloudflare:apiToken": "too-short"}, "is not a Cloudflare API token"),
    ({"cloudflare:apiKey": "k" * 37}, "needs the account's e-mail"),
    ({"cloudflare:apiUserServiceKey": "v1.0-abc"}, "works for Origin CA certificates only"),
], ids=["none", "malformed-token", "key-without-email", "service-key-only"])
def test_cloudflare_credentials_the_providers_cannot_use_are_refused_before_any_resource(
    credentials: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL"):
        monkeypatch.delenv(variable, raising=False)
    assert says in refused(cloudflare_credentials=credentials)


def test_the_global_api_key_with_its_email_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    assert record(cloudflare_credentials={"cloudflare:apiKey": "k" * 37, "cloudflare:email": "ops@example.org"})
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "t" * 40)  # or the provider's environment variable
    assert record(cloudflare_credentials={})


def test_a_rule_cloudflare_would_refuse_stops_the_program_before_any_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules come from settings (names), so a bad one is a bug of the program's; it still stops before the droplet
    exists, with one line, rather than failing in the middle of `up`."""
    import dataclasses

    from components.cloud import edge, edge_rules

    made = edge_rules.edge_rules

    def with_a_bad_redirect(*args: Any) -> list[Any]:
        return [dataclasses.replace(r, action_parameters={"from_value": {"status_code": 200, "target_url": {"value": "/"}}})
                if r.key == "https-only" else r for r in made(*args)]

    monkeypatch.setattr(edge, "edge_rules", with_a_bad_redirect)
    message = refused()
    assert "a Cloudflare rule the API refuses (https-only: redirect status_code 200" in message
