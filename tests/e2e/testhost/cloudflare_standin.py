"""A stand-in of the Cloudflare v4 API: what certbot's dns-cloudflare plugin calls, and the zone state the
program's Cloudflare resources write and the edge stand-in (tests/e2e/edge.py) reads.

certbot's calls, through Debian's python3-cloudflare 2.11 (read from
certbot_dns_cloudflare/_internal/dns_cloudflare.py), all under /client/v4:
  GET    zones?name=<candidate>&per_page=1      the zone of the configured domain, [] for other names
  POST   zones/<id>/dns_records                 {type, name, content, ttl}; TXT goes to challtestsrv
  GET    zones/<id>/dns_records?type=TXT&name=..&content=..&per_page=1
  DELETE zones/<id>/dns_records/<record id>     TXT is withdrawn from challtestsrv
The Rulesets API as the program's ZoneRule provider uses it (Cloudflare docs, "Add a rule to a
ruleset", "Update a rule in a ruleset", "Add rules to phase entry point rulesets"): one entry point
per phase, rules with ids and unique refs, kept in order:
  GET    zones/<id>/rulesets/phases/<phase>/entrypoint     404 while the phase has none
  PUT    zones/<id>/rulesets/phases/<phase>/entrypoint     {rules}: creates or replaces it
  POST   zones/<id>/rulesets/<ruleset>/rules               {rule, position: {index|before|after}}
  PATCH  zones/<id>/rulesets/<ruleset>/rules/<rule>        the rule's new definition
  DELETE zones/<id>/rulesets/<ruleset>/rules/<rule>
Zone state the other resources set (written by tests/e2e/cloudflare_apply.py as the provider would):
`settings` (zone-wide, e.g. ssl), `bot_fight_mode`, per-hostname origin-pull certificates and their
hostname associations. Any other path answers 404 in Cloudflare's error format. Requests need some
`Authorization: Bearer` token (any value), like the real API; plain HTTP is fine because the clients
take the base URL from their configuration (CLOUDFLARE_API_URL for certbot).
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/client/v4"


def zone_id_of(domain: str) -> str:
    """The id the stand-in gives the zone `domain` (known before the stand-in starts)."""
    return hashlib.sha256(domain.rstrip(".").lower().encode()).hexdigest()[:32]


class CloudflareStandin:
    """One zone (`domain`); TXT records are mirrored into pebble-challtestsrv at `challtestsrv_url`."""

    def __init__(self, bind: str, port: int, domain: str, challtestsrv_url: str) -> None:
        self.domain = domain.rstrip(".").lower()
        self.zone_id = zone_id_of(self.domain)
        self.challtestsrv_url = challtestsrv_url
        self.records: dict[str, dict[str, Any]] = {}
        self.rulesets: dict[str, dict[str, Any]] = {}  # phase -> entry point ruleset {id, phase, rules}
        # A zone's own settings as the user left them: what the stack must not change zone-wide.
        self.settings: dict[str, str] = {"ssl": "flexible", "always_use_https": "off", "min_tls_version": "1.0"}
        self.bot_fight_mode = True
        self.origin_pull_certificates: dict[str, dict[str, str]] = {}  # id -> {certificate, private_key}
        self.origin_pull_hostnames: dict[str, dict[str, Any]] = {}  # hostname -> {cert_id, enabled}
        self.calls: list[str] = []
        # Seconds before a new TXT record is visible to DNS (the CA's resolver): 0 publishes at once.
        # Cloudflare's records are usually live within seconds; a test sets a longer delay to see the
        # certificate step wait longer and try again.
        self.txt_delay = 0.0
        self._lock = threading.Lock()
        self._next_id = 1
        self._server = ThreadingHTTPServer((bind, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The value for CLOUDFLARE_API_URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{API}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.2}, name="cloudflare-standin")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    # -- challtestsrv ---------------------------------------------------------------------------
    def _challtestsrv(self, path: str, body: dict[str, str]) -> None:
        req = urllib.request.Request(self.challtestsrv_url + path, data=json.dumps(body).encode(),
                                     method="POST")
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

    # -- API ------------------------------------------------------------------------------------
    def _zone(self) -> dict[str, Any]:
        return {"id": self.zone_id, "name": self.domain, "status": "active"}

    def handle(self, method: str, path: str, query: dict[str, str],
               body: dict[str, Any]) -> tuple[int, Any]:
        """Answer one API call: (HTTP status, result) or an error status with a message."""
        parts = [p for p in path[len(API):].split("/") if p] if path.startswith(API) else []
        self.calls.append(f"{method} {'/'.join(parts)}")
        if parts == ["zones"] and method == "GET":
            name = query.get("name", "").rstrip(".").lower()
            return 200, [self._zone()] if name in ("", self.domain) else []
        if len(parts) < 2 or parts[0] != "zones" or parts[1] != self.zone_id:
            return 404, "Could not route to this zone or path"
        if parts[2:] == [] and method == "GET":
            return 200, self._zone()
        if parts[2:] == ["dns_records"] and method == "GET":
            found = [r for r in self.records.values()
                     if all(r.get(k) == query[k] for k in ("type", "name", "content") if k in query)]
            return 200, found
        if parts[2:] == ["dns_records"] and method == "POST":
            with self._lock:
                rid = hashlib.sha256(f"{self.zone_id}/{self._next_id}".encode()).hexdigest()[:32]
                self._next_id += 1
                rec = {"id": rid, "zone_id": self.zone_id, "zone_name": self.domain,
                       "type": str(body.get("type", "")), "name": str(body.get("name", "")),
                       "content": str(body.get("content", "")), "ttl": body.get("ttl", 1),
                       "proxied": bool(body.get("proxied", False)), "comment": str(body.get("comment") or "")}
                self.records[rid] = rec
                if rec["type"] == "TXT" and self.txt_delay > 0:
                    # At that time challtestsrv serves what the zone then holds (a deleted record: nothing).
                    timer = threading.Timer(self.txt_delay, self._sync_txt_locked, [rec["name"]])
                    timer.daemon = True
                    timer.start()
                elif rec["type"] == "TXT":
                    self._sync_txt(rec["name"])
            return 200, rec
        if len(parts) == 4 and parts[2] == "dns_records" and method == "DELETE":
            with self._lock:
                if parts[3] not in self.records:
                    return 404, "Record not found"
                rec = self.records.pop(parts[3])
                if rec["type"] == "TXT":
                    self._sync_txt(rec["name"])
            return 200, {"id": rec["id"]}
        if parts[2:3] == ["rulesets"]:
            return self._rulesets(method, parts[3:], body)
        return 404, "No route for that URI"

    # -- rulesets ---------------------------------------------------------------------------------
    def _new_id(self, kind: str) -> str:
        self._next_id += 1
        return hashlib.sha256(f"{self.zone_id}/{kind}/{self._next_id}".encode()).hexdigest()[:32]

    def _rule(self, body: dict[str, Any], rule_id: str | None = None) -> dict[str, Any]:
        rule_id = rule_id or self._new_id("rule")
        fields = ("expression", "action", "action_parameters", "description", "enabled")
        rule = {k: body[k] for k in fields if k in body}
        rule.setdefault("enabled", True)
        return {"id": rule_id, "ref": body.get("ref") or rule_id, "version": "1", **rule}

    def rules_of(self, phase: str) -> list[dict[str, Any]]:
        """The phase's rules in evaluation order (the edge stand-in reads them)."""
        with self._lock:
            return [dict(r) for r in self.rulesets.get(phase, {}).get("rules", [])]

    def _rulesets(self, method: str, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if len(parts) == 3 and parts[0] == "phases" and parts[2] == "entrypoint":
                phase = parts[1]
                if method == "GET":
                    found = self.rulesets.get(phase)
                    return (200, found) if found else (404, "could not find entrypoint ruleset in the phase")
                if method == "PUT":
                    given = [self._rule(r) for r in body.get("rules", [])]
                    if len({r["ref"] for r in given}) != len(given):
                        return 400, "duplicate rule ref"
                    entry = self.rulesets.get(phase) or {"id": self._new_id("ruleset"), "kind": "zone",
                                                         "phase": phase, "name": "default"}
                    entry["rules"] = given
                    self.rulesets[phase] = entry
                    return 200, entry
            found_set = [r for r in self.rulesets.values() if parts and r["id"] == parts[0]]
            if not found_set or parts[1:2] != ["rules"]:
                return 404, "ruleset not found"
            ruleset = found_set[0]
            rules: list[dict[str, Any]] = ruleset["rules"]
            if method == "POST" and len(parts) == 2:
                rule = self._rule(body)
                if any(r["ref"] == rule["ref"] for r in rules):
                    return 400, f"a rule with ref {rule['ref']} already exists"
                rules.insert(self._position(rules, body.get("position")), rule)
                return 200, ruleset
            index = next((i for i, r in enumerate(rules) if len(parts) == 3 and r["id"] == parts[2]), None)
            if index is None:
                return 404, "rule not found"
            if method == "PATCH":
                rule = self._rule(body, rules[index]["id"])
                if any(r["ref"] == rule["ref"] for i, r in enumerate(rules) if i != index):
                    return 400, f"a rule with ref {rule['ref']} already exists"
                rules[index] = rule
                return 200, ruleset
            if method == "DELETE":
                rules.pop(index)
                return 200, ruleset
        return 404, "No route for that URI"

    @staticmethod
    def _position(rules: list[dict[str, Any]], position: dict[str, Any] | None) -> int:
        """Where a new rule goes: last by default; index 1 is first; before/after a rule id."""
        if not position:
            return len(rules)
        if "index" in position:
            return max(0, min(len(rules), int(position["index"]) - 1))
        anchor = position.get("before") or position.get("after")
        at = next((i for i, r in enumerate(rules) if r["id"] == anchor), len(rules))
        return at + (1 if "after" in position else 0)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self.headers.get("Authorization", "").startswith("Bearer "):
                    status, result = 403, "Invalid request headers"
                else:
                    try:
                        body = json.loads(raw) if raw else {}
                        status, result = standin.handle(self.command, url.path, query, body)
                    except (ValueError, OSError) as exc:
                        status, result = 500, f"stand-in error: {exc}"
                if status == 200:
                    payload: dict[str, Any] = {"success": True, "errors": [], "messages": [],
                                               "result": result}
                    if isinstance(result, list):
                        payload["result_info"] = {"page": 1, "per_page": len(result) or 1,
                                                  "count": len(result), "total_count": len(result),
                                                  "total_pages": 1}
                else:
                    code = 9109 if status == 403 else 7003
                    payload = {"success": False, "result": None, "messages": [],
                               "errors": [{"code": code, "message": result}]}
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
