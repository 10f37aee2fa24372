"""ZoneRule's provider against the Cloudflare API stand-in over real HTTP: it owns exactly its one rule in a
zone phase that the user and other stacks share, safely while other writers write at the same time, and
the stand-in keeps the API's documented semantics (PUT of an entry point replaces its rules, one entry
point per phase, plan quotas, 404 for an unknown rule)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config

from components.cloud.cloudflare_api import CloudflareApiError
from components.cloud.zone_rules import RuleNotPlaced, ZoneRuleProvider
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import CLOUDFLARE_TOKEN

PHASE = "http_request_firewall_custom"
REDIRECT = "http_request_dynamic_redirect"


@pytest.fixture
def standin(zone_api: CloudflareStandin) -> CloudflareStandin:
    return zone_api
def create(p: ZoneRuleProvider, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The provider's create, as (id, outputs)."""
    result = p.create(props)
    assert result.outs is not None and result.id is not None
    return str(result.id), result.outs


def provider(standin: CloudflareStandin, **config: str) -> ZoneRuleProvider:
    """The provider as pulumi's dynamic provider host makes it: configured with the stack's config."""
    p = ZoneRuleProvider()
    p.configure(ConfigureRequest(Config({"cloudflare:apiToken": CLOUDFLARE_TOKEN, "cloudflare:baseUrl": standin.url,
                                         **config}, "matrix-stack")))
    return p


def props(standin: CloudflareStandin, ref: str, expression: str = '(http.host eq "matrix.example.org")',
          phase: str = PHASE, **extra: Any) -> dict[str, Any]:
    return {"zone_id": standin.zone_id, "phase": phase, "ref": ref, "description": f"rule {ref}",
            "expression": expression, "action": "skip", "action_parameters": {"ruleset": "current"}, **extra}


def redirect(standin: CloudflareStandin, ref: str) -> dict[str, Any]:
    return props(standin, ref, phase=REDIRECT, action="redirect", action_parameters={"from_value": {
        "status_code": 301, "target_url": {"expression": 'concat("https://", http.host)'}}})


def refs(standin: CloudflareStandin, phase: str = PHASE) -> list[str]:
    return [r["ref"] for r in standin.rules_of(phase)]


def users_rule(standin: CloudflareStandin) -> None:
    """The user's own rule, made in the dashboard before the stack existed."""
    provider(standin)._call("PUT", f"/zones/{standin.zone_id}/rulesets/phases/{PHASE}/entrypoint", {"rules": [
        {"ref": "users-challenge", "expression": "(http.host eq \"shop.example.org\")", "action": "managed_challenge"}]})


def test_the_first_rule_of_a_phase_creates_its_entry_point(standin: CloudflareStandin) -> None:
    rule_id, outs = create(provider(standin), props(standin, "prod-skip"))
    assert refs(standin) == ["prod-skip"]
    assert rule_id == f"{outs['ruleset_id']}/{outs['rule_id']}"
    assert "PUT" not in " ".join(c.split()[0] for c in standin.calls)  # no rule list is ever replaced


def test_rules_created_at_the_same_time_in_a_phase_without_entry_point_all_remain(standin: CloudflareStandin) -> None:
    """The engine creates independent resources at once: two rules of one phase (https-only and delegation),
    or two stacks. Each finds no entry point; a PUT of each one's own rule would leave only the last."""
    standin.latency = 0.2  # the Internet's round trip: both reads happen before either write
    start = threading.Barrier(4)  # the three creators and this test
    errors: list[BaseException] = []

    def make(ref: str) -> None:
        start.wait()
        try:
            create(provider(standin), redirect(standin, ref))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=make, args=(ref,)) for ref in ("prod-https-only", "prod-delegation", "dev-https-only")]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(refs(standin, REDIRECT)) == ["dev-https-only", "prod-delegation", "prod-https-only"]


