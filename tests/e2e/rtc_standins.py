"""Local stand-ins for the MatrixRTC releases the guest cannot download here: LiveKit and lk-jwt-service.

GitHub is unreachable, so the test serves release files shaped like upstream's from the host side of the test
network, over HTTPS with a certificate from the edge stand-in's CA (standins.release_server): LiveKit's
`v<version>/livekit_<version>_linux_amd64.tar.gz` with the release's goreleaser `checksums.txt`, and
lk-jwt-service's `v<version>/lk-jwt-service_linux_amd64`. The programs inside are small python3 scripts (the
droplet has python3 and python3-yaml, cloud-init's own) that read the config the deployment wrote the way the
real programs do, refuse to start when an item the real ones need is missing or wrong, and then listen where
the real ones listen: so the units, their sandbox, nginx's routes and the firewalls are exercised for real.

Two LiveKit versions are served wrong on purpose: TAMPERED_ARCHIVE's archive is not the one its pin (and its
checksums.txt) name, as a swapped mirror file would be; UNLISTED's archive matches its pin but its
checksums.txt lists another sha256 for it, as a pin taken from somewhere else than the release would.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

LIVEKIT_VERSION = "1.13.5"
LK_JWT_SERVICE_VERSION = "0.10.0"
TAMPERED_ARCHIVE = "1.13.98"
UNLISTED = "1.13.99"
PORT = 8089  # beside the Element mirror (deployment.ELEMENT_PORT)

# The SFU: --config PATH, the keys, ports and room/webhook settings LiveKit needs; HTTP with a WebSocket
# upgrade on `port`, an echo on rtc.tcp_port and rtc.udp_port, on every address as LiveKit binds them.
LIVEKIT_SERVER = r'''#!/usr/bin/python3
"""matrix-stack e2e stand-in for livekit-server (not LiveKit): checks its config, then listens like it."""
import base64, hashlib, json, socketserver, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def refuse(why):
    print(f"livekit-server stand-in: {why}", file=sys.stderr, flush=True)
    sys.exit(1)


if len(sys.argv) != 3 or sys.argv[1] != "--config":
    refuse(f"usage: livekit-server --config PATH (got {sys.argv[1:]})")
with open(sys.argv[2]) as f:
    config = yaml.safe_load(f) or {}
rtc = config.get("rtc") or {}
ports = {"port": config.get("port"), "rtc.tcp_port": rtc.get("tcp_port"), "rtc.udp_port": rtc.get("udp_port")}
for name, value in ports.items():
    if not isinstance(value, int) or not 0 < value < 65536:
        refuse(f"{name} is {value!r}, not a port")
keys = config.get("keys") or {}
if not keys:
    refuse("no keys")
if any(not isinstance(secret, str) or len(secret) < 32 for secret in keys.values()):
    refuse("an API secret shorter than 32 characters")
if (config.get("room") or {}).get("auto_create") is not False:
    refuse("room.auto_create must be false")
webhook = config.get("webhook") or {}
if not webhook.get("urls") or webhook.get("api_key") not in keys:
    refuse("webhook.urls empty or webhook.api_key not among keys")
if rtc.get("use_external_ip") is not False or not rtc.get("node_ip"):
    refuse("rtc.node_ip missing (or use_external_ip not false)")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Signal(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("X-Stand-In-Path", self.path)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            self.echo_one_frame()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"server": "livekit-server", "path": self.path, "method": self.command}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Stand-In-Path", self.path)
        self.end_headers()
        self.wfile.write(body)

    def echo_one_frame(self):
        """One client frame (masked) back unmasked, then hold until the client goes."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(self.rfile.read(2), "big")
        elif length == 127:
            length = int.from_bytes(self.rfile.read(8), "big")
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
        if length < 126:
            self.wfile.write(bytes([head[0], length]) + data)
        else:
            self.wfile.write(bytes([head[0], 126]) + length.to_bytes(2, "big") + data)
        self.wfile.flush()
        while self.rfile.read(1024):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = answer


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)


class UdpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


for server in (socketserver.ThreadingTCPServer, socketserver.ThreadingUDPServer, ThreadingHTTPServer):
    server.allow_reuse_address = True
    server.daemon_threads = True
servers = [ThreadingHTTPServer(("0.0.0.0", ports["port"]), Signal),
           socketserver.ThreadingTCPServer(("0.0.0.0", ports["rtc.tcp_port"]), TcpEcho),
           socketserver.ThreadingUDPServer(("0.0.0.0", ports["rtc.udp_port"]), UdpEcho)]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"livekit-server stand-in: listening on {ports}", flush=True)
