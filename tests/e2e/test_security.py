"""The security boundaries of the deployed server, probed from outside and inside the guest.

Two vantage points: the host side of the test network (198.18.N.1), which the deployment treats
as Cloudflare's address range and as the SSH-allowed CIDR, and the outsider namespace (198.19.N.2),
which is neither. Web requests of users go through the edge stand-in (tests/e2e/edge.py), as in
production; the probes of the origin itself go straight to it. Every probe is bounded (one scan per
vantage point, short timeouts) and only touches the test host's addresses or the guest's loopback.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from components import paths
from components.services import synapse
from components.settings import DEFAULTS
from tests.e2e.accounts import guest_api
from tests.e2e.clients import tls_context
from tests.e2e.deployment import DOMAIN, HOMESERVER, Deployment
from tests.e2e.runner import StepFailed, StepResult, connect, deploy_key_file
from tests.harness import unwrap
from tests.pki import origin_pull_pair

pytestmark = pytest.mark.e2e

SCAN = Path(__file__).with_name("scan.py")
PUBLIC_TCP = [22, 80, 443, 3478, 5349]
TURN_TCP = [3478, 5349]
INTERNAL_TCP = {5432: "PostgreSQL", 8008: "Synapse", 5766: "coturn CLI"}
SYNAPSE_LOG = "/var/log/matrix-synapse/homeserver.log"


# ---------------------------------------------------------------------------------------------
# helpers


# Where the test's own requests come from: an address of this machine that is neither the edge nor the
# origin, so the client address Synapse records can only have come from the edge's CF-Connecting-IP.
CLIENT_SOURCE = "127.0.0.77"


class _GuestHTTPS(HTTPSConnection):
    """HTTPS to an address with the deployment's hostname as Host and SNI (no DNS here)."""

    def __init__(self, address: str, hostname: str, context: ssl.SSLContext) -> None:
        super().__init__(hostname, 443, timeout=120, context=context)
        self.address = address
        self.context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.address, 443), self.timeout, source_address=(CLIENT_SOURCE, 0))
        self.sock = self.context.wrap_socket(sock, server_hostname=self.host)


