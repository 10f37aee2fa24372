"""What Cloudflare accepts in one ruleset rule, checked before any resource exists.

A rule the API refuses would otherwise fail `pulumi up` halfway, after the droplet exists. The checks:
the phase is an entry-point phase the stack writes to; the action is one that phase runs (Cloudflare
docs, "Phases list", each product's "actions" page); the expression is non-empty, at most 4,096
characters ("Rules language: Expressions"), with balanced parentheses, braces and quotes; the action's
parameters are the ones it takes, with their allowed values (terraform-provider-cloudflare
internal/services/ruleset/schema.go: redirect status codes, configuration settings, header operations;
Cloudflare docs "Available skip options": `ruleset: current`, the skippable phases and products).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PHASE_ACTIONS: dict[str, tuple[str, ...]] = {
    "http_request_firewall_custom": ("block", "challenge", "js_challenge", "managed_challenge", "skip"),
    "http_request_dynamic_redirect": ("redirect",),
    "http_config_settings": ("set_config",),
    "http_request_late_transform": ("rewrite",),
}
SKIPPABLE_PHASES = ("http_ratelimit", "http_request_firewall_managed", "http_request_sbfm")
SKIPPABLE_PRODUCTS = ("zoneLockdown", "uaBlock", "bic", "hot", "securityLevel", "rateLimit", "waf")
REDIRECT_STATUS_CODES = (301, 302, 303, 307, 308)
CONFIG_SETTINGS: dict[str, tuple[Any, ...]] = {
    "ssl": ("off", "flexible", "full", "strict", "origin_pull"),
    "security_level": ("off", "essentially_off", "low", "medium", "high", "under_attack"),
    "bic": (True, False),
    "hotlink_protection": (True, False),
}
HEADER_OPERATIONS = ("set", "add", "remove")
MAX_EXPRESSION = 4096


def _balanced(expression: str) -> bool:
    depth: list[str] = []
    quoted = escaped = False
    for char in expression:
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
            continue
        if char == '"':
            quoted = True
        elif char in "({":
            depth.append(")" if char == "(" else "}")
        elif char in ")}" and (not depth or depth.pop() != char):
            return False
    return not depth and not quoted


def _skip_problems(params: Mapping[str, Any]) -> list[str]:
    problems = [f"skip takes ruleset, phases and products, not {k}" for k in params if k not in
                ("ruleset", "phases", "products")]
    if not params:
        problems.append("skip needs what to skip (ruleset, phases or products)")
    if params.get("ruleset", "current") != "current":
        problems.append(f"skip's ruleset must be \"current\", not {params['ruleset']!r}")
    problems += [f"phase {p!r} cannot be skipped (only {', '.join(SKIPPABLE_PHASES)})"
                 for p in params.get("phases") or () if p not in SKIPPABLE_PHASES]
    problems += [f"product {p!r} cannot be skipped (only {', '.join(SKIPPABLE_PRODUCTS)})"
                 for p in params.get("products") or () if p not in SKIPPABLE_PRODUCTS]
    return problems


def _redirect_problems(params: Mapping[str, Any]) -> list[str]:
    from_value = params.get("from_value")
    if set(params) != {"from_value"} or not isinstance(from_value, Mapping):
        return ["redirect takes from_value"]
    problems = []
    if from_value.get("status_code", 301) not in REDIRECT_STATUS_CODES:
        problems.append(f"redirect status_code {from_value.get('status_code')!r} is not one of {REDIRECT_STATUS_CODES}")
    target = from_value.get("target_url") or {}
    if ("value" in target) == ("expression" in target):
        problems.append("redirect target_url needs exactly one of value and expression")
    return problems


def _config_problems(params: Mapping[str, Any]) -> list[str]:
    if not params:
        return ["set_config needs at least one setting"]
    return [f"setting {key}={value!r} is not one of {CONFIG_SETTINGS.get(key, ())}" for key, value in params.items()
            if value not in CONFIG_SETTINGS.get(key, ())]


def _rewrite_problems(params: Mapping[str, Any]) -> list[str]:
    headers = params.get("headers")
    if set(params) != {"headers"} or not isinstance(headers, Mapping) or not headers:
        return ["rewrite (late transform) takes headers"]
    problems = []
    for name, change in headers.items():
        if name.lower().startswith("cf-"):
            problems.append(f"header {name} cannot be changed (cf- headers are Cloudflare's)")
        if not isinstance(change, Mapping) or change.get("operation") not in HEADER_OPERATIONS:
            problems.append(f"header {name} needs an operation of {HEADER_OPERATIONS}")
        elif change["operation"] != "remove" and ("value" in change) == ("expression" in change):
            problems.append(f"header {name} needs exactly one of value and expression")
    return problems


PARAMETER_CHECKS = {"skip": _skip_problems, "redirect": _redirect_problems, "set_config": _config_problems,
                    "rewrite": _rewrite_problems}


def rule_problems(phase: str, action: str, expression: str, action_parameters: Mapping[str, Any] | None) -> list[str]:
    """Why Cloudflare would refuse this rule ([] when it would take it)."""
    if phase not in PHASE_ACTIONS:
        return [f"phase {phase!r} is not one the stack writes to ({', '.join(PHASE_ACTIONS)})"]
    problems = []
    if action not in PHASE_ACTIONS[phase]:
        problems.append(f"action {action!r} does not run in {phase} (only {', '.join(PHASE_ACTIONS[phase])})")
    if not isinstance(expression, str) or not expression.strip():
        problems.append("expression is empty")
    elif len(expression) > MAX_EXPRESSION:
        problems.append(f"expression is {len(expression)} characters, over Cloudflare's {MAX_EXPRESSION}")
    elif not _balanced(expression):
        problems.append(f"expression has unbalanced parentheses, braces or quotes: {expression}")
    params = action_parameters or {}
    check = PARAMETER_CHECKS.get(action)
    if check is not None:
        problems += check(params)
    elif params:
        problems.append(f"action {action} takes no action_parameters")
    return problems