servers[0].serve_forever()
'''

# The token service: its settings from the environment as lk-jwt-service reads them; /healthz, and a JSON
# echo of every other request with its own CORS header (nginx must not let it through beside its own).
LK_JWT_SERVICE = r'''#!/usr/bin/python3
"""matrix-stack e2e stand-in for lk-jwt-service (not lk-jwt-service): checks its settings, then answers."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def refuse(why):
    print(f"lk-jwt-service stand-in: {why}", file=sys.stderr, flush=True)
    sys.exit(1)


env = os.environ
for name in ("LIVEKIT_JWT_BIND", "LIVEKIT_URL", "LIVEKIT_KEY", "LIVEKIT_SECRET", "LIVEKIT_AS_TOKEN",
             "LIVEKIT_HS_TOKEN", "LIVEKIT_FULL_ACCESS_HOMESERVERS"):
    if not env.get(name):
        refuse(f"{name} is not set")
if len(env["LIVEKIT_SECRET"]) < 32:
    refuse("LIVEKIT_SECRET is shorter than 32 characters")
if not env["LIVEKIT_URL"].startswith("wss://"):
    refuse(f"LIVEKIT_URL {env['LIVEKIT_URL']} is not wss://")
host, _, port = env["LIVEKIT_JWT_BIND"].rpartition(":")
if not port.isdigit():
    refuse(f"LIVEKIT_JWT_BIND {env['LIVEKIT_JWT_BIND']} is not host:port")


class Tokens(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/healthz":
            body = b"ok\n"
        else:
            # Synapse's proxy (MSC4512) says who asks and authenticates itself with the hs_token.
            body = json.dumps({"server": "lk-jwt-service", "path": self.path, "method": self.command,
                               "livekit_url": env["LIVEKIT_URL"],
                               "user": self.headers.get("X-Matrix-User-Identifier"),
                               "from_homeserver": self.headers.get("Authorization")
                               == f"Bearer {env['LIVEKIT_HS_TOKEN']}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = answer


ThreadingHTTPServer.daemon_threads = True
print(f"lk-jwt-service stand-in: listening on {host}:{port}", flush=True)
ThreadingHTTPServer((host, int(port)), Tokens).serve_forever()
'''


@dataclass(frozen=True)
class RtcReleases:
    """The settings that point the deployment at the stand-ins, and each LiveKit version's pin."""

    livekit_url_template: str
    livekit_sha256: dict[str, str]  # version -> the pin to set (livekitSha256)
    lk_jwt_service_url_template: str
    lk_jwt_service_sha256: str

    def settings(self, livekit_version: str = LIVEKIT_VERSION) -> dict[str, str]:
        """The config for matrixRtc on the stand-ins (the versions' defaults are the stand-ins' own)."""
        return {"livekitDownloadUrl": self.livekit_url_template, "livekitSha256": self.livekit_sha256[livekit_version],
                "lkJwtServiceDownloadUrl": self.lk_jwt_service_url_template,
                "lkJwtServiceSha256": self.lk_jwt_service_sha256}


def _archive(version: str, note: str = "") -> bytes:
    """livekit_<version>_linux_amd64.tar.gz as goreleaser lays it out: LICENSE, README, the binary, at the top."""
    buffer = io.BytesIO()
    files = {"LICENSE": (f"stand-in for LiveKit {version}{note}\n".encode(), 0o644),
             "README.md": (b"matrix-stack e2e stand-in\n", 0o644),
             "livekit-server": (LIVEKIT_SERVER.encode(), 0o755)}
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_rtc_releases(address: str, port: int, directory: Path) -> RtcReleases:
    """The release files under `directory`, to be served at https://address:port/ (standins.release_server)."""
    pins = {}
    for version in (LIVEKIT_VERSION, TAMPERED_ARCHIVE, UNLISTED):
        name = f"livekit_{version}_linux_amd64.tar.gz"
        archive = _archive(version)
        pins[version] = _sha256(archive)
        listed = pins[version]
        if version == TAMPERED_ARCHIVE:
            archive = _archive(version, note=" (swapped after the release)")
        if version == UNLISTED:
            listed = _sha256(_archive(version, note=" (what the release really holds)"))
        release = directory / f"v{version}"
        release.mkdir(parents=True, exist_ok=True)
        (release / name).write_bytes(archive)
        (release / "checksums.txt").write_text(f"{'0' * 64}  livekit_{version}_darwin_arm64.tar.gz\n"
                                               f"{listed}  {name}\n")
    token = LK_JWT_SERVICE.encode()
    token_release = directory / f"v{LK_JWT_SERVICE_VERSION}"
    token_release.mkdir(parents=True, exist_ok=True)
    (token_release / "lk-jwt-service_linux_amd64").write_bytes(token)
    base = f"https://{address}:{port}"
    return RtcReleases(
        livekit_url_template=f"{base}/v{{version}}/livekit_{{version}}_linux_amd64.tar.gz",
        livekit_sha256=pins,
        lk_jwt_service_url_template=f"{base}/v{{version}}/lk-jwt-service_linux_amd64",
        lk_jwt_service_sha256=_sha256(token),
    )
