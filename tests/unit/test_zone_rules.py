"""ZoneRule's provider against the Cloudflare API stand-in over real HTTP: it owns exactly its one rule
in a zone phase that the user and other stacks share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config

from components.cloud.zone_rules import CloudflareApiError, ZoneRuleProvider
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin

PHASE = "http_request_firewall_custom"


@pytest.fixture
def standin() -> Iterator[CloudflareStandin]:
    server = CloudflareStandin("127.0.0.1", 0, "example.org", "http://127.0.0.1:9")  # no TXT records here
    server.start()
    try:
        yield server
    finally:
        server.stop()


def create(p: ZoneRuleProvider, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The provider's create, as (id, outputs)."""
    result = p.create(props)
    assert result.outs is not None and result.id is not None
    return str(result.id), result.outs


def provider(standin: CloudflareStandin, token: str | None = "test-token") -> ZoneRuleProvider:
    return ZoneRuleProvider(api_base=standin.url, token=token)


def props(standin: CloudflareStandin, ref: str, expression: str = '(http.host eq "matrix.example.org")',
          **extra: Any) -> dict[str, Any]:
    return {"zone_id": standin.zone_id, "phase": PHASE, "ref": ref, "description": f"rule {ref}",
            "expression": expression, "action": "skip", "action_parameters": {"ruleset": "current"}, **extra}


def refs(standin: CloudflareStandin) -> list[str]:
    return [r["ref"] for r in standin.rules_of(PHASE)]


def users_rule(standin: CloudflareStandin) -> None:
    """The user's own rule, made in the dashboard before the stack existed."""
    provider(standin)._call("PUT", f"/zones/{standin.zone_id}/rulesets/phases/{PHASE}/entrypoint", {"rules": [
        {"ref": "users-challenge", "expression": "(cf.threat_score gt 10)", "action": "managed_challenge"}]})


def test_the_first_rule_of_a_phase_creates_its_entry_point(standin: CloudflareStandin) -> None:
    rule_id, outs = create(provider(standin), props(standin, "prod-skip"))
    assert refs(standin) == ["prod-skip"]
    assert rule_id == f"{outs['ruleset_id']}/{outs['rule_id']}"


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


def test_the_token_comes_from_the_stack_config_and_its_absence_is_named(standin: CloudflareStandin) -> None:
    p = provider(standin, token=None)
    with pytest.raises(CloudflareApiError, match="no API token: set cloudflare:apiToken"):
        p.create(props(standin, "prod-skip"))
    p.configure(ConfigureRequest(Config({"cloudflare:apiToken": "from-config"}, "matrix-stack")))
    assert p.token == "from-config"
    p.create(props(standin, "prod-skip"))
    assert refs(standin) == ["prod-skip"]