def test_a_write_that_did_not_stick_fails_instead_of_reporting_success(
    standin: CloudflareStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read back after the write: a concurrent writer that replaced the phase's rules (a user's PUT) right after
    the stack added its rule is noticed, and the `up` fails saying so."""
    users_rule(standin)
    original = standin.handle

    def then_replaced(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        answer = original(method, path, query, body)
        if method == "POST" and path.endswith("/rules"):  # someone else's PUT of the old list lands right after
            original("PUT", f"/client/v4/zones/{standin.zone_id}/rulesets/phases/{PHASE}/entrypoint", {}, {"rules": [
                {"ref": "users-challenge", "expression": "(http.host eq \"shop.example.org\")",
                 "action": "managed_challenge"}]})
        return answer

    monkeypatch.setattr(standin, "handle", then_replaced)
    with pytest.raises(RuleNotPlaced, match="prod-skip is not in phase"):
        provider(standin).create(props(standin, "prod-skip"))


def test_rules_of_the_user_and_of_other_stacks_are_kept_and_ours_go_first(standin: CloudflareStandin) -> None:
    users_rule(standin)
    _, prod = create(provider(standin), props(standin, "prod-skip"))
    dev_id, dev = create(provider(standin), props(standin, "dev-skip", '(http.host eq "matrix.chat-dev.example.org")'))
    assert refs(standin) == ["dev-skip", "prod-skip", "users-challenge"]

    provider(standin).delete(dev_id, dev)  # `pulumi destroy` of the dev stack
    assert refs(standin) == ["prod-skip", "users-challenge"]
    kept = {r["ref"]: r for r in standin.rules_of(PHASE)}
    assert kept["prod-skip"]["id"] == prod["rule_id"] and kept["users-challenge"]["action"] == "managed_challenge"


def test_an_edit_changes_the_rule_in_place(standin: CloudflareStandin) -> None:
    users_rule(standin)
    p = provider(standin)
    rule_id, before = create(p, props(standin, "prod-skip"))
    after = props(standin, "prod-skip", '(http.host eq "matrix.example.org" and ssl)')
    diff = p.diff(rule_id, before, after)
    assert diff.changes and not diff.replaces
    p.update(rule_id, before, after)
    (rule, users) = standin.rules_of(PHASE)
    assert rule["id"] == before["rule_id"] and rule["expression"].endswith("and ssl)")
    assert users["ref"] == "users-challenge"
    assert not p.diff(rule_id, before, {**before}).changes
    assert p.diff(rule_id, before, {**before, "phase": "http_config_settings"}).replaces == ["phase"]


def test_refresh_notices_a_rule_deleted_or_edited_in_the_dashboard(standin: CloudflareStandin) -> None:
    p = provider(standin)
    rule_id, outs = create(p, props(standin, "prod-skip"))
    dashboard = provider(standin)
    entry = standin.rulesets[PHASE]["id"]
    dashboard._call("PATCH", f"/zones/{standin.zone_id}/rulesets/{entry}/rules/{outs['rule_id']}", {
        "ref": "prod-skip", "expression": '(http.host eq "matrix.example.org")', "action": "block"})
    edited = p.read(rule_id, outs)
    assert edited.id == rule_id and edited.outs is not None and edited.outs["action"] == "block"
    assert p.diff(rule_id, edited.outs, props(standin, "prod-skip")).changes  # the next `up` puts it back

    dashboard._call("DELETE", f"/zones/{standin.zone_id}/rulesets/{entry}/rules/{outs['rule_id']}")
    gone = p.read(rule_id, outs)
    assert not gone.id  # the engine drops it from the state; the next `up` creates it again


def test_an_edit_of_a_rule_deleted_in_the_dashboard_puts_it_back(standin: CloudflareStandin) -> None:
    p = provider(standin)
    rule_id, before = create(p, props(standin, "prod-skip"))
    provider(standin)._call("DELETE", f"/zones/{standin.zone_id}/rulesets/{before['ruleset_id']}/rules/{before['rule_id']}")
    after = props(standin, "prod-skip", '(http.host eq "matrix.example.org" and ssl)')
    outs = p.update(rule_id, before, after).outs
    assert outs is not None and refs(standin) == ["prod-skip"]
    assert standin.rules_of(PHASE)[0]["expression"].endswith("and ssl)") and outs["rule_id"] == standin.rules_of(PHASE)[0]["id"]


def test_a_rule_left_by_an_interrupted_create_is_taken_over_not_duplicated(standin: CloudflareStandin) -> None:
    p = provider(standin)
    create(p, props(standin, "prod-skip"))
    _, again = create(p, props(standin, "prod-skip", '(http.host eq "chat.example.org")'))  # state lost, `up` again
    assert refs(standin) == ["prod-skip"]
    assert standin.rules_of(PHASE)[0]["expression"] == '(http.host eq "chat.example.org")'
    assert again["rule_id"] == standin.rules_of(PHASE)[0]["id"]


def test_deleting_a_rule_that_is_already_gone_succeeds(standin: CloudflareStandin) -> None:
    p = provider(standin)
    rule_id, outs = create(p, props(standin, "prod-skip"))
    p.delete(rule_id, outs)
    p.delete(rule_id, outs)  # deleted by hand meanwhile: destroy still completes
    assert refs(standin) == []


@pytest.mark.parametrize(("change", "says"), [
    ({"phase": "http_request_origin"}, "phase 'http_request_origin' is not one the stack writes to"),
    ({"action": "log", "action_parameters": {}}, "action 'log' does not run in http_request_firewall_custom"),
    ({"expression": '(http.host eq "matrix.example.org"'}, "unbalanced"),
    ({"expression": ""}, "expression is empty"),
    ({"action_parameters": {"ruleset": "current", "phases": ["http_request_firewall_custom"]}},
     "phase 'http_request_firewall_custom' cannot be skipped"),
    ({"action_parameters": {"products": ["botFightMode"]}}, "product 'botFightMode' cannot be skipped"),
    ({"phase": REDIRECT, "action": "redirect", "action_parameters": {"from_value": {
        "status_code": 200, "target_url": {"value": "https://example.org/"}}}}, "status_code 200"),
], ids=["phase", "action", "expression", "empty", "skip-phase", "skip-product", "redirect-code"])
def test_check_refuses_a_rule_cloudflare_would_refuse(standin: CloudflareStandin, change: dict[str, Any],
                                                      says: str) -> None:
    result = provider(standin).check({}, {**props(standin, "prod-skip"), **change})
    assert len(result.failures) == 1 and says in result.failures[0].reason, [f.reason for f in result.failures]
    assert not provider(standin).check({}, props(standin, "prod-skip")).failures


def test_the_global_api_key_with_its_email_authenticates_as_the_provider_does(standin: CloudflareStandin) -> None:
    p = provider(standin, **{"cloudflare:apiToken": "", "cloudflare:apiKey": "k" * 37, "cloudflare:email": "o@example.org"})
    create(p, props(standin, "prod-skip"))
    assert refs(standin) == ["prod-skip"]


def test_missing_credentials_are_named(standin: CloudflareStandin) -> None:
    p = provider(standin, **{"cloudflare:apiToken": ""})
    with pytest.raises(CloudflareApiError, match="no Cloudflare credentials: set cloudflare:apiToken"):
        p.create(props(standin, "prod-skip"))


# -- the stand-in's own semantics, which the provider relies on ----------------------------------------------
def test_the_stand_in_replaces_an_entry_points_rules_on_put_and_refuses_a_second_entry_point(
    standin: CloudflareStandin
) -> None:
    users_rule(standin)
    create(provider(standin), props(standin, "prod-skip"))
    assert refs(standin) == ["prod-skip", "users-challenge"]
    status, _ = standin.handle("PUT", f"/client/v4/zones/{standin.zone_id}/rulesets/phases/{PHASE}/entrypoint", {},
                               {"rules": [{"ref": "only", "expression": "(ssl)", "action": "block"}]})
    assert status == 200 and refs(standin) == ["only"]
    status, error = standin.handle("POST", f"/client/v4/zones/{standin.zone_id}/rulesets", {},
                                   {"kind": "zone", "phase": PHASE, "name": "default", "rules": []})
    assert status == 400 and error["code"] == 20217


def test_the_stand_in_enforces_the_plans_quota_and_what_a_free_zone_can_skip(standin: CloudflareStandin) -> None:
    p = provider(standin)
    for n in range(5):
        create(p, props(standin, f"stack{n}-skip"))
    with pytest.raises(CloudflareApiError, match="quota of 5 rules in phase http_request_firewall_custom"):
        create(p, props(standin, "stack5-skip"))
    with pytest.raises(CloudflareApiError, match="cannot be skipped on the free plan"):
        first = next(r for r in standin.rules_of(PHASE) if r["ref"] == "stack0-skip")
        p.update("x", {"ruleset_id": standin.rulesets[PHASE]["id"], "rule_id": first["id"]},
                 props(standin, "stack0-skip", action_parameters={"phases": ["http_request_sbfm"]}))
    standin.plan = "pro"
    create(p, props(standin, "stack5-skip", action_parameters={"phases": ["http_request_sbfm"]}))
