"""A stand-in of Cloudflare's edge for the end-to-end tests: every web request to a proxied name goes
through it, as in production.

What it models, from the zone state the program's Cloudflare resources wrote into the API stand-ins
(tests/e2e/engine.py):
- routing: a proxied A record of a zone sends its name to the origin address; a name without one is
  Cloudflare's error 1001 (HTTP 530);
- TLS to clients with its own certificate for each name (an edge CA the test hosts and clients trust, as
  everyone trusts Cloudflare's), TLS 1.0 to 1.3 accepted so the zone's rules decide (`cf.tls_version`);
- the zone's rules, evaluated with the Rules-language subset of rules_language.py, phase by phase: single
  redirects (http_request_dynamic_redirect), configuration rules setting the SSL mode, Browser Integrity
  Check and Security Level (http_config_settings), WAF custom rules with block, challenge and skip
  (http_request_firewall_custom), rate limiting rules (http_ratelimit, counted per client address),
  request header transform rules (http_request_late_transform: set/add headers, overwriting the client's);
- the security products a skip rule can skip, each on as a Free zone has it: the Free Managed Ruleset
  (blocks requests whose path or body carries script injection or path traversal), Browser Integrity
  Check (challenges requests without a User-Agent), Security Level (challenges client addresses the zone
  lists in `bad_reputation`);
- Bot Fight Mode when the zone has it on: requests without a browser's User-Agent get a challenge,
  whatever the rules say (it cannot be skipped);
- the SSL mode to the origin: flexible (HTTP to port 80), full (HTTPS, any certificate), strict (HTTPS,
  a certificate valid for the name from a CA it trusts: the ACME servers' roots, i.e. "public" CAs);
  a failed strict check is 526, a failed handshake 525, a refused connection 521, no connection 522;
- Authenticated Origin Pulls per hostname: the certificate of the name's association is presented once the
  certificate and the association are both active (they deploy asynchronously);
- CF-Connecting-IP (the client's address), X-Forwarded-For, X-Forwarded-Proto; request bodies over
  100 MB get 413; an origin that does not answer within 100 s gets 524;
- WebSockets (on for every zone; Cloudflare docs, "WebSockets"): a GET asking to upgrade to websocket goes
  through every rule like any request, is passed on with its Upgrade and Connection headers, and once the
  origin answers 101 the edge relays the answer and then the bytes both ways until either side closes;
  another answer is passed on as an ordinary response.
Not modelled: caching, IPv6, HTTP/2 and HTTP/3 to clients, the other phases and products (Super
Bot Fight Mode, which a Free zone does not have), zone-level AOP, Cloudflare's own error pages beyond their
status code.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import secrets
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import traceback
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests import pki
from tests.e2e.rules_language import evaluate
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin

MAX_BODY = 100 * 1024 * 1024  # Cloudflare Free/Pro request body limit
ORIGIN_TIMEOUT = 100.0  # Cloudflare's proxy read timeout (524 after it)
CONNECT_TIMEOUT = 15.0
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "host"}
REDIRECT_PHASE, CUSTOM_PHASE, CONFIG_PHASE = "http_request_dynamic_redirect", "http_request_firewall_custom", \
    "http_config_settings"
HEADER_PHASE, RATELIMIT_PHASE = "http_request_late_transform", "http_ratelimit"
CHALLENGES = {"challenge", "js_challenge", "managed_challenge"}
# What the model of Cloudflare's Free Managed Ruleset blocks in a request's path or body: script injection and
# path traversal, which Matrix messages (HTML in formatted bodies) and clients legitimately carry.
MANAGED_RULE_SIGNATURES = ("<script", "../", "%2e%2e%2f")


class Edge:
    """Cloudflare's edge for every zone (API stand-in) registered, listening on each test host's side."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ca_key = pki.private_key_pem("edge stand-in CA")
        self.ca_cert = pki.self_signed_cert("edge stand-in CA", self.ca_key, {"common_name": "edge stand-in CA"},
                                            True, ["cert_signing", "crl_signing", "digital_signature"], 24 * 3650)
        self.ca_file = workdir / "edge-ca.pem"
        self.ca_file.write_text(self.ca_cert)
        self.zones: list[CloudflareStandin] = []
        self.public_roots: dict[str, str] = {}  # what counts as a publicly trusted CA: name -> PEM
        self._servers: dict[str, list[socketserver.BaseServer]] = {}
        self.resolvers: dict[str, str] = {}  # a test host's side address -> its DNS stand-in (challtestsrv API)
        self._published: dict[str, set[str]] = {}
        self._targets: dict[tuple[str, str], str] = {}  # (resolver, name) -> the address last published
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._origin_contexts: dict[tuple[str, int, int, int], ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self.local_zone: dict[str, CloudflareStandin] = {}  # edge address -> the zone of the host it serves
        self.errors: list[str] = []  # the stand-in's own failures (a test shows them)
        self.log: list[dict[str, Any]] = []  # one entry per request: host, path, status, origin status
        self._rates: dict[tuple[int, str, str], list[float]] = {}  # rate limiting: requests seen per rule and client

    # -- configuration ---------------------------------------------------------------------------
    def add_zone(self, zone: CloudflareStandin) -> None:
        if zone not in self.zones:
            self.zones.append(zone)

    def remove_zone(self, zone: CloudflareStandin) -> None:
        if zone in self.zones:
            self.zones.remove(zone)

    def trust(self, name: str, root_pem: str) -> None:
        """A CA Cloudflare trusts for origin certificates under Full (strict) (an ACME server's root)."""
        self.public_roots[name] = root_pem

    def listen(self, address: str) -> None:
        """Serve HTTPS (443) and HTTP (80) on `address` (a test host's side of its network)."""
        if address in self._servers:
            return
        servers: list[socketserver.BaseServer] = []
        context = self._server_context()
        for port, tls in ((443, True), (80, False)):
            server = _Server((address, port), _handler(self, tls))
            if tls:
                server.tls_context = context
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                                      name=f"edge-{address}-{port}")
            thread.start()
            servers.append(server)
        self._servers[address] = servers

    def stop_listening(self, address: str) -> None:
        for server in self._servers.pop(address, []):
            server.shutdown()
            server.server_close()

    def stop(self) -> None:
        for address in list(self._servers):
            self.stop_listening(address)

    def attach(self, address: str, zone: CloudflareStandin, resolver_url: str, acme_root: str) -> None:
        """A test host: its side of the network serves as an edge address, its Cloudflare stand-in is a
        zone, its DNS stand-in answers every zone's names, its ACME server's root counts as public.

        Test hosts of one server name can exist side by side (a replaced droplet, a re-created stack),
        which Cloudflare never sees: a name is looked up in the zone of the host whose edge address
        was asked first, then in the other zones."""
        self.add_zone(zone)
        self.local_zone[address] = zone
        self.trust(address, acme_root)
        self.listen(address)
        self.resolvers[address] = resolver_url
        self.publish_dns()

    def detach(self, address: str, zone: CloudflareStandin) -> None:
        self.stop_listening(address)
        self.remove_zone(zone)
        self.public_roots.pop(address, None)
        self.resolvers.pop(address, None)
        self.local_zone.pop(address, None)
        self._published.pop(address, None)
        self._targets = {key: target for key, target in self._targets.items() if key[0] != address}
        self.publish_dns()

    def publish_dns(self) -> None:
        """What DNS answers on every test host: a proxied name resolves to that host's edge address (as
        Cloudflare answers with an edge near the asker), a DNS-only A record to its own address."""
        for address, url in self.resolvers.items():
            answers = self.dns_answers(self.local_zone.get(address))
            for name in self._published.get(address, set()) - set(answers):
                _challtestsrv(url, "/clear-a", {"host": f"{name}."})
            for name, target in answers.items():
                if (target or address) != self._targets.get((address, name), target or address):
                    # challtestsrv's add-a appends: a record that moved (turn. to the TURN droplet) would
                    # keep answering its old address too, where Cloudflare answers only the current one.
                    _challtestsrv(url, "/clear-a", {"host": f"{name}."})
                _challtestsrv(url, "/add-a", {"host": f"{name}.", "addresses": [target or address]})
                self._targets[(address, name)] = target or address
            self._published[address] = set(answers)

    # -- TLS --------------------------------------------------------------------------------------
    def _server_context(self) -> ssl.SSLContext:
        context = self._context_for("edge.invalid")

        def pick(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            if name:
                sock.context = self._context_for(name)

        context.sni_callback = pick
        return context

    def _context_for(self, name: str) -> ssl.SSLContext:
        with self._lock:
            if name not in self._contexts:
                cert, key = pki.server_cert(f"edge {name}", self.ca_key, self.ca_cert, [name])
                directory = Path(tempfile.mkdtemp(dir=self.workdir))
                (directory / "cert.pem").write_text(cert + self.ca_cert)
                (directory / "key.pem").write_text(key)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                with warnings.catch_warnings():  # deprecated on purpose: the zone's rules decide what is too old
                    warnings.simplefilter("ignore", DeprecationWarning)
                    context.minimum_version = ssl.TLSVersion.TLSv1
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
                self._contexts[name] = context
            return self._contexts[name]

    # -- the request path -------------------------------------------------------------------------
    def _zones_from(self, first: CloudflareStandin | None) -> list[CloudflareStandin]:
        return ([first] if first is not None else []) + [z for z in self.zones if z is not first]

    def zone_of(self, host: str, address: str) -> tuple[CloudflareStandin, dict[str, Any]] | None:
        """The zone and proxied A record of `host`, as asked at the edge address `address`."""
        for zone in self._zones_from(self.local_zone.get(address)):
            for record in list(zone.records.values()):
                if record["name"] == host and record["type"] == "A" and record.get("proxied"):
                    return zone, record
        return None

    def dns_answers(self, first: CloudflareStandin | None = None) -> dict[str, str | None]:
        """Every name the zones publish: proxied names -> None (the edge), DNS-only A records -> address;
        the zone `first` wins where zones share a name."""
        answers: dict[str, str | None] = {}
        for zone in reversed(self._zones_from(first)):
            for record in list(zone.records.values()):
                if record["type"] == "A":
                    answers[record["name"]] = None if record.get("proxied") else record["content"]
        return answers

    def origin_context(self, mode: str, zone: CloudflareStandin, host: str) -> ssl.SSLContext:
        """TLS to the origin as the SSL mode says, presenting the hostname's origin-pull certificate."""
        pair = zone.presented_certificate(host) or {}
        # Keyed by content, not names: a re-created host keeps its address but has a new ACME root, and a
        # re-created stack uploads a new origin-pull certificate.
        key = (mode, id(zone), hash(pair.get("certificate", "")), hash("".join(sorted(self.public_roots.values()))))
        with self._lock:
            if key not in self._origin_contexts:
                self._origin_contexts[key] = self._new_origin_context(mode, pair)
            return self._origin_contexts[key]

    def over_rate(self, zone: CloudflareStandin, rule: dict[str, Any], client: str) -> bool:
        """A rate limiting rule's count for one client address: over its requests per period?"""
        limits = rule.get("ratelimit") or {}
        period, allowed = float(limits.get("period", 10)), int(limits.get("requests_per_period", 1))
        now = time.monotonic()
        with self._lock:
            seen = [t for t in self._rates.get((id(zone), rule["id"], client), []) if now - t < period] + [now]
            self._rates[(id(zone), rule["id"], client)] = seen
        return len(seen) > allowed

    def _new_origin_context(self, mode: str, pair: dict[str, Any]) -> ssl.SSLContext:
        if mode == "strict":
            context = ssl.create_default_context(cadata="\n".join(self.public_roots.values()) or None)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if pair:
            pem = Path(tempfile.mkdtemp(dir=self.workdir)) / "origin-pull.pem"
            pem.write_text(pair["certificate"].rstrip("\n") + "\n" + pair["private_key"])
            context.load_cert_chain(pem)
        return context


def _challtestsrv(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls_context: ssl.SSLContext | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken client connection is the client's business, not a test failure."""

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.tls_context is not None:  # the handshake happens in the handler's thread
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


def _handler(edge: Edge, tls: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 300

        def handle(self) -> None:
            try:
                if tls:
                    self.request.do_handshake()
                super().handle()
            except (OSError, ssl.SSLError):  # a client that went away, or a handshake that failed
                pass

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: `edge.log` keeps what happened."""

        def handle_expect_100(self) -> bool:
            if int(self.headers.get("Content-Length") or 0) > MAX_BODY:
                self.answer(413, "error code: 413 (request body over 100 MB)")
                return False
            return super().handle_expect_100()

        def answer(self, status: int, body: str | bytes, headers: Iterable[tuple[str, str]] = (),
                   note: str = "") -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Server", "cloudflare")
            self.send_header("CF-RAY", secrets.token_hex(8) + "-E2E")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            edge.log.append({"host": self.headers.get("Host", ""), "path": self.path, "status": status,
                             "note": note, "client": self.client_address[0]})

        def fields(self, host: str) -> dict[str, Any]:
            version = self.request.version() if tls else ""
            return {"http.host": host, "http.request.uri.path": self.path.split("?", 1)[0],
                    "http.request.scheme": "https" if tls else "http", "ssl": tls, "cf.tls_version": version or "",
                    "http.user_agent": self.headers.get("User-Agent", ""), "ip.src": self.client_address[0]}

        def serve(self) -> None:
            try:
                self.route()
            except Exception:  # the stand-in's own failure: recorded for the tests, answered as 500
                edge.errors.append(traceback.format_exc())
                self.answer(500, "edge stand-in failure (see Edge.errors)")

        def route(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            listener = self.request.getsockname()[0]  # the edge address the client asked
            found = edge.zone_of(host, str(listener))
            if found is None:
                return self.answer(530, "error code: 1001 (DNS resolution error)", note="no proxied record")
            zone, record = found
            fields = self.fields(host)
            for rule in zone.rules_of(REDIRECT_PHASE):
                if rule.get("enabled", True) and rule["action"] == "redirect" and evaluate(rule["expression"], fields):
                    from_value = rule["action_parameters"]["from_value"]
                    target = evaluate(from_value["target_url"]["expression"], fields)
                    query = self.path.split("?", 1)[1] if "?" in self.path else ""
                    if from_value.get("preserve_query_string") and query:
                        target += "?" + query
                    return self.answer(int(from_value.get("status_code", 301)), "", [("Location", target)],
                                       note=f"redirect rule {rule['ref']}")
            settings = {"ssl": zone.settings.get("ssl", "flexible"), "bic": zone.settings.get("browser_check") == "on",
                        "security_level": zone.settings.get("security_level", "medium")}
            for rule in zone.rules_of(CONFIG_PHASE):
                if rule.get("enabled", True) and rule["action"] == "set_config" and evaluate(rule["expression"], fields):
                    settings.update(rule.get("action_parameters") or {})
            skipped: set[str] = set()  # phases and products a matching skip rule skips
            for rule in zone.rules_of(CUSTOM_PHASE):
                if not rule.get("enabled", True) or not evaluate(rule["expression"], fields):
                    continue
                if rule["action"] == "skip":
                    params = rule.get("action_parameters") or {}
                    skipped |= {*params.get("phases", ()), *params.get("products", ())}
                    if params.get("ruleset") == "current":
                        break
                    continue
                if rule["action"] == "block":
                    return self.answer(403, "error code: 1020 (blocked by a custom rule)", note=f"blocked by {rule['ref']}")
                if rule["action"] in CHALLENGES:
                    return self.challenge(f"challenged by {rule['ref']}")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.answer(413, "error code: 413 (request body over 100 MB)", [("Connection", "close")])
            body = self.rfile.read(length) if length else None
            if self.security_products(zone, fields, settings, skipped, body):
                return None
            if zone.bot_fight_mode and "Mozilla/" not in fields["http.user_agent"]:
                return self.challenge("Bot Fight Mode")
            extra: dict[str, str] = {}
            for rule in zone.rules_of(HEADER_PHASE):
                if rule.get("enabled", True) and rule["action"] == "rewrite" and evaluate(rule["expression"], fields):
                    for name, change in (rule.get("action_parameters") or {}).get("headers", {}).items():
                        if change.get("operation") in ("set", "add"):
                            extra[name] = str(change["value"] if "value" in change else evaluate(change["expression"], fields))
            self.forward(zone, record["content"], host, str(settings["ssl"]), body, extra)

        def security_products(self, zone: CloudflareStandin, fields: dict[str, Any], settings: dict[str, Any],
                              skipped: set[str], body: bytes | None) -> bool:
            """Rate limiting, the managed rules and the older security products, each unless a skip rule skipped
            it (Cloudflare docs, "Available skip options"); answered here when one stops the request."""
            if "http_ratelimit" not in skipped:
                for rule in zone.rules_of(RATELIMIT_PHASE):
                    if rule.get("enabled", True) and evaluate(rule["expression"], fields) and \
                            edge.over_rate(zone, rule, fields["ip.src"]):
                        self.answer(429, "error code: 1015 (rate limited)", note=f"rate limited by {rule['ref']}")
                        return True
            inspected = (self.path + (body or b"").decode("utf-8", "replace")).lower()
            if zone.managed_rules and "http_request_firewall_managed" not in skipped and \
                    any(signature in inspected for signature in MANAGED_RULE_SIGNATURES):
                self.answer(403, "error code: 1020 (blocked by the Cloudflare Free Managed Ruleset)", note="managed rules")
                return True
            if settings["bic"] and "bic" not in skipped and not fields["http.user_agent"]:
                self.challenge("Browser Integrity Check: no User-Agent")
                return True
            if settings["security_level"] not in ("off", "essentially_off") and "securityLevel" not in skipped and \
                    fields["ip.src"] in zone.bad_reputation:
                self.challenge("Security Level: the client's address has a poor reputation")
                return True
            return False

        def challenge(self, why: str) -> None:
            page = "<html><script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate\"></script></html>"
            self.answer(403, page, [("Content-Type", "text/html"), ("cf-mitigated", "challenge")], note=why)

        def forward(self, zone: CloudflareStandin, origin: str, host: str, mode: str, body: bytes | None,
                    extra: dict[str, str]) -> None:
            # What Cloudflare sets itself is never taken from the client (a forged CF-Connecting-IP).
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP_BY_HOP and not k.lower().startswith("cf-")
                       and k.lower() not in ("x-forwarded-proto", "x-forwarded-for")}
            client_ip = self.client_address[0]
            previous = self.headers.get("X-Forwarded-For")  # appended to, as Cloudflare does
            headers.update({"Host": host, "CF-Connecting-IP": client_ip, "X-Forwarded-Proto": "https" if tls else "http",
                            "X-Forwarded-For": f"{previous}, {client_ip}" if previous else client_ip,
                            "CF-Visitor": json.dumps({"scheme": "https" if tls else "http"})})
            # Header transform rules set their headers over the client's own (a client cannot forge them).
            headers = {k: v for k, v in headers.items() if k.lower() not in {n.lower() for n in extra}}
            headers.update(extra)
            if self.command == "GET" and self.headers.get("Upgrade", "").lower() == "websocket" and \
                    "upgrade" in self.headers.get("Connection", "").lower().replace(" ", "").split(","):
                headers.update({"Upgrade": "websocket", "Connection": "Upgrade"})
                return self.tunnel(zone, origin, host, mode, headers)
            connection: http.client.HTTPConnection
            if mode == "flexible":
                connection = http.client.HTTPConnection(origin, 80, timeout=CONNECT_TIMEOUT)
            else:
                context = edge.origin_context(mode, zone, host)
                connection = _OriginHTTPS(origin, host, context)
            try:
                try:
                    connection.connect()
                except ssl.SSLCertVerificationError:
                    return self.answer(526, "error code: 526 (invalid SSL certificate)", note="origin cert invalid")
                except ssl.SSLError:
                    return self.answer(525, "error code: 525 (SSL handshake failed)", note="origin handshake failed")
                except ConnectionRefusedError:
                    return self.answer(521, "error code: 521 (web server is down)", note="origin refused")
                except OSError:
                    return self.answer(522, "error code: 522 (connection timed out)", note="origin unreachable")
                assert connection.sock is not None
                connection.sock.settimeout(ORIGIN_TIMEOUT)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except TimeoutError:
                    return self.answer(524, "error code: 524 (a timeout occurred)", note="origin timeout")
                except (ConnectionError, http.client.HTTPException, ssl.SSLError) as error:
                    return self.answer(502, f"error code: 502 ({error})", note="origin broke off")
                # The edge's own Server and Date replace the origin's (one of each, as from Cloudflare).
                passed = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"server", "date"}]
                self.answer(response.status, data, passed, note=f"origin {response.status} via {mode}")
            finally:
                connection.close()

        def tunnel(self, zone: CloudflareStandin, origin: str, host: str, mode: str, headers: dict[str, str]) -> None:
            """A WebSocket: the upgrade request to the origin, its answer back, then bytes both ways."""
            try:
                raw = socket.create_connection((origin, 80 if mode == "flexible" else 443), CONNECT_TIMEOUT)
                upstream = raw if mode == "flexible" else \
                    edge.origin_context(mode, zone, host).wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError:
                return self.answer(526, "error code: 526 (invalid SSL certificate)", note="origin cert invalid")
            except (OSError, ssl.SSLError):
                return self.answer(502, "error code: 502 (no WebSocket to the origin)", note="origin unreachable")
            with upstream:
                request = f"GET {self.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                upstream.sendall((request + "\r\n").encode("latin-1"))
                answer = b""
                upstream.settimeout(ORIGIN_TIMEOUT)
                while b"\r\n\r\n" not in answer:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        return self.answer(502, "error code: 502 (origin closed the upgrade)", note="origin broke off")
                    answer += chunk
                head, _, early = answer.partition(b"\r\n\r\n")
                status_line, *lines = head.decode("latin-1").split("\r\n")
                status = int(status_line.split()[1])
                passed = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)
                          if k.strip().lower() not in (HOP_BY_HOP - {"upgrade", "connection"}) | {"server", "date"}]
                if status != 101:
                    return self.answer(status, early, passed, note=f"origin {status} to an upgrade via {mode}")
                self.send_response_only(101)
                for name, value in passed:
                    self.send_header(name, value)
                self.send_header("Server", "cloudflare")
                self.end_headers()
                self.wfile.flush()
                edge.log.append({"host": host, "path": self.path, "status": 101, "note": f"websocket via {mode}",
                                 "client": self.client_address[0]})
                if early:
                    self.wfile.write(early)
                    self.wfile.flush()
                upstream.settimeout(None)
                self.connection.settimeout(None)

                def to_origin() -> None:
                    try:
                        while data := self.rfile.read1(65536):
                            upstream.sendall(data)
                    except OSError:
                        pass
                    finally:
                        with contextlib.suppress(OSError):
                            upstream.shutdown(socket.SHUT_WR)

                sender = threading.Thread(target=to_origin, daemon=True)
                sender.start()
                try:
                    while data := upstream.recv(65536):
                        self.wfile.write(data)
                        self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True
            return None

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = serve

    return Handler


class _OriginHTTPS(http.client.HTTPSConnection):
    """HTTPS to the origin's address with the name as SNI (and for the certificate check)."""

    def __init__(self, address: str, name: str, context: ssl.SSLContext) -> None:
        super().__init__(address, 443, timeout=CONNECT_TIMEOUT, context=context)
        self.name = name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.name)  # type: ignore[attr-defined]


_shared: Edge | None = None


def shared_edge(make_workdir: Callable[[], Path]) -> Edge:
    """The one edge of this test process (Cloudflare's edge is one network for every zone)."""
    global _shared
    if _shared is None:
        _shared = Edge(make_workdir())
    return _shared
