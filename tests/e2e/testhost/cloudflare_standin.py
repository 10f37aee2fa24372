"""A stand-in of the Cloudflare v4 API, just enough for certbot's dns-cloudflare plugin.

Covers exactly the calls the plugin makes through Debian's python3-cloudflare 2.11 (read from
certbot_dns_cloudflare/_internal/dns_cloudflare.py), all under /client/v4:
  GET    zones?name=<candidate>&per_page=1      the zone of the configured domain, [] for other names
  POST   zones/<id>/dns_records                 {type, name, content, ttl}; TXT goes to challtestsrv
  GET    zones/<id>/dns_records?type=TXT&name=..&content=..&per_page=1
  DELETE zones/<id>/dns_records/<record id>     TXT is withdrawn from challtestsrv
plus GET zones/<id> for convenience. Any other path answers 404 in Cloudflare's error format.
Requests need some `Authorization: Bearer` token (any value), like the real API; plain HTTP is fine
because the client takes its base URL from CLOUDFLARE_API_URL.
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


class CloudflareStandin:
    """One zone (`domain`); TXT records are mirrored into pebble-challtestsrv at `challtestsrv_url`."""

    def __init__(self, bind: str, port: int, domain: str, challtestsrv_url: str) -> None:
        self.domain = domain.rstrip(".").lower()
        self.zone_id = hashlib.sha256(self.domain.encode()).hexdigest()[:32]
        self.challtestsrv_url = challtestsrv_url
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
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
                       "proxied": bool(body.get("proxied", False))}
                self.records[rid] = rec
                if rec["type"] == "TXT":
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
        return 404, "No route for that URI"

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
