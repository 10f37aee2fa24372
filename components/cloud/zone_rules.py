"""One Cloudflare rule, owned by one stack, in a zone whose rules are shared.

Cloudflare keeps at most one entry point ruleset per phase and zone (Cloudflare docs, "Phases"), and
the provider's `cloudflare.Ruleset` manages a whole entry point: a zone that already has rules in a
phase refuses it ("a similar configuration with rules already exists"), and two stacks in one zone
cannot both have one (pulumi/pulumi-cloudflare #782, terraform-provider-cloudflare #2588). The
Rulesets API itself adds, edits and deletes single rules of an entry point, so `ZoneRule` is a
Pulumi dynamic resource doing exactly that: it creates the entry point if the phase has none, adds
its own rule (identified by its `ref`), edits it in place, deletes only it, and leaves every other
rule of the phase (the user's, other stacks') alone.

The provider runs in the engine's process at `pulumi up`/`destroy`; it reads the API token from the
stack config (`cloudflare:apiToken`, the Cloudflare provider's own setting) or CLOUDFLARE_API_TOKEN,
through `configure` (pulumi/pulumi #17673), so the token never enters this resource's state.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import pulumi
from pulumi.dynamic import ConfigureRequest, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
# What a rule is made of; a change to any of them edits the rule in place.
RULE_FIELDS = ("ref", "description", "expression", "action", "action_parameters")
# A rule lives in one zone's phase: moving it is a new rule.
PLACE_FIELDS = ("zone_id", "phase")


class CloudflareApiError(RuntimeError):
    """A Rulesets API call failed; the message carries Cloudflare's own errors."""

    def __init__(self, status: int, method: str, path: str, errors: Any) -> None:
        super().__init__(f"Cloudflare API {method} {path}: HTTP {status}: {errors}")
        self.status = status


class ZoneRuleProvider(ResourceProvider):
    """Create, edit and delete one rule of a zone phase's entry point ruleset."""

    serialize_as_secret_always = False  # it captures no secret: the token comes from `configure`

    def __init__(self, api_base: str = CLOUDFLARE_API, token: str | None = None) -> None:
        super().__init__()
        self.api_base = api_base.rstrip("/")
        self.token = token

    def configure(self, req: ConfigureRequest) -> None:
        self.token = req.config.get("cloudflare:apiToken") or os.environ.get("CLOUDFLARE_API_TOKEN") or self.token

    # -- the API --------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if not self.token:
            raise CloudflareApiError(0, method, path, "no API token: set cloudflare:apiToken or CLOUDFLARE_API_TOKEN")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_base}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["result"]
        except urllib.error.HTTPError as error:
            try:
                errors = json.load(error).get("errors")
            except ValueError:
                errors = error.reason
            raise CloudflareApiError(error.code, method, path, errors) from None

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
    def _placed(ruleset: dict[str, Any], ref: str, props: dict[str, Any]) -> CreateResult:
        rule = next((r for r in ruleset.get("rules", []) if r.get("ref") == ref), None)
        if rule is None:
            raise CloudflareApiError(0, "?", f"rulesets/{ruleset.get('id')}", f"rule {ref} missing after the write")
        outs = {**props, "ruleset_id": ruleset["id"], "rule_id": rule["id"]}
        return CreateResult(id_=f"{ruleset['id']}/{rule['id']}", outs=outs)

    # -- the resource ---------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        zone, phase, ref = props["zone_id"], props["phase"], props["ref"]
        rule = self._rule(props)
        entry = self._entrypoint(zone, phase)
        if entry is None:  # the phase has no rules at all yet: its entry point starts with ours
            ruleset = self._call("PUT", f"/zones/{zone}/rulesets/phases/{phase}/entrypoint", {"rules": [rule]})
            return self._placed(ruleset, ref, props)
        mine = next((r for r in entry.get("rules", []) if r.get("ref") == ref), None)
        if mine is not None:  # left by an interrupted create or a lost state: take it over, edited
            ruleset = self._call("PATCH", f"/zones/{zone}/rulesets/{entry['id']}/rules/{mine['id']}", rule)
        else:  # first, so no rule of the user's before it can challenge what it lets through
            ruleset = self._call("POST", f"/zones/{zone}/rulesets/{entry['id']}/rules",
                                 {**rule, "position": {"index": 1}})
        return self._placed(ruleset, ref, props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in PLACE_FIELDS if olds.get(k) != news.get(k)]
        changes = replaces + [k for k in RULE_FIELDS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        ruleset_id, rule_id = olds["ruleset_id"], olds["rule_id"]
        self._call("PATCH", f"/zones/{news['zone_id']}/rulesets/{ruleset_id}/rules/{rule_id}", self._rule(news))
        return UpdateResult(outs={**news, "ruleset_id": ruleset_id, "rule_id": rule_id})

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