def http(
    deployment: Deployment, method: str, path: str, token: str | None = None, headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """One request to the homeserver's name through the edge, as a user's client makes it (with its own name: the
    zone's Browser Integrity Check challenges requests without one outside the Matrix paths)."""
    all_headers = {"Content-Type": "application/json", "User-Agent": "matrix-stack-e2e", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    connection = _GuestHTTPS(deployment.edge_address, f"matrix.{DOMAIN}", tls_context(deployment.ca_file))
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def reconfigure(deployment: Deployment, **changes: Any) -> set[str]:
    """Apply config changes the way `pulumi up` would (only the steps whose triggers changed)."""
    started = time.monotonic()
    changed, deployment.results = deployment.apply_changes(**changes)
    print(f"\n  {changes}: re-ran {sorted(changed)} in {time.monotonic() - started:.1f} s")
    return changed


def secret_values(deployment: Deployment) -> dict[str, str]:
    """Every generated secret of this deployment (as the program generated them) and the certbot token."""
    recording = deployment.recording
    assert recording is not None
    names = {
        "postgres password": "secrets-postgres-password",
        "registration shared secret": "secrets-registration-shared-secret",
        "macaroon secret": "secrets-macaroon-secret",
        "form secret": "secrets-form-secret",
        "turn shared secret": "secrets-turn-shared-secret",
        "admin password": "secrets-admin-password",
    }
    values = {label: str(unwrap(recording.named(name).raw_outputs["result"])) for label, name in names.items()}
    values["signing key seed"] = str(unwrap(recording.named("secrets-signing-key-seed").raw_outputs["base64"])).rstrip("=")
    values["certbot token"] = str(deployment.config["certbotCloudflareToken"])
    assert all(len(v) >= 20 for v in values.values()), "a secret is too short to search for reliably"
    return values


def leaked(text: str, secrets_by_label: dict[str, str]) -> list[str]:
    return [label for label, value in secrets_by_label.items() if value in text]


def scan_tcp(argv_prefix: list[str], address: str, run_in: Any = None) -> dict[str, Any]:
    argv = [*argv_prefix, sys.executable, str(SCAN), "tcp", address, "--timeout", "1", "--concurrency", "4000"]
    proc = run_in(argv) if run_in else subprocess.run(argv, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return dict(json.loads(proc.stdout))


def probe_udp(deployment: Deployment, port: int) -> dict[str, Any]:
    argv = [sys.executable, str(SCAN), "udp", deployment.host.address, str(port), "--timeout", "1"]
    proc = deployment.host.outsider_run(argv, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return dict(json.loads(proc.stdout))


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def initial_results(deployment: Deployment) -> list[StepResult]:
    """The results of the session's full provisioning run, before any test re-runs steps."""
    return list(deployment.results)


@pytest.fixture(scope="module")
def admin_token(deployment: Deployment, initial_results: list[StepResult]) -> str:
    """The admin's access token from one real password login through nginx."""
    return password_login(deployment, "admin", deployment.admin_password)


def password_login(deployment: Deployment, user: str, password: str) -> str:
    status, body = http(
        deployment, "POST", "/_matrix/client/v3/login",
        body={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password},
    )
    assert status == 200, body
    return str(body["access_token"])


def create_user(deployment: Deployment, admin_token: str, prefix: str) -> tuple[str, str]:
    """A fresh user made with the admin API: (user id, password)."""
    user_id = f"@{prefix}-{secrets.token_hex(4)}:{DOMAIN}"
    password = secrets.token_urlsafe(18)
    status, body = guest_api(deployment, admin_token, "PUT", f"/_synapse/admin/v2/users/{quote(user_id)}",
                             {"password": password, "admin": False})
    assert status == 201, body
    return user_id, password


def new_user(deployment: Deployment, admin_token: str, prefix: str) -> tuple[str, str]:
    """A fresh user and an access token for it from the admin API (no rate-limited login). Synapse
    attributes such a token's requests to the admin (track_puppeted_user_ips is off)."""
    user_id, _ = create_user(deployment, admin_token, prefix)
    status, body = guest_api(deployment, admin_token, "POST", f"/_synapse/admin/v1/users/{quote(user_id)}/login", {})
    assert status == 200, body
    return user_id, str(body["access_token"])


# ---------------------------------------------------------------------------------------------
# 1-2: what is reachable from where


def test_host_side_reaches_exactly_ssh_web_and_turn(deployment: Deployment, initial_results: list[StepResult]) -> None:
    result = scan_tcp([], deployment.host.address)
    print(f"\n  host-side TCP scan of 65535 ports: {result['seconds']} s, {result['counts']}, open {result['open']}")
    for port, name in INTERNAL_TCP.items():
        assert port not in result["open"], f"{name} ({port}) is reachable from the host side"
    assert result["open"] == PUBLIC_TCP
    listening = deployment.ssh("ss -Hltn")
    print("  guest listeners on the internal ports:",
          [line.split()[3] for line in listening.splitlines() if line.split()[3].rsplit(":", 1)[1] in {"5432", "8008", "5766"}])
    assert re.search(r"127\.0\.0\.1:5432\s", listening) and re.search(r"127\.0\.0\.1:8008\s", listening)


def test_outsider_reaches_only_turn(deployment: Deployment) -> None:
    result = scan_tcp([], deployment.host.address, run_in=lambda argv: deployment.host.outsider_run(argv, timeout=300))
    print(f"\n  outsider TCP scan of 65535 ports: {result['seconds']} s, {result['counts']}, open {result['open']}")
    for port, name in {22: "SSH", 80: "HTTP", 443: "HTTPS", **INTERNAL_TCP}.items():
        assert port not in result["open"], f"{name} ({port}) is reachable from the outsider"
    assert result["open"] == TURN_TCP


def test_outsider_gets_stun_answers_on_3478_and_silence_elsewhere(deployment: Deployment) -> None:
    stun = probe_udp(deployment, 3478)
    print(f"\n  3478/udp: {stun}")
    assert stun["answer"] == "stun" and stun["type"] == 0x0101  # Binding Success Response
    assert stun["magic_ok"] and stun["transaction_ok"]
    assert str(stun["mapped"]).split(":")[0] == deployment.host.outsider_address  # the outsider as the server saw it

    closed = probe_udp(deployment, 3479)  # outside the relay range, nothing allowed there
    print(f"  3479/udp: {closed}")
    assert closed["answer"] == "none"  # dropped: no STUN answer and not even an ICMP port-unreachable

    # Control: inside the relay range the firewall lets packets through, so a port with no
    # allocation answers with ICMP port-unreachable; the silence above is the firewall's doing.
    low, high = (int(p) for p in str(deployment.config.get("turnRelayPorts", DEFAULTS["turnRelayPorts"])).split("-"))
    relay = {port: probe_udp(deployment, port)["answer"] for port in (high, high - 1, low)}
    print(f"  relay-range ports without an allocation: {relay}")
    assert "refused" in relay.values()


def _curl(url: str, deployment: Deployment, *extra: str) -> list[str]:
    """curl straight to the origin (not through the edge), trusting the ACME server's root."""
    host = url.split("/")[2]
    port = "443" if url.startswith("https") else "80"
    return ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--max-time", "5",
            "--cacert", str(deployment.origin_ca_file), "--resolve", f"{host}:{port}:{deployment.host.address}",
            *extra, url]


def origin_pull_client(deployment: Deployment, directory: Path) -> Path:
    """The client certificate the edge presents for this zone (the one the program uploaded)."""
    assert deployment.recording is not None
    (uploaded,) = deployment.recording.of_type(
        "cloudflare:index/authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate")
    path = directory / "origin-pull-client.pem"
    path.write_text(uploaded.inputs["certificate"].rstrip("\n") + "\n" + uploaded.inputs["privateKey"])
    path.chmod(0o600)
    return path


def test_the_origin_answers_only_this_zones_cloudflare(deployment: Deployment, tmp_path: Path) -> None:
    """Authenticated Origin Pulls: from a Cloudflare address (the host side) the origin refuses a request
    without the stack's client certificate, or with another zone's, and answers with it; through the
    edge, which presents it, everything works. A name the origin does not serve gets nothing."""
    url = f"{HOMESERVER}/_matrix/client/versions"
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(origin_pull_pair("another Cloudflare customer's zone")[1])
    stranger.chmod(0o600)
    answers = {
        "no certificate": subprocess.run(_curl(url, deployment), capture_output=True, text=True, timeout=30).stdout,
        "another zone's": subprocess.run(_curl(url, deployment, "--cert", str(stranger)), capture_output=True,
                                         text=True, timeout=30).stdout,
        "this zone's": subprocess.run(_curl(url, deployment, "--cert", str(origin_pull_client(deployment, tmp_path))),
                                      capture_output=True, text=True, timeout=30).stdout,
    }
    status, _ = http(deployment, "GET", "/_matrix/client/versions")
    unknown = subprocess.run(_curl("https://other-site.example.net/", deployment), capture_output=True, text=True,
                             timeout=30)
    print(f"\n  straight to the origin from a Cloudflare address: {answers}; through the edge: {status}; "
          f"unknown name: exit {unknown.returncode} {unknown.stderr.strip()}")
    assert answers == {"no certificate": "400", "another zone's": "400", "this zone's": "200"}
    assert status == 200
    assert unknown.returncode != 0 and unknown.stdout in ("", "000")  # TLS handshake refused


@pytest.mark.parametrize(
    ("url", "expected"),
    [(f"{HOMESERVER}/_matrix/client/versions", "400"), (f"http://chat.{DOMAIN}/", "301")],
    ids=["https-443", "http-80"],
)
def test_web_ports_answer_the_host_side_but_not_the_outsider(deployment: Deployment, url: str, expected: str) -> None:
    """Straight to the origin: the host side (a Cloudflare address) reaches nginx (which then wants the
    origin-pull certificate on 443, see above); the outsider does not even connect."""
    argv = _curl(url, deployment)
    inside = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    outside = deployment.host.outsider_run(argv, timeout=30)
    print(f"\n  {url}: host side -> {inside.stdout} (exit {inside.returncode}); "
          f"outsider -> exit {outside.returncode} {outside.stderr.decode().strip()}")
    assert inside.returncode == 0 and inside.stdout == expected
    assert outside.returncode != 0 and outside.stdout.decode() in ("", "000")


# ---------------------------------------------------------------------------------------------
# 3: the client address Synapse records


def test_synapse_records_cf_connecting_ip_only_from_trusted_sources(deployment: Deployment, admin_token: str) -> None:
    user_id, password = create_user(deployment, admin_token, "ipcheck")
    token = password_login(deployment, user_id, password)  # a real login: its requests are the user's own
    trusted_agent, untrusted_agent = f"sec-trusted-{secrets.token_hex(3)}", f"sec-untrusted-{secrets.token_hex(3)}"

    # Through the edge, which sets CF-Connecting-IP to the address it saw (a forged one is replaced).
    status, body = http(deployment, "GET", "/_matrix/client/v3/account/whoami", token,
                        {"CF-Connecting-IP": "203.0.113.77", "User-Agent": trusted_agent})
    assert status == 200 and body["user_id"] == user_id

    # From inside the guest to nginx: source 127.0.0.1, which is no Cloudflare range (with the origin-pull
    # certificate, so nginx answers at all).
    curl_config = "\n".join([
        f'url = "{HOMESERVER}/_matrix/client/v3/account/whoami"',
        f'resolve = "matrix.{DOMAIN}:443:127.0.0.1"',
        'noproxy = "*"',
        "insecure",
        f'cert = "{paths.ORIGIN_PULL_CLIENT}"',
        f'header = "Authorization: Bearer {token}"',
        'header = "CF-Connecting-IP: 203.0.113.88"',
        f'user-agent = "{untrusted_agent}"',
        'write-out = "\\n%{http_code}"',
    ]) + "\n"
    answer = deployment.ssh("curl -sS --max-time 30 -K -", stdin=curl_config)
    assert answer.rstrip().endswith("200") and user_id in answer, answer

    connections: list[dict[str, Any]] = []
    for _ in range(20):  # bounded: Synapse may batch client-IP updates
        status, whois = guest_api(deployment, admin_token, "GET", f"/_synapse/admin/v1/whois/{quote(user_id)}")
        assert status == 200, whois
        connections = [c for device in whois["devices"].values() for s in device["sessions"] for c in s["connections"]]
        agents = {c["user_agent"] for c in connections}
        if {trusted_agent, untrusted_agent} <= agents:
            break
        time.sleep(1)
    seen = {c["user_agent"]: c["ip"] for c in connections}
    print(f"\n  whois {user_id}: {seen}")
    assert seen.get(trusted_agent) == CLIENT_SOURCE  # the client's address, as the edge saw it
    assert seen.get(untrusted_agent) == "127.0.0.1"
    assert not {"203.0.113.77", "203.0.113.88"} & {c["ip"] for c in connections}


# ---------------------------------------------------------------------------------------------
# 4: TURN relays


def turn_credentials(deployment: Deployment, admin_token: str, case: str) -> tuple[str, str]:
    """Credentials from Synapse's turnServer endpoint, for a user of this case alone (coturn's
    user-quota counts allocations per user part, and failed runs keep theirs for 10 minutes)."""
    _, token = new_user(deployment, admin_token, f"turn-{case}")
    status, body = http(deployment, "GET", "/_matrix/client/v3/voip/turnServer", token)
    assert status == 200, body
    assert any(f"turn.{DOMAIN}" in uri for uri in body["uris"])
    return str(body["username"]), str(body["password"])


def uclient(deployment: Deployment, username: str, password: str, *options: str) -> str:
    proc = subprocess.run(
        ["turnutils_uclient", *options, "-u", username, "-w", password, deployment.host.address],
        capture_output=True, text=True, timeout=120,
    )
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


DENIED_PEERS = [
    ("loopback", "127.0.0.1", "3480"),
    ("private-10", "10.0.0.1", "3480"),
    ("private-172", "172.16.0.1", "3480"),
    ("private-192", "192.168.1.1", "3480"),
    ("metadata", "169.254.169.254", "80"),
    ("guest-synapse", "127.0.0.1", "8008"),
    ("guest-postgres", "127.0.0.1", "5432"),
]


@pytest.mark.parametrize(("case", "peer", "port"), DENIED_PEERS, ids=[c for c, _, _ in DENIED_PEERS])
def test_turn_refuses_relays_to_internal_peers(
    deployment: Deployment, admin_token: str, case: str, peer: str, port: str
) -> None:
    username, password = turn_credentials(deployment, admin_token, case)
    output = uclient(deployment, username, password, "-v", "-n", "2", "-l", "120", "-e", peer, "-r", port)
    print(f"\n  {peer}:{port}: {[line for line in output.splitlines() if 'error' in line][:2]}")
    assert "Received relay addr" in output, output[-2000:]  # the allocation itself worked ...
    assert "403 (Forbidden IP)" in output, output[-2000:]  # ... the peer was refused
    assert not re.search(r"tot_recv_msgs=[1-9]", output), output[-2000:]


# coturn 4.6.1 checks these forms of a private IPv4 address against nothing (GHSA-j8mm-mpf8-gvjg,
# GHSA-2x4g-wx24-48m4): the relay is IPv4 only, so they get no relay at all, and they are denied too.
IPV6_FORMS = [
    ("mapped-loopback", "::ffff:127.0.0.1"),
    ("mapped-metadata", "::ffff:169.254.169.254"),
    ("ipv4-compatible", "::10.0.0.1"),
    ("nat64", "64:ff9b::7f00:1"),
    ("6to4", "2002:a00:1::1"),
]


@pytest.mark.parametrize(("case", "peer"), IPV6_FORMS, ids=[c for c, _ in IPV6_FORMS])
def test_turn_gives_no_relay_to_ipv6_forms_of_private_addresses(
    deployment: Deployment, admin_token: str, case: str, peer: str
) -> None:
    username, password = turn_credentials(deployment, admin_token, case)
    output = uclient(deployment, username, password, "-v", "-n", "2", "-l", "120", "-e", peer, "-r", "3480")
    refusals = [line for line in output.splitlines() if re.search(r"error (440|443|403)", line)]
    print(f"\n  {peer}: {refusals[:1]}")
    assert refusals, output[-2000:]
    assert not re.search(r"tot_recv_msgs=[1-9]", output), output[-2000:]


def test_turn_speaks_no_dtls(deployment: Deployment) -> None:
    """DTLS to TURN is off (GHSA-5x2p-4vqj-f6m4: 4.6.1 keeps state per source before the cookie check)."""
    for port in (3478, 5349):
        probe = subprocess.run(["timeout", "8", "openssl", "s_client", "-dtls1_2", "-connect",
                                f"{deployment.host.address}:{port}"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
        output = probe.stdout + probe.stderr
        print(f"\n  DTLS to {port}/udp: {'no handshake' if 'Server certificate' not in output else 'HANDSHAKE'}")
        assert "Server certificate" not in output and "BEGIN CERTIFICATE" not in output, output[-2000:]


def test_turn_refuses_tcp_relays(deployment: Deployment, admin_token: str) -> None:
    username, password = turn_credentials(deployment, admin_token, "tcp")
    output = uclient(deployment, username, password, "-v", "-T", "-n", "2", "-l", "120", "-e",
                     deployment.host.address, "-r", "3480")
    print(f"\n  TCP relay: {[line for line in output.splitlines() if 'error' in line][:1]}")
    assert "442" in output and "TCP Transport is not allowed" in output, output[-2000:]
    assert "Received relay addr" not in output


def test_turn_relays_between_two_clients_via_the_allowed_peer(deployment: Deployment, admin_token: str) -> None:
    username, password = turn_credentials(deployment, admin_token, "allowed")
    output = uclient(deployment, username, password, "-X", "-c", "-n", "10", "-l", "120", "-y")
    lost = re.search(r"Total lost packets (\d+)", output)
    # The last counter line is the run's summary; earlier ones are progress reports.
    summary = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    print(f"\n  client->TURN->TURN->client: sent/received {summary[-1] if summary else None}, "
          f"lost {lost.group(1) if lost else None}")
    assert output.startswith("exit 0"), output[-2000:]
    assert lost and int(lost.group(1)) == 0, output[-2000:]
    assert summary and int(summary[-1][0]) > 0 and summary[-1][0] == summary[-1][1], output[-2000:]


# ---------------------------------------------------------------------------------------------
# 5: what nginx and Synapse let through


def test_synapse_runs_in_the_sandbox_of_its_hardened_unit(deployment: Deployment) -> None:
    """What the kernel says about the running Synapse: a syscall filter, no capabilities, no new
    privileges, its own user namespace (PrivateUsers) and a /proc showing only its own processes."""
    pid = deployment.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip()
    assert pid.isdigit() and pid != "0"
    status = dict(line.split(":\t", 1) for line in deployment.ssh(f"cat /proc/{pid}/status").splitlines() if ":\t" in line)
    # Every process of the test host has the container manager's syscall filter: Synapse's own is on top.
    init = dict(line.split(":\t", 1) for line in deployment.ssh("cat /proc/1/status").splitlines() if ":\t" in line)
    print(f"\n  Synapse {pid}: seccomp filters {status['Seccomp_filters'].strip()} (the container's init: "
          f"{init['Seccomp_filters'].strip()}), NoNewPrivs {status['NoNewPrivs']}, CapBnd {status['CapBnd']}")
    assert int(status["Seccomp_filters"]) > int(init["Seccomp_filters"]) and status["NoNewPrivs"].strip() == "1"
    assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0
    own, system = (deployment.ssh(f"cat /proc/{p}/uid_map").split() for p in (pid, "1"))
    assert own != system, own  # a user namespace of its own, not the system's
    mounts = deployment.ssh(f"cat /proc/{pid}/mountinfo")
    proc_line = next(line for line in mounts.splitlines() if " /proc " in line)
    assert "hidepid=invisible" in proc_line and "subset=pid" in proc_line, proc_line


def test_admin_api_is_not_proxied_by_nginx(deployment: Deployment, admin_token: str) -> None:
    status, _ = http(deployment, "GET", "/_synapse/admin/v1/server_version", admin_token)
    direct, body = guest_api(deployment, admin_token, "GET", "/_synapse/admin/v1/server_version")
    print(f"\n  server_version: through nginx {status}, on the guest {direct} {body}")
    assert status == 404
    assert direct == 200 and "server_version" in body  # it exists: nginx is what hides it


def _register(deployment: Deployment, localpart: str) -> tuple[int, Any]:
    return http(deployment, "POST", "/_matrix/client/v3/register",
                body={"username": localpart, "password": secrets.token_urlsafe(18)})


def _user_exists(deployment: Deployment, admin_token: str, localpart: str) -> bool:
    status, body = guest_api(deployment, admin_token, "GET", f"/_synapse/admin/v2/users/@{localpart}:{DOMAIN}")
    assert status in (200, 404), body
    return status == 200


def test_registration_is_closed_and_needs_a_token_when_enabled(deployment: Deployment, admin_token: str) -> None:
    localpart = f"mallory-{secrets.token_hex(3)}"
    status, body = _register(deployment, localpart)
    print(f"\n  registration by default: {status} {body}")
    assert status == 403 and body.get("errcode") == "M_FORBIDDEN"
    assert not _user_exists(deployment, admin_token, localpart)

    try:
        assert "synapse-config" in reconfigure(deployment, enableRegistration=True)
        status, body = _register(deployment, localpart)
        flows = [flow["stages"] for flow in body.get("flows", [])] if isinstance(body, dict) else []
        print(f"  registration enabled: {status}, flows {flows}")
        assert status == 401 and flows
        assert all("m.login.registration_token" in stages for stages in flows)
        assert not _user_exists(deployment, admin_token, localpart)
    finally:
        reconfigure(deployment, enableRegistration=False)
    status, body = _register(deployment, localpart)
    assert status == 403, body  # closed again


def test_a_local_password_shorter_than_the_policy_is_refused(deployment: Deployment, admin_token: str) -> None:
    """password_config.policy: a user changing their password to a short one is refused by Synapse."""
    user_id, password = create_user(deployment, admin_token, "paula")
    localpart = user_id[1:].split(":")[0]
    status, body = guest_api(deployment, admin_token, "POST", f"/_synapse/admin/v1/users/{quote(user_id)}/login", {})
    assert status == 200, body
    token = str(body["access_token"])  # no password login: those are rate-limited per address
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": password}
    short = "x" * (synapse.PASSWORD_MIN_LENGTH - 1)
    status, body = http(deployment, "POST", "/_matrix/client/v3/account/password", token,
                        body={"new_password": short, "logout_devices": False, "auth": auth})
    print(f"\n  a {len(short)}-character password: {status} {body}")
    assert status == 400 and body.get("errcode") == "M_PASSWORD_TOO_SHORT", body
    longer = secrets.token_urlsafe(12)[: synapse.PASSWORD_MIN_LENGTH]
    status, body = http(deployment, "POST", "/_matrix/client/v3/account/password", token,
                        body={"new_password": longer, "logout_devices": False, "auth": auth})
    assert status == 200, body  # a long enough one is taken


def _join(deployment: Deployment, token: str, alias: str) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body = http(deployment, "POST", f"/_matrix/client/v3/join/{quote(alias)}", token, body={})
    return status, body, time.monotonic() - started


def _profile(deployment: Deployment, token: str, server: str) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body = http(deployment, "GET", f"/_matrix/client/v3/profile/{quote(f'@someone:{server}')}", token)
    return status, body, time.monotonic() - started


def _denied_in_log(deployment: Deployment, alias: str) -> bool:
    """Synapse logs the real reason for a failed alias lookup; the client only sees 502."""
    server = alias.split(":", 1)[1]
    needle = f"Error retrieving alias {alias} -> 403 Federation denied with {server}."
    for _ in range(10):  # bounded: warnings are flushed to the file at once, but allow a moment
        if deployment.host.ssh(f"grep -qF {shlex.quote(needle)} {SYNAPSE_LOG}").returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _is_federation_denied(status: int, body: Any) -> bool:
    return status == 403 and isinstance(body, dict) and body.get("errcode") == "M_FORBIDDEN" \
        and "federation" in str(body.get("error", "")).lower()


def test_federation_off_and_allowlist_are_enforced_by_synapse(deployment: Deployment, admin_token: str) -> None:
    tag = secrets.token_hex(3)
    try:
        reconfigure(deployment, federation="off", federationAllowlist=[])
        status, body, seconds = _join(deployment, admin_token, f"#sec-{tag}:remote.example")
        print(f"\n  federation off: join -> {status} {body} in {seconds:.2f} s")
        assert status != 200
        assert _denied_in_log(deployment, f"#sec-{tag}:remote.example")
        status, body, seconds = _profile(deployment, admin_token, "remote.example")
        print(f"  federation off: remote profile -> {status} {body} in {seconds:.2f} s")
        assert _is_federation_denied(status, body)

        reconfigure(deployment, federation="allowlist", federationAllowlist=["friend.example"])
        status, body, seconds = _join(deployment, admin_token, f"#sec-{tag}:other.example")
        print(f"  allowlist: join other.example -> {status} {body} in {seconds:.2f} s")
        assert status != 200 and _denied_in_log(deployment, f"#sec-{tag}:other.example")
        status, body, seconds = _profile(deployment, admin_token, "other.example")
        print(f"  allowlist: other.example profile -> {status} {body} in {seconds:.2f} s")
        assert _is_federation_denied(status, body)
        status, body, seconds = _join(deployment, admin_token, f"#sec-{tag}:friend.example")
        print(f"  allowlist: join friend.example -> {status} {body} in {seconds:.2f} s")
        assert status != 200 and not _denied_in_log(deployment, f"#sec-{tag}:friend.example")
        status, body, seconds = _profile(deployment, admin_token, "friend.example")
        print(f"  allowlist: friend.example profile -> {status} {body} in {seconds:.2f} s (attempted, unreachable)")
        assert status != 200 and not _is_federation_denied(status, body)
    finally:
        reconfigure(deployment, federation="open", federationAllowlist=[])
    status, body, seconds = _profile(deployment, admin_token, "remote.example")
    print(f"  federation open again: remote profile -> {status} {body} in {seconds:.2f} s")
    assert status != 200 and not _is_federation_denied(status, body)


# ---------------------------------------------------------------------------------------------
# 6: secrets


TRACE_DIR = "/root/.matrix-stack-argv-trace"
ADMIN_SESSION = "/root/.matrix-stack/selfcheck-admin.token"


def run_traced(deployment: Deployment) -> list[StepResult]:
    """Every recorded step run again exactly as the provider runs it, but with its bash (and everything
    that bash starts, to the last child) under strace: the argv of every program executed, complete.
    The self-check's kept admin session is removed first, so its login runs too."""
    recording = deployment.recording
    assert recording is not None
    deployment.ssh("command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends strace >/dev/null", timeout=600)
    deployment.ssh(f"rm -rf {TRACE_DIR} && install -d -m 0700 {TRACE_DIR} && rm -f {ADMIN_SESSION}")
    results = []
    with tempfile.TemporaryDirectory(prefix="matrix-stack-trace-") as tmp:
        key = deploy_key_file(recording, Path(tmp))
        for command in recording.commands():
            create = str(command.inputs["create"])
            strace = f"strace -f -qq -e trace=execve -s 65536 -o {TRACE_DIR}/{command.name}"
            traced = create.replace('bash "$f"', f'{strace} bash "$f"')
            assert traced != create, create
            started = time.monotonic()
            proc = subprocess.run([*connect(command, key), traced], input=command.inputs.get("stdin", ""),
                                  capture_output=True, text=True, timeout=1800)
            result = StepResult(command.name, time.monotonic() - started, proc.returncode, proc.stdout, proc.stderr)
            results.append(result)
            if proc.returncode != 0:
                raise StepFailed(result)
    return results


def test_no_secret_in_step_output_or_on_a_command_line(
    deployment: Deployment, initial_results: list[StepResult]
) -> None:
    """No step prints a secret, and no program any step runs gets one in its arguments, which any local
    user reads in /proc while it runs (issue 26: the self-check's login put the admin password there)."""
    values = secret_values(deployment)
    started = time.monotonic()
    rerun = run_traced(deployment)
    deployment.results = rerun
    print(f"\n  re-ran all {len(rerun)} steps under strace in {time.monotonic() - started:.1f} s")

    for result in [*initial_results, *rerun]:
        found = leaked(result.stdout + result.stderr, values)
        assert not found, f"{result.name} printed {found}"
    print(f"  step outputs checked: {len(initial_results)} from provisioning, {len(rerun)} from the re-run")

    # The session token the self-check's login just got is a secret too.
    values["admin session token"] = deployment.ssh(f"cat {ADMIN_SESSION}").strip()
    assert len(values["admin session token"]) >= 20
    traces = deployment.ssh(f"cat {TRACE_DIR}/*", timeout=300)
    execs = [line for line in traces.splitlines() if "execve(" in line]
    programs = {re.sub(r'^.*execve\("([^"]+)".*$', r"\1", line) for line in execs}
    print(f"  {len(execs)} programs executed ({len(programs)} distinct), every argument read")
    assert len(execs) > 500 and {"/usr/bin/curl", "/usr/bin/jq"} <= programs  # the tracer saw the steps work
    on_command_line = {label: next(line for line in execs if value in line)[:200]
                       for label, value in values.items() if value in traces}
    assert not on_command_line, f"secrets on a command line: {on_command_line}"


def test_no_world_readable_file_holds_a_secret(deployment: Deployment) -> None:
    values = secret_values(deployment)
    script = (
        'f=$(mktemp); trap \'rm -f "$f"\' EXIT; cat > "$f"; '
        'timeout 600 grep -rlF -D skip -f "$f" /etc /var /opt /root /home /usr/local 2>/dev/null | '
        "while IFS= read -r p; do stat -c '%a %U %G %F|%n' \"$p\"; done"
    )
    started = time.monotonic()
    listing = deployment.ssh(f"bash -c {shlex.quote(script)}", stdin="\n".join(values.values()) + "\n", timeout=900)
    files = {}
    for line in listing.splitlines():
        meta, path = line.split("|", 1)
        files[path] = meta
    print(f"\n  files holding a secret ({time.monotonic() - started:.1f} s):")
    for path, meta in sorted(files.items()):
        print(f"    {meta}  {path}")
    # The search works: it finds the files that must hold secrets.
    assert "/etc/matrix-synapse/homeserver.yaml" in files and "/etc/turnserver.conf" in files
    world_readable = [p for p, meta in files.items() if "regular" in meta and int(meta.split()[0], 8) & 0o004]
    assert not world_readable, world_readable


@pytest.mark.parametrize(
    ("path", "modes", "owner", "group"),
    [
        ("/etc/matrix-synapse/homeserver.yaml", {"640"}, "root", "matrix-synapse"),
        ("/etc/turnserver.conf", {"640"}, "root", "turnserver"),
        ("/etc/letsencrypt/cloudflare.ini", {"600"}, "root", "root"),
        (paths.SYNAPSE_SIGNING_KEY, {"640"}, "root", "matrix-synapse"),
        ("/root/.matrix-stack/admin.env", {"600"}, "root", None),
    ],
)
def test_secret_files_have_tight_modes(
    deployment: Deployment, path: str, modes: set[str], owner: str, group: str | None
) -> None:
    mode, user, grp = deployment.ssh(f"stat -c '%a %U %G' {shlex.quote(path)}").split()
    print(f"\n  {path}: {mode} {user}:{grp}")
    assert mode in modes and user == owner
    if group is not None:
        assert grp == group


def test_nginx_does_not_name_its_version(deployment: Deployment) -> None:
    """`server_tokens off` is in effect: set in conf.d on Debian 12, by the stock nginx.conf on Debian 13
    (where a second one would stop nginx). A response names only "nginx"."""
    headers = deployment.ssh(f"curl -sS -o /dev/null -D - -H 'Host: matrix.{DOMAIN}' http://127.0.0.1/")
    servers = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("server:")]
    print(f"\n  {deployment.settings.droplet_image}: Server: {servers}")
    assert servers == ["nginx"], headers


def test_the_volume_root_and_the_backups_are_roots_and_each_service_has_its_own_directory(deployment: Deployment) -> None:
    """No service user owns the volume's root, so none can swap root's backups directory for a symlink."""
    listing = deployment.ssh(f"stat -c '%n %U %G %a' {paths.DATA_MOUNT} {paths.BACKUP_DIR} {paths.POSTGRES_VOLUME_DIR} "
                             f"{paths.SYNAPSE_DATA} {paths.POSTGRES_BASE}")
    print("\n  " + listing.replace("\n", "\n  "))
    owners = {line.split()[0]: line.split()[1:] for line in listing.splitlines()}
    assert owners[paths.DATA_MOUNT] == ["root", "root", "755"]
    assert owners[paths.BACKUP_DIR] == ["root", "root", "700"]
    assert owners[paths.POSTGRES_VOLUME_DIR][:2] == ["postgres", "postgres"]
    assert owners[paths.SYNAPSE_DATA][0] == "matrix-synapse"
    # /var/lib/postgresql is the volume's postgresql/ directory, not the root disk's.
    same = deployment.ssh(f"stat -c '%d:%i' {paths.POSTGRES_BASE} {paths.POSTGRES_VOLUME_DIR}").split()
    assert len(same) == 2 and same[0] == same[1]
    as_postgres = deployment.ssh(f"runuser -u postgres -- sh -c 'touch {paths.DATA_MOUNT}/x 2>&1; "
                                 f"mv {paths.BACKUP_DIR} {paths.DATA_MOUNT}/y 2>&1' || true")
    assert "Permission denied" in as_postgres and deployment.ssh(f"test -d {paths.BACKUP_DIR} && echo ok").strip() == "ok"
