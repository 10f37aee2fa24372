"""A stand-in of the Cloudflare v4 API for one zone: what certbot's dns-cloudflare plugin, the Cloudflare
provider (as tests/cloud_apply.py drives it) and the program's own dynamic providers call, with the
semantics Cloudflare documents, and the zone state the edge stand-in (tests/e2e/edge.py) serves from.

It is as strict as the real API where the program depends on it (each rule names its source):
- Rulesets (Cloudflare docs, "Rulesets API", "Add rules to phase entry point rulesets", "Rule position
  values"): one `kind: zone` entry point per phase. POST /rulesets of a second one is refused with
  code 20217 (as seen from the API in terraform-provider-cloudflare #6273). PUT of an entry point or a
  ruleset replaces its whole rule list ("include in the request all rules you want to keep... or else
  they will be removed") and creates a missing entry point. POST .../rules adds one rule (position
  `index` from 1, `before`/`after` a rule id; an index past the end is 400). PATCH .../rules/<id>
  replaces the rule's definition (fields left out are not kept; a body of only `position` moves it).
  An unknown ruleset or rule is 404. Every change increments the ruleset's `version`.
- Plan quotas (Cloudflare's plans table): rules per phase by plan (WAF custom rules 5 on Free);
  10 per-hostname origin-pull certificates per zone, 100 hostnames per certificate. Over a quota the
  write is refused (the real error code is undocumented: this one says what was exceeded).
- What a rule may be (Cloudflare docs, "Phases", "Available skip options", "Custom rules actions"): the
  actions each phase allows, skip options (`ruleset: current`; `phases` only http_ratelimit,
  http_request_firewall_managed and, on plans with Super Bot Fight Mode, http_request_sbfm; the seven
  `products`), redirect status codes, configuration settings, header rewrites; an expression the
  rules-language model cannot read is refused.
- Bot management (API reference, "Update Zone Bot Management Config"): PUT changes the fields it names
  and leaves the others; unknown fields and values outside each field's set are refused.
- Per-hostname Authenticated Origin Pulls (API reference, "Per-hostname Authenticated Origin Pull"):
  certificates are uploaded as `pending_deployment` and become `active` after `deployment_seconds`;
  hostname associations (PUT .../hostnames, `enabled: null` voids one) likewise; only an active
  association of an active certificate is presented to the origin.
- Authentication: `Authorization: Bearer <token>` or `X-Auth-Email` + `X-Auth-Key` (the Global API key);
  anything else is 403 (code 9109).

certbot's calls, through Debian's python3-cloudflare 2.11 (certbot_dns_cloudflare/_internal/dns_cloudflare.py):
  GET    zones?name=<candidate>&per_page=1      the zone of the configured domain, [] for other names
  POST   zones/<id>/dns_records                 {type, name, content, ttl}; TXT goes to challtestsrv
  GET    zones/<id>/dns_records?type=TXT&name=..&content=..&per_page=1
  DELETE zones/<id>/dns_records/<record id>     TXT is withdrawn from challtestsrv

`bind=None` makes a stand-in without an HTTP server: the zone's state and `handle()`, which the mocks
use to answer the provider's functions (tests/harness.py). Everything else answers 404 in Cloudflare's
error format.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.e2e.rules_language import RulesError, evaluate

API = "/client/v4"

# Rules per zone and phase, by plan (Cloudflare's plans table: WAF custom rules, Single Redirects,
# Configuration Rules, Transform Rules, rate limiting rules).
RULE_QUOTAS: dict[str, dict[str, int]] = {
    "http_request_firewall_custom": {"free": 5, "pro": 20, "business": 100, "enterprise": 1000},
    "http_request_dynamic_redirect": {"free": 10, "pro": 25, "business": 50, "enterprise": 300},
    "http_config_settings": {"free": 10, "pro": 25, "business": 50, "enterprise": 300},
    "http_request_late_transform": {"free": 10, "pro": 25, "business": 50, "enterprise": 300},
    "http_request_transform": {"free": 10, "pro": 25, "business": 50, "enterprise": 300},
    "http_ratelimit": {"free": 1, "pro": 2, "business": 5, "enterprise": 5},
    "http_request_firewall_managed": {"free": 1000, "pro": 1000, "business": 1000, "enterprise": 1000},
}
ORIGIN_PULL_CERTIFICATES_PER_ZONE = 10
HOSTNAMES_PER_CERTIFICATE = 100
# Actions each phase runs (Cloudflare docs, "Phases list" and each product's actions page); `log` is
# Enterprise-only in custom rules.
PHASE_ACTIONS: dict[str, set[str]] = {
    "http_request_firewall_custom": {"block", "challenge", "js_challenge", "managed_challenge", "skip", "log"},
    "http_request_dynamic_redirect": {"redirect"},
    "http_config_settings": {"set_config"},
    "http_request_late_transform": {"rewrite"},
    "http_request_transform": {"rewrite"},
    "http_ratelimit": {"block", "challenge", "js_challenge", "managed_challenge", "log"},
    "http_request_firewall_managed": {"execute", "skip"},
}
SKIPPABLE_PHASES = {"http_ratelimit", "http_request_firewall_managed", "http_request_sbfm"}
SKIPPABLE_PRODUCTS = {"zoneLockdown", "uaBlock", "bic", "hot", "securityLevel", "rateLimit", "waf"}
SBFM_PLANS = {"pro", "business", "enterprise"}  # Super Bot Fight Mode: not on Free
REDIRECT_CODES = {301, 302, 303, 307, 308}
CONFIG_SETTINGS: dict[str, set[Any]] = {"ssl": {"off", "flexible", "full", "strict", "origin_pull"},
                   "security_level": {"off", "essentially_off", "low", "medium", "high", "under_attack"},
                   "bic": {True, False}, "hotlink_protection": {True, False}}
# Bot management fields and the values each takes (API reference; terraform-provider-cloudflare
# internal/services/bot_management/schema.go); None: a boolean.
BOT_FIELDS: dict[str, set[str] | None] = {
    "fight_mode": None, "enable_js": None, "is_robots_txt_managed": None, "auto_update_model": None,
    "suppress_session_score": None, "optimize_wordpress": None, "sbfm_static_resource_protection": None,
    "ai_bots_protection": {"block", "disabled", "only_on_ad_pages"}, "crawler_protection": {"enabled", "disabled"},
    "sbfm_definitely_automated": {"allow", "block", "managed_challenge"},
    "sbfm_likely_automated": {"allow", "block", "managed_challenge"}, "sbfm_verified_bots": {"allow", "block"},
}
AOP_STATUSES = ("pending_deployment", "active")


def zone_id_of(domain: str) -> str:
    """The id the stand-in gives the zone `domain`: 32 hex digits, as Cloudflare's (known before it starts)."""
    return hashlib.sha256(domain.rstrip(".").lower().encode()).hexdigest()[:32]


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 7003) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class CloudflareStandin:
    """One zone (`domain`) on a plan; TXT records are mirrored into pebble-challtestsrv at `challtestsrv_url`."""

    def __init__(self, bind: str | None, port: int, domain: str, challtestsrv_url: str = "",
                 plan: str = "free") -> None:
        self.domain = domain.rstrip(".").lower()
        self.zone_id = zone_id_of(self.domain)
        self.plan = plan
        self.challtestsrv_url = challtestsrv_url
        self.records: dict[str, dict[str, Any]] = {}
        self.rulesets: dict[str, dict[str, Any]] = {}  # phase -> entry point ruleset {id, phase, version, rules}
        # A zone's own settings as the user left them: what the stack must not change zone-wide.
        self.settings: dict[str, Any] = {"ssl": "flexible", "always_use_https": "off", "min_tls_version": "1.0",
                                         "security_level": "medium", "browser_check": "on"}
        # A Free zone's bot settings as Cloudflare starts them, with managed robots.txt switched on by the user.
        self.bot_management: dict[str, Any] = {"fight_mode": True, "enable_js": False, "is_robots_txt_managed": True,
                                               "ai_bots_protection": "block", "crawler_protection": "disabled",
                                               "using_latest_model": True}
        self.origin_pull_certificates: dict[str, dict[str, Any]] = {}  # id -> {certificate, private_key, ...}
        self.origin_pull_hostnames: dict[str, dict[str, Any]] = {}  # hostname -> {cert_id, enabled, ...}
        self.deployment_seconds = 0.0  # pending_deployment -> active
        # Client addresses Cloudflare's threat intelligence scores badly: the security level challenges them.
        self.bad_reputation: set[str] = set()
        self.managed_rules = True  # the Free Managed Ruleset, deployed on the zone
        self.calls: list[str] = []
        # Seconds before a new TXT record is visible to DNS (the CA's resolver): 0 publishes at once.
        self.txt_delay = 0.0
        # Seconds each API call takes: the Internet's round trip, which lets concurrent writers interleave.
        self.latency = 0.0
        self._lock = threading.RLock()
        self._next_id = 1
        self._server: ThreadingHTTPServer | None = None
        if bind is not None:
            self._server = ThreadingHTTPServer((bind, port), self._handler_class())
            self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The value for CLOUDFLARE_API_URL."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{API}"

    def start(self) -> None:
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.2}, name="cloudflare-standin")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        if self._server is not None:
            self._server.server_close()

    # -- views the edge and the tests read --------------------------------------------------------
    @property
    def bot_fight_mode(self) -> bool:
        return bool(self.bot_management.get("fight_mode"))

    @bot_fight_mode.setter
    def bot_fight_mode(self, value: bool) -> None:
        self.bot_management["fight_mode"] = value

    def rules_of(self, phase: str) -> list[dict[str, Any]]:
        """The phase's rules in evaluation order (the edge stand-in reads them)."""
        with self._lock:
            return [dict(r) for r in self.rulesets.get(phase, {}).get("rules", [])]

    def presented_certificate(self, hostname: str) -> dict[str, Any] | None:
        """The client certificate Cloudflare presents to the origin for `hostname`: that of an active,
        enabled association with an active certificate, else none."""
        with self._lock:
            association = self.origin_pull_hostnames.get(hostname)
            if not association or not association.get("enabled") or self._status(association) != "active":
                return None
            certificate = self.origin_pull_certificates.get(str(association.get("cert_id")))
            if certificate is None or self._status(certificate) != "active":
                return None
            return certificate

    # -- challtestsrv ---------------------------------------------------------------------------
    def _challtestsrv(self, path: str, body: dict[str, str]) -> None:
        if not self.challtestsrv_url:
            return
        req = urllib.request.Request(self.challtestsrv_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def _sync_txt(self, name: str) -> None:
        """Make challtestsrv serve exactly our TXT values for `name`."""
        fqdn = name.rstrip(".") + "."
        self._challtestsrv("/clear-txt", {"host": fqdn})
        for rec in self.records.values():
            if rec["type"] == "TXT" and rec["name"] == name:
                self._challtestsrv("/set-txt", {"host": fqdn, "value": rec["content"]})

    def _sync_txt_locked(self, name: str) -> None:
        with self._lock:
            self._sync_txt(name)

    # -- the API --------------------------------------------------------------------------------
    def _zone(self) -> dict[str, Any]:
        return {"id": self.zone_id, "name": self.domain, "status": "active",
                "plan": {"id": hashlib.sha256(self.plan.encode()).hexdigest()[:32], "legacy_id": self.plan,
                         "name": f"{self.plan.title()} Website", "is_subscribed": True, "can_subscribe": False,
                         "currency": "USD", "frequency": "", "price": 0, "externally_managed": False,
                         "legacy_discount": False}}

    def _new_id(self, kind: str) -> str:
        self._next_id += 1
        return hashlib.sha256(f"{self.zone_id}/{kind}/{self._next_id}".encode()).hexdigest()[:32]

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Answer one API call: (HTTP status, result), or an error status with a message."""
        try:
            return 200, self._route(method, path, query, body if body is not None else {})
        except ApiError as error:
            return error.status, {"code": error.code, "message": error.message}

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        parts = [p for p in path[len(API):].split("/") if p] if path.startswith(API) else []
        self.calls.append(f"{method} {'/'.join(parts)}")
        if self.latency:
            time.sleep(self.latency)
        if parts == ["zones"] and method == "GET":
            name = query.get("name", "").rstrip(".").lower()
            return [self._zone()] if name in ("", self.domain) else []
        if len(parts) < 2 or parts[0] != "zones" or parts[1] != self.zone_id:
            raise ApiError(404, "Could not route to this zone or path", 7003)
        rest = parts[2:]
        with self._lock:
            if rest == [] and method == "GET":
                return self._zone()
            if rest[:1] == ["dns_records"]:
                return self._dns(method, rest[1:], query, body)
            if rest[:1] == ["rulesets"]:
                return self._rulesets(method, rest[1:], body)
            if rest == ["bot_management"]:
                return self._bots(method, body)
            if rest[:2] == ["origin_tls_client_auth", "hostnames"]:
                return self._origin_pulls(method, rest[2:], body)
        raise ApiError(404, "No route for that URI", 7003)

    # -- DNS ----------------------------------------------------------------------------------------
    def _dns(self, method: str, rest: list[str], query: dict[str, str], body: dict[str, Any]) -> Any:
        if not rest and method == "GET":
            wanted = {k: query[k] for k in ("type", "name", "content") if k in query}
            if "name.exact" in query:
                wanted["name"] = query["name.exact"]
            return [dict(r) for r in self.records.values() if all(r.get(k) == v for k, v in wanted.items())]
        if not rest and method == "POST":
            return self._put_record(self._new_id("record"), body)
        if len(rest) == 1 and rest[0] not in self.records:
            raise ApiError(404, "Record not found", 81044)
        if len(rest) == 1 and method == "PUT":
            return self._put_record(rest[0], body)
        if len(rest) == 1 and method == "DELETE":
            rec = self.records.pop(rest[0])
            if rec["type"] == "TXT":
                self._sync_txt(rec["name"])
            return {"id": rec["id"]}
        raise ApiError(404, "No route for that URI", 7003)

    def _put_record(self, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kind, ttl, proxied = str(body.get("type", "")), body.get("ttl", 1), bool(body.get("proxied", False))
        if not (ttl == 1 or 60 <= float(ttl) <= 86400):
            raise ApiError(400, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.", 9021)
        if proxied and kind not in ("A", "AAAA", "CNAME"):
            raise ApiError(400, f"{kind} records cannot be proxied", 9004)
        comment = str(body.get("comment") or "")
        if len(comment) > (100 if self.plan == "free" else 500):
            raise ApiError(400, "comment is too long for this plan", 9100)
        rec = {"id": record_id, "zone_id": self.zone_id, "zone_name": self.domain, "type": kind,
               "name": str(body.get("name", "")), "content": str(body.get("content", "")), "ttl": ttl,
               "proxied": proxied, "proxiable": kind in ("A", "AAAA", "CNAME"), "comment": comment}
        self.records[record_id] = rec
        if kind == "TXT" and self.txt_delay > 0:
            # At that time challtestsrv serves what the zone then holds (a deleted record: nothing).
            timer = threading.Timer(self.txt_delay, self._sync_txt_locked, [rec["name"]])
            timer.daemon = True
            timer.start()
        elif kind == "TXT":
            self._sync_txt(rec["name"])
        return dict(rec)

    # -- rulesets -----------------------------------------------------------------------------------
    def _check_rule(self, phase: str, rule: dict[str, Any]) -> None:
        """What the API refuses in one rule of `phase` (a 400 naming it)."""
        action, params = rule.get("action"), rule.get("action_parameters") or {}
        where = f"rule {rule.get('ref') or rule.get('description') or '?'}"
        if action not in PHASE_ACTIONS.get(phase, set()):
            raise ApiError(400, f"{where}: action {action!r} is not allowed in phase {phase}", 20021)
        if action == "log" and self.plan != "enterprise":
            raise ApiError(400, f"{where}: the log action needs an Enterprise plan", 20021)
        expression = rule.get("expression")
        if not isinstance(expression, str) or not expression:
            raise ApiError(400, f"{where}: an expression is required", 20021)
        try:
            evaluate(expression, _probe_fields())
        except RulesError as error:
            raise ApiError(400, f"{where}: filter parsing error: {error}", 20021) from None
        if action == "skip":
            unknown = set(params) - {"ruleset", "phases", "products"}
            if unknown or not params:
                raise ApiError(400, f"{where}: skip takes ruleset, phases or products (got {sorted(params)})", 20021)
            if params.get("ruleset", "current") != "current":
                raise ApiError(400, f"{where}: ruleset must be \"current\"", 20021)
            phases = set(params.get("phases") or ())
            allowed = SKIPPABLE_PHASES if self.plan in SBFM_PLANS else SKIPPABLE_PHASES - {"http_request_sbfm"}
            if phases - allowed:
                raise ApiError(400, f"{where}: phases {sorted(phases - allowed)} cannot be skipped on the "
                               f"{self.plan} plan", 20021)
            if set(params.get("products") or ()) - SKIPPABLE_PRODUCTS:
                raise ApiError(400, f"{where}: unknown products {sorted(set(params['products']) - SKIPPABLE_PRODUCTS)}",
                               20021)
        elif action == "redirect":
            from_value = params.get("from_value") or {}
            target = from_value.get("target_url") or {}
            if int(from_value.get("status_code", 301)) not in REDIRECT_CODES or ("value" in target) == ("expression" in target):
                raise ApiError(400, f"{where}: a redirect needs a status code of {sorted(REDIRECT_CODES)} and a "
                               "target URL value or expression", 20021)
        elif action == "set_config":
            for key, value in params.items():
                if key not in CONFIG_SETTINGS or value not in CONFIG_SETTINGS[key]:
                    raise ApiError(400, f"{where}: setting {key}={value!r} is not a configuration rule setting", 20021)
        elif action == "rewrite":
            headers = params.get("headers") or {}
            if set(params) != {"headers"} or not headers or phase != "http_request_late_transform" or any(
                    h.get("operation") not in ("set", "add", "remove") or ("value" in h) == ("expression" in h)
                    for h in headers.values()):
                raise ApiError(400, f"{where}: a header rewrite sets, adds or removes headers by value or expression",
                               20021)
            if any(name.lower().startswith("cf-") for name in headers):
                raise ApiError(400, f"{where}: headers starting with cf- cannot be modified", 20021)
        elif params and action not in ("execute",):
            raise ApiError(400, f"{where}: action {action} takes no action_parameters", 20021)

    def _checked_rules(self, phase: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        refs = [r["ref"] for r in rules]
        if len(set(refs)) != len(refs):
            raise ApiError(400, "duplicate rule ref", 20022)
        quota = RULE_QUOTAS.get(phase, {}).get(self.plan)
        if quota is not None and len(rules) > quota:
            raise ApiError(400, f"exceeded the {self.plan} plan's quota of {quota} rules in phase {phase}", 20210)
        for rule in rules:
            self._check_rule(phase, rule)
        return rules

    def _new_rule(self, body: dict[str, Any], rule_id: str | None = None) -> dict[str, Any]:
        rule_id = rule_id or self._new_id("rule")
        fields = ("expression", "action", "action_parameters", "description", "enabled", "ratelimit")
        rule = {k: copy.deepcopy(body[k]) for k in fields if k in body}
        rule.setdefault("enabled", True)
        rule.setdefault("description", "")
        return {"id": rule_id, "ref": body.get("ref") or rule_id, "version": "1",
                "last_updated": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **rule}

    def _entry(self, ruleset_id: str) -> dict[str, Any]:
        found = next((r for r in self.rulesets.values() if r["id"] == ruleset_id), None)
        if found is None:
            raise ApiError(404, "could not find ruleset", 10006)
        return found

    def _changed(self, ruleset: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
        ruleset["rules"] = rules
        ruleset["version"] = str(int(ruleset.get("version", "0")) + 1)
        ruleset["last_updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return copy.deepcopy(ruleset)

    def _new_ruleset(self, phase: str, body: dict[str, Any]) -> dict[str, Any]:
        rules = self._checked_rules(phase, [self._new_rule(r) for r in body.get("rules") or []])
        ruleset = {"id": self._new_id("ruleset"), "kind": "zone", "phase": phase, "version": "0",
                   "name": body.get("name") or "default", "description": body.get("description") or ""}
        self.rulesets[phase] = ruleset
        return self._changed(ruleset, rules)

    def _rulesets(self, method: str, rest: list[str], body: dict[str, Any]) -> Any:
        if not rest and method == "GET":
            return [{k: v for k, v in r.items() if k != "rules"} for r in self.rulesets.values()]
        if not rest and method == "POST":
            phase = str(body.get("phase", ""))
            if body.get("kind") != "zone" or phase not in RULE_QUOTAS:
                raise ApiError(400, f"a zone ruleset needs kind zone and a known phase (got {body.get('kind')}, "
                               f"{phase})", 20217)
            if phase in self.rulesets:
                raise ApiError(400, "'zone' is not a valid value for kind because exceeded maximum number of zone "
                               f"rulesets for phase {phase}", 20217)
            return self._new_ruleset(phase, body)
        if len(rest) == 3 and rest[0] == "phases" and rest[2] == "entrypoint":
            phase = rest[1]
            if method == "GET":
                if phase not in self.rulesets:
                    raise ApiError(404, "could not find entrypoint ruleset in the phase", 10003)
                return copy.deepcopy(self.rulesets[phase])
            if method == "PUT":  # replaces every rule: the ones left out are gone
                if phase not in self.rulesets:
                    return self._new_ruleset(phase, body)
                entry = self.rulesets[phase]
                return self._changed(entry, self._checked_rules(phase, [self._new_rule(r) for r in body.get("rules") or []]))
            raise ApiError(405, "method not allowed", 10000)
        ruleset = self._entry(rest[0]) if rest else None
        if ruleset is None:
            raise ApiError(404, "No route for that URI", 7003)
        phase, rules = ruleset["phase"], list(ruleset["rules"])
        if len(rest) == 1 and method == "GET":
            return copy.deepcopy(ruleset)
        if len(rest) == 1 and method == "PUT":
            return self._changed(ruleset, self._checked_rules(phase, [self._new_rule(r) for r in body.get("rules") or []]))
        if len(rest) == 1 and method == "DELETE":
            del self.rulesets[phase]
            return None
        if rest[1:2] != ["rules"]:
            raise ApiError(404, "No route for that URI", 7003)
        if len(rest) == 2 and method == "POST":
            rules.insert(self._position(rules, body.get("position")), self._new_rule(body))
            return self._changed(ruleset, self._checked_rules(phase, rules))
        index = next((i for i, r in enumerate(rules) if len(rest) == 3 and r["id"] == rest[2]), None)
        if index is None:
            raise ApiError(404, "could not find rule in ruleset", 10004)
        if method == "PATCH":
            if set(body) == {"position"}:
                moved = rules.pop(index)
                rules.insert(self._position(rules, body["position"]), moved)
            else:
                rules[index] = self._new_rule(body, rules[index]["id"])
            return self._changed(ruleset, self._checked_rules(phase, rules))
        if method == "DELETE":
            rules.pop(index)
            return self._changed(ruleset, rules)
        raise ApiError(404, "No route for that URI", 7003)

    @staticmethod
    def _position(rules: list[dict[str, Any]], position: dict[str, Any] | None) -> int:
        """Where a rule goes: last by default; index N (from 1) before the rule now at N; before/after a rule
        id ("" = first / last)."""
        if not position:
            return len(rules)
        if len(position) != 1:
            raise ApiError(400, "position takes exactly one of index, before, after", 20021)
        if "index" in position:
            index = int(position["index"])
            if not 1 <= index <= len(rules) + 1:
                raise ApiError(400, f"position index {index} is out of range", 20021)
            return index - 1
        anchor = position.get("before", position.get("after"))
        if anchor == "":
            return 0 if "before" in position else len(rules)
        at = next((i for i, r in enumerate(rules) if r["id"] == anchor), None)
        if at is None:
            raise ApiError(400, f"position refers to an unknown rule {anchor}", 20021)
        return at + (1 if "after" in position else 0)

    # -- bot management -------------------------------------------------------------------------------
    def _bots(self, method: str, body: dict[str, Any]) -> Any:
        if method == "GET":
            return dict(self.bot_management)
        if method != "PUT":
            raise ApiError(405, "method not allowed", 10000)
        for key, value in body.items():
            allowed = BOT_FIELDS.get(key, set())
            if key not in BOT_FIELDS or (allowed is None and not isinstance(value, bool)) or (
                    allowed is not None and value not in allowed):
                raise ApiError(400, f"bot management field {key}={value!r} is not accepted", 1004)
        self.bot_management.update(body)  # only what the request names
        return dict(self.bot_management)

    # -- per-hostname Authenticated Origin Pulls -------------------------------------------------------
    def _status(self, item: dict[str, Any]) -> str:
        return "active" if time.monotonic() - item["since"] >= self.deployment_seconds else "pending_deployment"

    def _certificate_view(self, certificate: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in certificate.items() if k not in ("private_key", "since")} | {
            "status": self._status(certificate)}

    def _origin_pulls(self, method: str, rest: list[str], body: dict[str, Any]) -> Any:
        certificates = self.origin_pull_certificates
        if rest == ["certificates"] and method == "GET":
            return [self._certificate_view(c) for c in certificates.values()]
        if rest == ["certificates"] and method == "POST":
            if len(certificates) >= ORIGIN_PULL_CERTIFICATES_PER_ZONE:
                raise ApiError(400, f"{ORIGIN_PULL_CERTIFICATES_PER_ZONE} hostname certificates per zone are allowed",
                               1400)
            pem, key = str(body.get("certificate", "")), str(body.get("private_key", ""))
            if "BEGIN CERTIFICATE" not in pem or "PRIVATE KEY" not in key:
                raise ApiError(400, "certificate and private_key must be PEM", 1401)
            certificate_id = self._new_id("certificate")[:36]
            certificates[certificate_id] = {"id": certificate_id, "certificate": pem, "private_key": key,
                                            "issuer": _issuer_of(pem), "since": time.monotonic(),
                                            "uploaded_on": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
            return self._certificate_view(certificates[certificate_id])
        if len(rest) == 2 and rest[0] == "certificates":
            if rest[1] not in certificates:
                raise ApiError(404, "certificate not found", 1402)
            if method == "GET":
                return self._certificate_view(certificates[rest[1]])
            if method == "DELETE":
                return self._certificate_view(certificates.pop(rest[1]))
        if not rest and method == "PUT":
            return [self._associate(config) for config in body.get("config") or []]
        if len(rest) == 1 and method == "GET":
            association = self.origin_pull_hostnames.get(rest[0])
            if association is None:
                raise ApiError(404, "hostname association not found", 1403)
            return self._association_view(rest[0], association)
        raise ApiError(404, "No route for that URI", 7003)

    def _associate(self, config: dict[str, Any]) -> dict[str, Any]:
        hostname, cert_id = str(config.get("hostname") or ""), str(config.get("cert_id") or "")
        if hostname != self.domain and not hostname.endswith("." + self.domain):
            raise ApiError(400, f"hostname {hostname!r} is not in zone {self.domain}", 1404)
        if config.get("enabled") is None:  # "a null value ... invalidates the association"
            self.origin_pull_hostnames.pop(hostname, None)
            return {"hostname": hostname, "cert_id": cert_id, "enabled": None, "status": "pending_deletion"}
        if cert_id not in self.origin_pull_certificates:
            raise ApiError(400, f"certificate {cert_id!r} does not exist", 1405)
        if sum(a["cert_id"] == cert_id for h, a in self.origin_pull_hostnames.items() if h != hostname) >= \
                HOSTNAMES_PER_CERTIFICATE:
            raise ApiError(400, f"{HOSTNAMES_PER_CERTIFICATE} associations on a single certificate are allowed", 1406)
        self.origin_pull_hostnames[hostname] = {"cert_id": cert_id, "enabled": bool(config["enabled"]),
                                                "since": time.monotonic()}
        return self._association_view(hostname, self.origin_pull_hostnames[hostname])

    def _association_view(self, hostname: str, association: dict[str, Any]) -> dict[str, Any]:
        certificate = self.origin_pull_certificates.get(association["cert_id"])
        return {"hostname": hostname, "cert_id": association["cert_id"], "enabled": association["enabled"],
                "status": self._status(association),
                "cert_status": self._status(certificate) if certificate else "deleted"}

    # -- HTTP ----------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                bearer = self.headers.get("Authorization", "").startswith("Bearer ")
                global_key = bool(self.headers.get("X-Auth-Email") and self.headers.get("X-Auth-Key"))
                if not (bearer or global_key):
                    status, result = 403, {"code": 9109, "message": "Invalid request headers"}
                else:
                    try:
                        body = json.loads(raw) if raw else {}
                        status, result = standin.handle(self.command, url.path, query, body)
                    except (ValueError, OSError) as exc:
                        status, result = 500, {"code": 1000, "message": f"stand-in error: {exc}"}
                if status == 200:
                    payload: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
                    if isinstance(result, list):
                        payload["result_info"] = {"page": 1, "per_page": len(result) or 1, "count": len(result),
                                                  "total_count": len(result), "total_pages": 1}
                else:
                    payload = {"success": False, "result": None, "messages": [], "errors": [result]}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: calls are recorded in `standin.calls` instead."""

        return Handler


def _probe_fields() -> dict[str, Any]:
    """A request's fields, for reading an expression (every field of the rules-language model)."""
    return {"http.host": "probe.invalid", "http.request.uri.path": "/", "http.request.scheme": "https", "ssl": True,
            "cf.tls_version": "TLSv1.3", "http.user_agent": "", "ip.src": "192.0.2.1"}


def _issuer_of(pem: str) -> str:
    """The certificate's issuer as the API shows it (RFC 4514), or "" for one it cannot read."""
    try:
        from cryptography import x509

        return x509.load_pem_x509_certificate(pem.encode()).issuer.rfc4514_string()
    except (ValueError, ImportError):
        return ""
