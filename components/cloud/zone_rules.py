"""One Cloudflare rule, owned by one stack, in a zone whose rules are shared.

Cloudflare keeps at most one entry point ruleset per phase and zone (Cloudflare docs, "Phases"), and
the provider's `cloudflare.Ruleset` manages a whole entry point: a zone that already has rules in a
phase refuses it (API error 20217, "exceeded maximum number of zone rulesets for phase"), and two stacks
in one zone cannot both have one (pulumi/pulumi-cloudflare #782, terraform-provider-cloudflare #2588).
The Rulesets API itself adds, edits and deletes single rules of an entry point, so `ZoneRule` is a
Pulumi dynamic resource doing exactly that, and leaving every other rule of the phase (the user's,
other stacks', its own stack's other rules) alone.

Safe under the engine's parallelism, which creates independent resources at the same time (two rules
of one phase, two stacks): no write ever replaces a rule list. A PUT of an entry point replaces all its
rules ("include in the request all rules you want to keep"), so two creators that both found no entry
point would each PUT only their own rule and one would vanish. Instead a phase's entry point is created
with POST /rulesets, which Cloudflare refuses (20217) once one exists; the loser adds its rule to the
winner's with POST .../rules, which adds one rule and keeps the rest. After every write the rule is
read back by its `ref` and compared, so a write that did not stick fails the `up`.

`read` finds the rule by ref (`pulumi refresh` notices one deleted or edited in the dashboard); `update`
re-creates a rule that has gone; `check` refuses a rule Cloudflare would refuse (rule_checks.py) before
any resource is created. Credentials come from `configure` (cloudflare_api.py), never from the state.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from components.cloud.cloudflare_api import CloudflareApiError, CloudflareProvider
from components.cloud.rule_checks import rule_problems

# What a rule is made of; a change to any of them edits the rule in place.
RULE_FIELDS = ("ref", "description", "expression", "action", "action_parameters")
# A rule lives in one zone's phase: moving it is a new rule.
PLACE_FIELDS = ("zone_id", "phase")
ENTRY_POINT_EXISTS = 20217  # POST /rulesets of a second zone ruleset for a phase
ENTRY_POINT_NAME = "default"  # what Cloudflare names an entry point the dashboard creates


class RuleNotPlaced(RuntimeError):
    """A write returned, but reading the phase back does not show the rule as written."""


class ZoneRuleProvider(CloudflareProvider):
    """Create, read, edit and delete one rule of a zone phase's entry point ruleset."""

    def _entrypoint(self, zone_id: str, phase: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", f"/zones/{zone_id}/rulesets/phases/{phase}/entrypoint")
            return result
        except CloudflareApiError as error:
            if error.status == 404:
                return None
            raise

    @staticmethod
    def _rule(props: dict[str, Any]) -> dict[str, Any]:
        rule = {key: props[key] for key in RULE_FIELDS if props.get(key) not in (None, {}, "")}
        rule["enabled"] = True
        return rule

    @staticmethod
    def _find(ruleset: dict[str, Any] | None, ref: str) -> dict[str, Any] | None:
        return next((r for r in (ruleset or {}).get("rules", []) if r.get("ref") == ref), None)

    def _placed(self, props: dict[str, Any]) -> dict[str, Any]:
        """The outputs of the rule as the phase now holds it, read back; RuleNotPlaced if it is not there as
        written."""
        entry = self._entrypoint(props["zone_id"], props["phase"])
        rule = self._find(entry, props["ref"])
        wanted = self._rule(props)
        if entry is None or rule is None or any(rule.get(k) != v for k, v in wanted.items()):
            raise RuleNotPlaced(f"rule {props['ref']} is not in phase {props['phase']} as written after the write "
                                "(another writer replaced the phase's rules at the same time?); run `pulumi up` again")
        return {**props, "ruleset_id": entry["id"], "rule_id": rule["id"]}

    def _write(self, props: dict[str, Any]) -> dict[str, Any]:
        """Put the rule into its phase: take over one with its ref, else add it first, creating the entry point
        if the phase has none. Never replaces the phase's rule list."""
        zone, phase, rule = props["zone_id"], props["phase"], self._rule(props)
        entry = self._entrypoint(zone, phase)
        if entry is None:
            try:
                self._call("POST", f"/zones/{zone}/rulesets", {"kind": "zone", "phase": phase,
                                                                "name": ENTRY_POINT_NAME, "rules": [rule]})
                return self._placed(props)
            except CloudflareApiError as error:
                if error.code != ENTRY_POINT_EXISTS:
                    raise
            entry = self._entrypoint(zone, phase)  # someone created it meanwhile: add to theirs
            if entry is None:
                raise RuleNotPlaced(f"phase {phase} has an entry point that cannot be read")
        mine = self._find(entry, props["ref"])
        if mine is not None:  # left by an interrupted create or a lost state: take it over, edited
            self._call("PATCH", f"/zones/{zone}/rulesets/{entry['id']}/rules/{mine['id']}", rule)
        else:  # first, so no rule of the user's before it can challenge what it lets through
            self._call("POST", f"/zones/{zone}/rulesets/{entry['id']}/rules", {**rule, "position": {"index": 1}})
        return self._placed(props)

    # -- the resource ---------------------------------------------------------------------------
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        problems = rule_problems(news.get("phase", ""), news.get("action", ""), news.get("expression", ""),
                                 news.get("action_parameters"))
        return CheckResult(news, [CheckFailure("action_parameters", f"rule {news.get('ref')}: {p}") for p in problems])

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._write(props)
        return CreateResult(id_=f"{outs['ruleset_id']}/{outs['rule_id']}", outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """The rule as Cloudflare now has it, found by ref; gone (no id) when the phase no longer holds it."""
        rule = self._find(self._entrypoint(props["zone_id"], props["phase"]), props["ref"])
        if rule is None:
            return ReadResult(None, {})
        current = {key: rule.get(key, {} if key == "action_parameters" else "") for key in RULE_FIELDS}
        ruleset_id = id_.split("/", 1)[0]
        return ReadResult(f"{ruleset_id}/{rule['id']}", {**props, **current, "rule_id": rule["id"]})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in PLACE_FIELDS if olds.get(k) != news.get(k)]
        changes = replaces + [k for k in RULE_FIELDS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Edit the rule in place; if it has gone (deleted in the dashboard, its ruleset too), put it back."""
        try:
            self._call("PATCH", f"/zones/{news['zone_id']}/rulesets/{olds['ruleset_id']}/rules/{olds['rule_id']}",
                       self._rule(news))
        except CloudflareApiError as error:
            if error.status != 404:
                raise
            return UpdateResult(outs=self._write(news))
        return UpdateResult(outs=self._placed(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            self._call("DELETE", f"/zones/{props['zone_id']}/rulesets/{props['ruleset_id']}/rules/{props['rule_id']}")
        except CloudflareApiError as error:
            if error.status != 404:  # already gone (deleted by hand): nothing left to do
                raise


class ZoneRule(Resource):
    """One rule in `phase` of the zone, identified by `ref` (unique per stack and purpose)."""

    ruleset_id: pulumi.Output[str]
    rule_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        zone_id: pulumi.Input[str],
        phase: str,
        ref: str,
        description: str,
        expression: str,
        action: str,
        action_parameters: dict[str, Any] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(ZoneRuleProvider(), name, {
            "zone_id": zone_id, "phase": phase, "ref": ref, "description": description,
            "expression": expression, "action": action, "action_parameters": action_parameters or {},
            "ruleset_id": None, "rule_id": None,
        }, opts)
