"""`matrixRtc` on the shared host: the LiveKit SFU and lk-jwt-service switched on, exercised, and switched off.

The releases are stand-ins (tests/e2e/rtc_standins.py) served over HTTPS from the host side, downloaded and
checked by the program's own rtc-install; everything around them is real: the units and their sandbox, the real
Synapse loading the application service and the MatrixRTC config, nginx's routes through the edge stand-in,
ufw seen from the outsider, and the hourly checks. Only the steps `pulumi up` would run are run, both ways; at
the end the host is as first provisioned (matrixRtc off, the rtc settings removed) for later modules.

The SFU's WebSocket goes through the edge stand-in, which passes upgrades on as Cloudflare does.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shlex
import shutil
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.services import health, rtc
from tests.e2e.accounts import login
from tests.e2e.deployment import Deployment
from tests.e2e.rtc_standins import (
    LIVEKIT_VERSION,
    PORT,
    TAMPERED_ARCHIVE,
    UNLISTED,
    RtcReleases,
    build_rtc_releases,
)
from tests.e2e.runner import StepFailed, StepResult
from tests.e2e.standins import release_server
from tests.harness import unwrap

pytestmark = pytest.mark.e2e

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) matrix-stack-e2e"
# Both ways: the RTC steps and everything that names the SFU or the token service (Synapse's config, nginx's
# routes, Element's config, the firewall's ports, the checks after and between deploys).
SWITCHED = {"synapse-config", "nginx-sites", "element-web", "base-firewall", "selfcheck-verify", "health-schedule"}
EXPECTED_ON = {"rtc-install", "rtc-config"} | SWITCHED
EXPECTED_OFF = {"rtc-off"} | SWITCHED
SFU_SIGNAL, SFU_TCP, SFU_UDP, TOKEN_PORT = 7880, 7881, 7882, 8070


@dataclass
class RtcSwitch:
    """The shared deployment with matrixRtc on (the stand-ins' URLs and pins) and what switching did."""

    deployment: Deployment
    releases: RtcReleases
    on: tuple[set[str], list[StepResult]] = (set(), [])
    off: tuple[set[str], list[StepResult]] | None = None
    token: str = ""
    notes: list[str] = field(default_factory=list)

    def switch_off(self) -> tuple[set[str], list[StepResult]]:
        if self.off is None:
            self.off = self.deployment.apply_changes(matrixRtc=None, **dict.fromkeys(self.releases.settings()))
        return self.off


@pytest.fixture(scope="module")
def switch(deployment: Deployment) -> Iterator[RtcSwitch]:
    """matrixRtc on for the module; off again (settings removed) at its end, whatever happened."""
    directory = Path(tempfile.mkdtemp(prefix="matrix-stack-rtc-releases-", dir="/var/tmp"))
    address = deployment.host.host_side_address
    releases = build_rtc_releases(address, PORT, directory)
    state = RtcSwitch(deployment, releases)
    try:
        with release_server(address, PORT, directory):
            try:
                started = time.monotonic()
                state.on = deployment.apply_changes(matrixRtc=True, **releases.settings())
                print(f"\n  matrixRtc on: {time.monotonic() - started:.0f} s")
                _, state.token = login(deployment, "admin", deployment.admin_password)
                yield state
            finally:
                state.switch_off()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# helpers


def edge_call(deployment: Deployment, host: str, method: str, path: str, headers: dict[str, str] | None = None,
              body: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request through the edge stand-in, every response header kept (a repeated one shows twice)."""
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    connection = http.client.HTTPSConnection(host, 443, timeout=30, context=context)
    connection.sock = context.wrap_socket(socket.create_connection((deployment.edge_address, 443), 30),
                                          server_hostname=host)
    try:
        connection.request(method, path, body=body, headers={"User-Agent": USER_AGENT, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def matrix_host(deployment: Deployment) -> str:
    return f"matrix.{deployment.domain}"


def expected_transport(deployment: Deployment) -> dict[str, str]:
    return {"type": "livekit", "livekit_service_url": f"https://{matrix_host(deployment)}/livekit/jwt"}


def main_pid(deployment: Deployment, unit: str) -> int:
    return int(deployment.ssh(f"systemctl show -p MainPID --value {shlex.quote(unit)}").strip())


def unit_state(deployment: Deployment, unit: str) -> tuple[str, str]:
    """(is-active, is-enabled) of a unit; both commands exit non-zero for a stopped or disabled one."""
    quoted = shlex.quote(unit)
    out = deployment.ssh(f"systemctl is-active {quoted} || true; systemctl is-enabled {quoted} || true").split()
    return out[0], out[1]


def wait_listening(deployment: Deployment, port: int) -> None:
    deployment.ssh(f"for _ in $(seq 60); do ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.5; done; "
                   "exit 1")


OUTSIDER_PROBE = r"""
import json, socket, sys
address, tcp_echo, udp_echo, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
found = {}
try:
    with socket.create_connection((address, tcp_echo), timeout=3) as s:
        s.sendall(b"tcp-ping")
        found[f"{tcp_echo}/tcp"] = s.recv(64).decode()
except OSError as error:
    found[f"{tcp_echo}/tcp"] = f"error: {error}"
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
    u.settimeout(3)
    answer = "silence"
    for _ in range(3):
        u.sendto(b"udp-ping", (address, udp_echo))
        try:
            answer = u.recvfrom(64)[0].decode()
            break
        except OSError as error:
            answer = f"error: {error}"
    found[f"{udp_echo}/udp"] = answer
for port in map(int, closed):
    try:
        with socket.create_connection((address, port), timeout=3):
            found[f"{port}/tcp"] = "connected"
    except OSError as error:
        found[f"{port}/tcp"] = f"error: {error}"
print(json.dumps(found))
"""


# ---------------------------------------------------------------------------------------------
# a: the steps


def test_switching_on_runs_exactly_the_rtc_steps_and_what_names_them(switch: RtcSwitch) -> None:
    changed, results = switch.on
    ran = {r.name for r in results}
    print(f"\n  changed steps switching on: {sorted(changed)}")
    for result in results:
        print(f"    {result.name:24s} {result.seconds:6.1f} s")
    assert ran == EXPECTED_ON, f"unexpected: {sorted(ran - EXPECTED_ON)}, missing: {sorted(EXPECTED_ON - ran)}"
    assert changed == ran | {"rtc-off"}  # a step gone from the program is "changed" but runs nothing
    assert not any(name.startswith(("postgres-", "backup-", "synapse-install")) for name in changed)
    for unit in rtc.UNITS:
        assert unit_state(switch.deployment, unit) == ("active", "enabled"), unit


# ---------------------------------------------------------------------------------------------
# b, c: Synapse and the well-known


def test_synapse_serves_the_livekit_transport_and_reads_the_registration(switch: RtcSwitch) -> None:
    d = switch.deployment
    status, _, body = edge_call(d, matrix_host(d), "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
                                {"Authorization": f"Bearer {switch.token}"})
    print(f"\n  rtc/transports: {status} {body[:300]!r}")
    assert status == 200, body[:500]
    answer = json.loads(body)
    assert answer.get("rtc_transports") == [expected_transport(d)], answer
    assert d.ssh(f"stat -c '%a %U %G' {rtc.REGISTRATION}").strip() == "640 root matrix-synapse"
    assert rtc.REGISTRATION in d.ssh("cat /etc/matrix-synapse/homeserver.yaml")


def test_synapse_proxies_the_rtc_api_to_the_token_service_and_knows_its_token(switch: RtcSwitch) -> None:
    """The application service is loaded: Synapse passes an authenticated user's MatrixRTC request under
    rtc/livekit on to it (MSC4512, with the hs_token and the user's ID), and its as_token is a user of Synapse's."""
    d = switch.deployment
    path = "/_matrix/client/unstable/org.matrix.msc4143/rtc/livekit/get_token"
    status, _, body = edge_call(d, matrix_host(d), "POST", path, {"Authorization": f"Bearer {switch.token}",
                                                                  "Content-Type": "application/json"}, b"{}")
    print(f"\n  POST {path}: {status} {body[:300]!r}")
    assert status == 200, body[:500]
    answer = json.loads(body)
    assert (answer["server"], answer["path"], answer["method"]) == ("lk-jwt-service", path, "POST")
    assert answer["user"] == f"@admin:{d.domain}" and answer["from_homeserver"] is True, answer
    as_token = d.ssh(f"sed -n 's/^as_token: *//p' {rtc.REGISTRATION}").strip().strip('"')
    status, _, body = edge_call(d, matrix_host(d), "GET", "/_matrix/client/v3/account/whoami",
                                {"Authorization": f"Bearer {as_token}"})
    assert status == 200, body[:500]
    assert json.loads(body)["user_id"] == f"@{rtc.AS_SENDER}:{d.domain}"


def test_the_well_known_client_file_names_the_rtc_focus(switch: RtcSwitch) -> None:
    d = switch.deployment
    status, _, body = edge_call(d, d.domain, "GET", "/.well-known/matrix/client")
    assert status == 200, body[:500]
    assert json.loads(body).get("org.matrix.msc4143.rtc_foci") == [expected_transport(d)], body[:500]


# ---------------------------------------------------------------------------------------------
# d: nginx's routes


@pytest.mark.parametrize("path", ["/sfu/get", "/get_token"])
def test_token_requests_reach_the_token_service_with_one_cors_header(switch: RtcSwitch, path: str) -> None:
    d = switch.deployment
    status, headers, body = edge_call(d, matrix_host(d), "POST", f"/livekit/jwt{path}",
                                      {"Content-Type": "application/json", "Origin": f"https://chat.{d.domain}"},
                                      b'{"room": "!r:example.test"}')
    print(f"\n  POST /livekit/jwt{path}: {status} {body[:200]!r} ACAO {header_values(headers, 'Access-Control-Allow-Origin')}")
    assert status == 200, body[:500]
    answer = json.loads(body)
    assert (answer["server"], answer["path"], answer["method"]) == ("lk-jwt-service", path, "POST")
    assert answer["livekit_url"] == f"wss://{matrix_host(d)}/livekit/sfu"
    assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]


def test_a_cors_preflight_is_answered_by_nginx(switch: RtcSwitch) -> None:
    d = switch.deployment
    status, headers, body = edge_call(d, matrix_host(d), "OPTIONS", "/livekit/jwt/sfu/get",
                                      {"Origin": f"https://chat.{d.domain}", "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "content-type"})
    print(f"\n  OPTIONS /livekit/jwt/sfu/get: {status} {headers}")
    assert status == 204, body[:500]
    assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]
    assert "POST" in header_values(headers, "Access-Control-Allow-Methods")[0]
    assert "content-type" in header_values(headers, "Access-Control-Allow-Headers")[0].lower()


def test_the_sfu_route_reaches_the_sfu_through_the_edge(switch: RtcSwitch) -> None:
    """A plain request (no upgrade) on the SFU's prefix: the edge passes it, nginx strips the prefix."""
    d = switch.deployment
    status, _, body = edge_call(d, matrix_host(d), "GET", "/livekit/sfu/settings?x=1")
    assert status == 200, body[:500]
    answer = json.loads(body)
    assert (answer["server"], answer["path"]) == ("livekit-server", "/settings?x=1")


def test_a_websocket_upgrade_reaches_the_sfu_through_the_edge(switch: RtcSwitch) -> None:
    """As a client opens the SFU's signalling: through the edge stand-in (Cloudflare proxies WebSockets) and nginx,
    the 101 from the SFU back, then a frame there and its echo back."""
    d = switch.deployment
    context = ssl.create_default_context(cafile=str(d.ca_file))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /livekit/sfu/rtc?access_token=x HTTP/1.1\r\nHost: {matrix_host(d)}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nUser-Agent: {USER_AGENT}\r\n\r\n")
    with (socket.create_connection((d.edge_address, 443), timeout=15) as raw,
          context.wrap_socket(raw, server_hostname=matrix_host(d)) as tls):
        tls.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = tls.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        print(f"\n  upgrade: {lines[0]} {fields}")
        assert lines[0].startswith("HTTP/1.1 101"), lines
        guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        assert fields["sec-websocket-accept"] == base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
        assert fields["x-stand-in-path"] == "/rtc?access_token=x"
        mask, payload = os.urandom(4), b"hello sfu"
        tls.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        echoed = rest
        while len(echoed) < 2 + len(payload):
            chunk = tls.recv(4096)
            assert chunk, f"closed after {echoed!r}"
            echoed += chunk
        assert echoed[:2 + len(payload)] == bytes([0x81, len(payload)]) + payload


# ---------------------------------------------------------------------------------------------
# e: the firewall from the outsider


def test_the_outsider_reaches_the_media_ports_only(switch: RtcSwitch) -> None:
    d = switch.deployment
    # The SFU binds every address: what keeps 7880 from the outsider is the firewall, not the binding.
    assert "0.0.0.0:7880" in d.ssh(f"ss -Hltn 'sport = :{SFU_SIGNAL}'")
    argv = [sys.executable, "-c", OUTSIDER_PROBE, d.host.address, str(SFU_TCP), str(SFU_UDP), str(SFU_SIGNAL),
            str(TOKEN_PORT)]
    proc = d.host.outsider_run(argv, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    found = json.loads(proc.stdout)
    print(f"\n  from the outsider: {found}")
    assert found[f"{SFU_TCP}/tcp"] == "tcp-ping"
    assert found[f"{SFU_UDP}/udp"] == "udp-ping"
    assert found[f"{SFU_SIGNAL}/tcp"].startswith("error")
    assert found[f"{TOKEN_PORT}/tcp"].startswith("error")


# ---------------------------------------------------------------------------------------------
# f: download checks


@pytest.mark.parametrize(("version", "message"), [(TAMPERED_ARCHIVE, "checksum MISMATCH"),
                                                  (UNLISTED, "checksums.txt lists")],
                         ids=["tampered-archive", "unlisted-pin"])
def test_a_bad_livekit_download_is_refused_and_the_running_services_stay(switch: RtcSwitch, version: str,
                                                                         message: str) -> None:
    d = switch.deployment
    before = d.ssh(f"ls -A {rtc.RELEASES}")
    pids = {unit: main_pid(d, unit) for unit in rtc.UNITS}
    try:
        with pytest.raises(StepFailed) as failure:
            d.apply_changes(livekitVersion=version, livekitSha256=switch.releases.livekit_sha256[version])
        result = failure.value.result
        print(f"\n  {version}: {result.name} exited {result.returncode}: {(result.stderr + result.stdout)[-400:]}")
        assert result.name == "rtc-install"
        assert message in result.stderr + result.stdout
        assert d.ssh(f"ls -A {rtc.RELEASES}") == before
        assert {unit: main_pid(d, unit) for unit in rtc.UNITS} == pids
        assert all(unit_state(d, unit)[0] == "active" for unit in rtc.UNITS)
    finally:
        d.apply_changes(livekitVersion=None, livekitSha256=switch.releases.livekit_sha256[LIVEKIT_VERSION])
    assert {unit: main_pid(d, unit) for unit in rtc.UNITS} == pids


# ---------------------------------------------------------------------------------------------
# g: the sandbox


def test_both_services_run_as_dynamic_users_who_cannot_read_the_secrets(switch: RtcSwitch) -> None:
    d = switch.deployment
    for unit in rtc.UNITS:
        shown = dict(line.split("=", 1) for line in
                     d.ssh(f"systemctl show -p DynamicUser -p User -p MainPID {unit}").splitlines() if "=" in line)
        pid = shown["MainPID"]
        uid, gid = d.ssh(f"ps -o uid=,gid= -p {pid}").split()
        groups = d.ssh(f"awk '/^Groups:/ {{ $1 = \"\"; print }}' /proc/{pid}/status").split()
        print(f"\n  {unit}: {shown}, uid {uid} gid {gid} groups {groups}")
        assert shown["DynamicUser"] == "yes" and uid != "0" and gid != "0"
        assert groups == [] or "0" not in groups
        group_option = f"--groups={','.join(groups)}" if groups else "--clear-groups"
        for secret in (rtc.TOKEN_SERVICE_ENV, rtc.LIVEKIT_CONFIG, "/etc/matrix-synapse/homeserver.yaml",
                       rtc.REGISTRATION):
            proc = d.host.ssh(f"setpriv --reuid={uid} --regid={gid} {group_option} cat {secret}", timeout=30)
            assert proc.returncode != 0 and b"Permission denied" in proc.stderr, (unit, secret, proc.stderr)


def test_no_world_readable_file_holds_an_rtc_secret(switch: RtcSwitch) -> None:
    """The SFU's API secret and the application service's tokens are only in root's and Synapse's files."""
    recording = switch.deployment.recording
    assert recording is not None
    values = [str(unwrap(recording.named(f"secrets-{name}").raw_outputs["result"])) for name in
              ("livekit-secret", "rtc-as-token", "rtc-hs-token")]
    assert all(len(v) >= 32 for v in values)
    script = ('f=$(mktemp); trap \'rm -f "$f"\' EXIT; cat > "$f"; '
              'timeout 600 grep -rlF -D skip -f "$f" /etc /var /opt /root /home /usr/local /run 2>/dev/null | '
              "while IFS= read -r p; do stat -c '%a %U %G|%n' \"$p\"; done")
    listing = switch.deployment.ssh(f"bash -c {shlex.quote(script)}", stdin="\n".join(values) + "\n", timeout=900)
    files = {path: meta for meta, path in (line.split("|", 1) for line in listing.splitlines())}
    print(f"\n  files holding an rtc secret: {files}")
    assert {rtc.LIVEKIT_CONFIG, rtc.TOKEN_SERVICE_ENV, rtc.REGISTRATION} <= files.keys()
    assert files[rtc.LIVEKIT_CONFIG].startswith("600 root") and files[rtc.TOKEN_SERVICE_ENV].startswith("600 root")
    assert not [p for p, meta in files.items() if int(meta.split()[0], 8) & 0o004], files


# ---------------------------------------------------------------------------------------------
# h: the hourly checks


def test_the_hourly_checks_name_a_stopped_sfu(switch: RtcSwitch) -> None:
    d = switch.deployment
    d.ssh(f"systemctl stop {rtc.SFU_UNIT}")
    try:
        proc = d.host.ssh(health.COMMAND, timeout=180)
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        print(f"\n  checks with the SFU stopped: exit {proc.returncode}: {out[-500:]}")
        assert proc.returncode == 1, out
        assert f"{rtc.SFU_UNIT} is inactive" in out, out
    finally:
        d.ssh(f"systemctl start {rtc.SFU_UNIT}")
        wait_listening(d, SFU_SIGNAL)
    proc = d.host.ssh(health.COMMAND, timeout=180)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0 and rtc.SFU_UNIT not in out, out


# ---------------------------------------------------------------------------------------------
# a (the way back): last, as it ends the module's state


def test_switching_off_runs_rtc_off_and_stops_both_units(switch: RtcSwitch) -> None:
    d = switch.deployment
    changed, results = switch.switch_off()
    ran = {r.name for r in results}
    print(f"\n  changed steps switching off: {sorted(changed)}, ran: {sorted(ran)}")
    assert ran == EXPECTED_OFF, f"unexpected: {sorted(ran - EXPECTED_OFF)}, missing: {sorted(EXPECTED_OFF - ran)}"
    assert changed == ran | {"rtc-install", "rtc-config"}  # gone from the program: nothing runs for them
    for unit in rtc.UNITS:
        assert unit_state(d, unit) == ("inactive", "disabled"), unit
    assert "livekit" not in d.ssh("cat /etc/matrix-synapse/homeserver.yaml")
    rules = d.ssh("ufw status")
    assert f"{SFU_TCP}/tcp" not in rules and f"{SFU_UDP}/udp" not in rules, rules  # the media ports closed again
    status, _, _ = edge_call(d, matrix_host(d), "POST", "/livekit/jwt/sfu/get", {"Content-Type": "application/json"},
                             b"{}")
    assert status == 404
    status, _, body = edge_call(d, d.domain, "GET", "/.well-known/matrix/client")
    assert b"rtc_foci" not in body
