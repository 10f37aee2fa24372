"""The Cloudflare rules a stack needs for its own names, and only for them.

The zone is shared with the user's other sites, so nothing is set zone-wide (SSL mode, Always Use
HTTPS, minimum TLS are zone settings that would change every site). Each is a rule scoped to the
stack's proxied names instead (rules language, Cloudflare docs "Rules language"):

- tls-strict (configuration rule): SSL Full (strict) to the origin for our names.
- https-only (single redirect): plain HTTP on our names goes to HTTPS.
- tls-floor (request header transform rule): a request on our names that came in over TLS 1.0/1.1 gets
  the header TLS_REFUSED_HEADER, and nginx answers it 403 (templates/nginx/tls.conf.j2). The
  per-hostname minimum TLS setting needs Advanced Certificate Manager, and a WAF custom rule would use
  one of the 5 a Free zone has (Cloudflare's plans table), which several stacks in one zone share; a
  transform rule (10 on Free) does it on every plan. Cloudflare sets the header itself, overwriting a
  client's own.
- matrix-unchallenged (WAF custom rule, skip): /_matrix, /_synapse/client and /.well-known/matrix on
  our names (and the server checks' status page, paths.HEALTH_STATUS_PATH) skip the remaining custom
  rules, rate limiting, managed rules, Super Bot Fight Mode (where the plan has it: not on Free) and the
  older security products (Browser Integrity Check, Security Level, ...), so other homeservers and
  clients are never challenged. The stack's only custom rule.
- delegation (single redirect, only when a website owns the server name): /.well-known/matrix/* on
  the server name goes to the homeserver's name, which serves the same files; Synapse follows
  redirects for .well-known (the spec says servers should), the website itself is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from components.paths import HEALTH_STATUS_PATH, RTC_PUBLIC_PATH
from components.settings import Settings

CONFIG_PHASE = "http_config_settings"
REDIRECT_PHASE = "http_request_dynamic_redirect"
CUSTOM_PHASE = "http_request_firewall_custom"
HEADER_PHASE = "http_request_late_transform"
# Set by Cloudflare on requests of our names below TLS 1.2; nginx refuses them (a constant: it names an
# nginx variable, lower-case letters and dashes only).
TLS_REFUSED_HEADER = "x-matrix-stack-tls-refused"
# Every phase the stack writes rules to (zone.py counts the zone's other rules in them).
STACK_PHASES = (CONFIG_PHASE, REDIRECT_PHASE, CUSTOM_PHASE, HEADER_PHASE)
MODERN_TLS = '{"TLSv1.2" "TLSv1.3"}'
# Matrix traffic, and the status page of the server's own checks that DigitalOcean's uptime checkers read.
MATRIX_PATHS = ("/_matrix/", "/_synapse/client/", "/.well-known/matrix/", HEALTH_STATUS_PATH)
# Everything a skip rule can skip besides Bot Fight Mode (Cloudflare docs "Available skip options";
# Bot Fight Mode cannot be skipped, so Edge turns it off). Super Bot Fight Mode's phase only on the plans
# that have it (Pro and up, Cloudflare's plans table): the docs do not say whether a Free zone accepts
# skipping a product it does not have, so the stack does not ask.
SKIPPED_PHASES = ["http_ratelimit", "http_request_firewall_managed"]
SBFM_PHASE = "http_request_sbfm"
SBFM_PLANS = ("pro", "business", "enterprise")
SKIPPED_PRODUCTS = ["zoneLockdown", "uaBlock", "bic", "hot", "securityLevel"]


@dataclass(frozen=True)
class RuleSpec:
    """One rule: `key` names it within the stack (resource name and ref suffix)."""

    key: str
    phase: str
    description: str
    expression: str
    action: str
    action_parameters: dict[str, Any] = field(default_factory=dict)


def _quoted(names: Sequence[str]) -> str:
    """A rules-language set of host names (validated DNS names: nothing to escape)."""
    return "{" + " ".join(f'"{n}"' for n in names) + "}"


def _paths(prefixes: Sequence[str]) -> str:
    return "(" + " or ".join(f'starts_with(http.request.uri.path, "{p}")' for p in prefixes) + ")"


def edge_rules(settings: Settings, proxied: Sequence[str], delegate: bool, plan: str) -> list[RuleSpec]:
    """The rules for the stack's proxied names (the server name is among them unless a website owns it);
    `delegate`: redirect the server name's /.well-known/matrix/ to the homeserver's name; `plan`: the
    zone's plan (its legacy id: free, pro, business, enterprise)."""
    hosts = _quoted(proxied)
    skipped_phases = [*SKIPPED_PHASES, *([SBFM_PHASE] if plan in SBFM_PLANS else [])]
    # matrixRtc: the token service and the SFU's WebSocket are called by the same clients as the Matrix API.
    unchallenged = [*MATRIX_PATHS, *([RTC_PUBLIC_PATH] if settings.matrix_rtc else [])]
    rules = [
        RuleSpec("tls-strict", CONFIG_PHASE, "matrix-stack: SSL Full (strict) to the origin",
                 f"(http.host in {hosts})", "set_config", {"ssl": "strict"}),
        RuleSpec("https-only", REDIRECT_PHASE, "matrix-stack: HTTPS only",
                 f"(http.host in {hosts} and not ssl)", "redirect",
                 {"from_value": {"status_code": 301, "preserve_query_string": True,
                                 "target_url": {"expression": 'concat("https://", http.host, http.request.uri.path)'}}}),
        RuleSpec("tls-floor", HEADER_PHASE, "matrix-stack: TLS 1.2 or newer (nginx refuses the marked requests)",
                 f"(http.host in {hosts} and ssl and not cf.tls_version in {MODERN_TLS})", "rewrite",
                 {"headers": {TLS_REFUSED_HEADER: {"operation": "set", "value": "1"}}}),
        RuleSpec("matrix-unchallenged", CUSTOM_PHASE, "matrix-stack: never challenge Matrix clients and servers",
                 f"(http.host in {hosts} and {_paths(unchallenged)} and cf.tls_version in {MODERN_TLS})", "skip",
                 {"ruleset": "current", "phases": skipped_phases, "products": SKIPPED_PRODUCTS}),
    ]
    if delegate:
        rules.append(RuleSpec(
            "delegation", REDIRECT_PHASE, "matrix-stack: Matrix delegation beside the website",
            f'(http.host eq "{settings.domain}" and {_paths(["/.well-known/matrix/"])})', "redirect",
            {"from_value": {"status_code": 302, "preserve_query_string": False,
                            "target_url": {"expression": f'concat("https://{settings.matrix_host}", http.request.uri.path)'}}}))
    return rules
