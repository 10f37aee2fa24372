"""What the stack's Cloudflare rules match, read by the Rules-language model the edge stand-in uses."""

from __future__ import annotations

from typing import Any

import pytest

from components.cloud.edge_rules import RuleSpec, edge_rules
from components.settings import load
from tests.e2e.rules_language import RulesError, evaluate
from tests.harness import DEFAULT_CONFIG, config_strings

SETTINGS = load({k.split(":", 1)[1]: v for k, v in config_strings(DEFAULT_CONFIG).items()}, "prod")[0]
PROXIED = [SETTINGS.domain, SETTINGS.matrix_host, SETTINGS.chat_host]


def request(host: str = "matrix.example.org", path: str = "/_matrix/client/versions", scheme: str = "https",
            tls: str = "TLSv1.3", agent: str = "Synapse/1.163.2") -> dict[str, Any]:
    return {"http.host": host, "http.request.uri.path": path, "http.request.scheme": scheme,
            "ssl": scheme == "https", "cf.tls_version": tls if scheme == "https" else "", "http.user_agent": agent,
            "ip.src": "192.0.2.7"}


def rule(key: str, website: bool = False, plan: str = "free") -> RuleSpec:
    proxied = PROXIED[1:] if website else PROXIED
    return next(r for r in edge_rules(SETTINGS, proxied, website, plan) if r.key == key)


@pytest.mark.parametrize(("key", "fields", "matches"), [
    ("tls-strict", request(), True),
    ("tls-strict", request(host="www.example.org"), False),
    ("https-only", request(scheme="http"), True),
    ("https-only", request(), False),
    ("https-only", request(host="blog.example.org", scheme="http"), False),
    ("tls-floor", request(tls="TLSv1.1"), True),
    ("tls-floor", request(tls="TLSv1"), True),
    ("tls-floor", request(tls="TLSv1.2"), False),
    ("tls-floor", request(scheme="http"), False),
    ("tls-floor", request(host="blog.example.org", tls="TLSv1"), False),
    ("matrix-unchallenged", request(path="/_matrix/federation/v1/send/1"), True),
    ("matrix-unchallenged", request(host="example.org", path="/.well-known/matrix/server"), True),
    ("matrix-unchallenged", request(path="/_synapse/client/password_reset"), True),
    ("matrix-unchallenged", request(host="chat.example.org", path="/index.html"), False),
    ("matrix-unchallenged", request(tls="TLSv1.1"), False),  # old TLS is never let past the floor
    ("matrix-unchallenged", request(host="blog.example.org"), False),
], ids=lambda v: v if isinstance(v, (str, bool)) else None)
def test_each_rule_matches_the_stacks_own_requests_only(key: str, fields: dict[str, Any], matches: bool) -> None:
    assert bool(evaluate(rule(key).expression, fields)) is matches


def test_delegation_beside_a_website_redirects_only_matrix_well_known_to_the_homeserver() -> None:
    delegation = rule("delegation", website=True)
    assert evaluate(delegation.expression, request(host="example.org", path="/.well-known/matrix/server"))
    assert not evaluate(delegation.expression, request(host="example.org", path="/index.html"))
    assert not evaluate(delegation.expression, request(host="matrix.example.org", path="/.well-known/matrix/server"))
    target = delegation.action_parameters["from_value"]["target_url"]["expression"]
    assert evaluate(target, request(host="example.org", path="/.well-known/matrix/client")) == \
        "https://matrix.example.org/.well-known/matrix/client"
    # The website's own requests match none of the stack's other rules.
    for other in edge_rules(SETTINGS, PROXIED[1:], True, "free"):
        if other.key != "delegation":
            for website in (request(host="example.org", path="/"), request(host="example.org", scheme="http"),
                            request(host="example.org", tls="TLSv1")):
                assert not evaluate(other.expression, website), other.key


@pytest.mark.parametrize(("plan", "sbfm"), [("free", False), ("pro", True), ("business", True), ("enterprise", True)])
def test_super_bot_fight_mode_is_skipped_only_on_plans_that_have_it(plan: str, sbfm: bool) -> None:
    """A Free zone has no Super Bot Fight Mode (Cloudflare's plans table); whether its API accepts skipping it is
    not documented, so the skip rule names it only where the plan has it."""
    phases = rule("matrix-unchallenged", plan=plan).action_parameters["phases"]
    assert ("http_request_sbfm" in phases) is sbfm
    assert {"http_ratelimit", "http_request_firewall_managed"} <= set(phases)


def test_the_stack_uses_one_waf_custom_rule_and_marks_old_tls_with_a_header() -> None:
    """Several stacks fit in one Free zone's 5 WAF custom rules: a stack takes one (the skip); its TLS floor is
    a request header transform rule (10 on Free) that nginx acts on."""
    rules = edge_rules(SETTINGS, PROXIED, False, "free")
    assert [r.key for r in rules if r.phase == "http_request_firewall_custom"] == ["matrix-unchallenged"]
    floor = rule("tls-floor")
    assert floor.phase == "http_request_late_transform" and floor.action == "rewrite"
    assert floor.action_parameters == {"headers": {"x-matrix-stack-tls-refused": {"operation": "set", "value": "1"}}}


def test_the_model_refuses_what_it_does_not_know() -> None:
    with pytest.raises(RulesError):
        evaluate('(ip.src.country eq "FR")', request())
    with pytest.raises(RulesError):
        evaluate('(http.host matches "^x")', request())
