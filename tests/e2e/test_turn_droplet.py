"""`turnDroplet` on two hosts: the shared deployment switches coturn to a second test "droplet" and back.

The second host boots with the user data the program declares for the TURN droplet (its pinned host
key) and uses the first host's ACME server and Cloudflare stand-in (one stack, one zone). Only the
steps `pulumi up` would run are run, in the engine's order: switching on runs the TURN droplet's
steps, the main droplet's firewall and coturn-off; switching off re-installs nothing but re-enables
coturn on the main droplet. Real clients: Synapse's TURN credentials, coturn's own test client
relaying between two allocations through the TURN droplet, TLS verified against the ACME root. The
TURN droplet proves control of turn. by HTTP-01 (pebble checks port 80, as Let's Encrypt does) and holds
no Cloudflare token.
"""

from __future__ import annotations

import gc
import os
import shlex
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from components.services.certificates import PROPAGATION_WAITS_S
from components.settings import load
from tests.e2e.accounts import login
from tests.e2e.clients import Relay, turn_relay, turn_server
from tests.e2e.deployment import E2E_INDEX, Deployment
from tests.e2e.runner import StepResult, run_all
from tests.e2e.testhost import TestHost
from tests.harness import changed_steps, config_strings

pytestmark = pytest.mark.e2e

TURN_INDEX = E2E_INDEX + 104
# While the main droplet orders a certificate, the zone's TXT records become visible this long after
# they are made: longer than certbot's first wait, shorter than its second (PROPAGATION_WAITS_S).
SLOW_DNS_S = 15.0
TURN_STEPS = {"turn-base-packages", "turn-base-firewall", "turn-certificates-install", "turn-certificates-issue",
              "turn-coturn-install", "turn-coturn-config", "turn-selfcheck-verify"}
# Both ways the same steps change: the TURN droplet's, and the main droplet's firewall, coturn, self-check and
# checks between deploys (which then ask the TURN droplet's coturn over the network).
SWITCHED_STEPS = TURN_STEPS | {"base-firewall", "coturn-install", "coturn-config", "coturn-off", "selfcheck-verify",
                               "health-schedule"}


def turn_droplet_user_data(deployment: Deployment) -> str:
    assert deployment.recording is not None
    (droplet,) = [r for r in deployment.recording.of_type("digitalocean:index/droplet:Droplet")
                  if r.name.endswith("-turn-droplet")]
    return str(droplet.inputs["userData"])


def turn_a_record(deployment: Deployment) -> str:
    assert deployment.host.cloudflare is not None
    (content,) = [r["content"] for r in deployment.host.cloudflare.records.values()
                  if r["name"] == f"turn.{deployment.domain}" and r["type"] == "A"]
    return str(content)


def relay_through(address: str, credentials: dict[str, Any]) -> Relay:
    return turn_relay(address, credentials["username"], credentials["password"])


def relayed(relay: Relay) -> bool:
    return relay.returncode == 0 and relay.sent > 0 and relay.received == relay.sent and relay.lost == 0


def stun_answers(address: str, port: int = 3478, timeout: float = 3) -> bool:
    """Whether a STUN binding request (RFC 5389, no credentials needed) gets an answer over UDP."""
    transaction = os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout)
        udp.sendto(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction, (address, port))
        try:
            answer, _ = udp.recvfrom(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return answer[8:20] == transaction


def tcp_open(address: str, port: int, timeout: float = 3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def served_certificate(address: str, server_name: str, ca_file: Any) -> bytes:
    """The certificate coturn presents on 5349 for `server_name`, verified against the ACME root."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (socket.create_connection((address, 5349), timeout=15) as raw,
          context.wrap_socket(raw, server_hostname=server_name) as tls):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate
    return certificate


class TurnSwitch:
    """The shared deployment with `turnDroplet` switched on (a second host) and, at the end, off."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.host: TestHost | None = None
        self.on: tuple[set[str], list[StepResult]] = (set(), [])
        self.off: tuple[set[str], list[StepResult]] | None = None
        _, token = login(deployment, "admin", deployment.admin_password)
        self.token = token

    def credentials(self) -> dict[str, Any]:
        d = self.deployment
        return turn_server(d.homeserver, self.token, d.edge_address, d.ca_file)

    def switch_on(self) -> None:
        """`pulumi up` with turnDroplet: the TURN droplet is created (booted with its declared user
        data), then the changed steps run."""
        d = self.deployment
        assert d.recording is not None
        before = d.recording
        self.host = TestHost(TURN_INDEX, d.public_key, f"{d.settings.resource_prefix}-turn-disk", d.domain,
                             identity_file=d.key_file, volume_filesystem=None, edge_ca=d.host.edge_ca,
                             release=d.host.release, services_of=d.host)
        d.turn_host = self.host
        after = d.record(turnDroplet=True)
        self.host.user_data = turn_droplet_user_data(d)
        self.host.boot()
        d.apply_cloud()
        changed = changed_steps(before, after)
        self.on = (changed, run_all(after, only=changed))

    def switch_off(self) -> None:
        """`pulumi up` with turnDroplet removed: the main droplet's steps run, then the TURN droplet goes."""
        self.off = self.deployment.apply_changes(turnDroplet=None)
        self.destroy_host()

    def destroy_host(self) -> None:
        if self.host is not None:
            self.host.destroy(keep_volume=False)
            self.host = None
        self.deployment.turn_host = None


@pytest.fixture(scope="module")
def turn(deployment: Deployment) -> Iterator[TurnSwitch]:
    switch = TurnSwitch(deployment)
    try:
        switch.switch_on()
        yield switch
    finally:
        # Whatever happened above, the shared deployment leaves this module without the TURN droplet.
        if switch.off is None:
            if "turnDroplet" in deployment.config:
                deployment.apply_changes(turnDroplet=None)
            switch.destroy_host()
        # aiohttp's closed TLS transports warn when collected (conftest.py): collect them while this
        # module's warning filter still applies, not at the end of the session.
        gc.collect()


def test_switching_on_runs_the_turn_droplets_steps_and_only_the_main_steps_it_changes(turn: TurnSwitch) -> None:
    changed, results = turn.on
    assert changed == SWITCHED_STEPS
    ran = {r.name for r in results}
    # coturn-install and coturn-config are gone
    assert ran == TURN_STEPS | {"base-firewall", "coturn-off", "selfcheck-verify", "health-schedule"}
    assert all(r.returncode == 0 for r in results)
    print("\nturnDroplet switched on:")
    for result in results:
        print(f"  {result.name:24s} {result.seconds:6.1f} s")
    assert turn.host is not None
    assert turn_a_record(turn.deployment) == turn.host.address


def test_the_turn_droplet_holds_no_cloudflare_token(turn: TurnSwitch) -> None:
    """Issue 26: coturn (4.6.1, open to the whole internet) runs on the TURN droplet, so whoever takes it
    over may get root there. Nothing there can edit the zone: searched as root, no file holds the DNS
    token; the certificate came by HTTP-01 (its renewals too), and nothing listens on port 80 meanwhile."""
    assert turn.host is not None
    d = turn.deployment
    token = str(d.config["certbotCloudflareToken"])
    found = turn.host.ssh("timeout 600 grep -rlF -D skip -f - /etc /var /root /opt /usr/local /home 2>/dev/null || true",
                          stdin=(token + "\n").encode(), timeout=900).stdout.decode().split()
    renewal = turn.host.ssh(f"cat /etc/letsencrypt/renewal/{d.domain}.conf", check=True).stdout.decode()
    listening = turn.host.ssh("ss -Hltn 'sport = :80'", check=True).stdout.decode().strip()
    main_has_it = d.ssh(f"grep -lF -- {shlex.quote(token)} /etc/letsencrypt/cloudflare.ini").strip()
    print(f"\n  files holding the token on the TURN droplet: {found}; on the main droplet: {main_has_it}")
    assert found == []
    assert "authenticator = standalone" in renewal and "dns_cloudflare" not in renewal
    assert listening == "", listening
    assert main_has_it == "/etc/letsencrypt/cloudflare.ini"  # the search finds the token where it is


def test_slow_dns_makes_the_certificate_step_wait_longer_and_try_again(turn: TurnSwitch) -> None:
    """The main droplet orders a new certificate (its renewal config names another ACME server, as after
    an acmeServer change) while TXT records show up only after SLOW_DNS_S: the first try (the plugin's
    10 s wait) fails at the CA, the second (30 s) gets the certificate, and certbot keeps that wait."""
    d = turn.deployment
    zone = d.host.cloudflare
    assert zone is not None and d.recording is not None
    renewal_conf = f"/etc/letsencrypt/renewal/{d.domain}.conf"
    d.ssh(f"sed -i 's#^server = .*#server = https://acme.before.invalid/directory#' {renewal_conf}")
    zone.txt_delay = SLOW_DNS_S
    try:
        (issue,) = run_all(d.recording, only={"certificates-issue"})
    finally:
        zone.txt_delay = 0.0
    waits = PROPAGATION_WAITS_S
    assert waits[0] < SLOW_DNS_S < waits[1]
    assert f"certbot failed after a {waits[0]} s DNS propagation wait (try 1 of {len(waits)})" in issue.stderr
    assert "try 2 of" not in issue.stderr
    assert f"dns_cloudflare_propagation_seconds = {waits[1]}" in d.ssh(f"cat {renewal_conf}")


def test_a_call_relays_through_the_turn_droplet(turn: TurnSwitch) -> None:
    assert turn.host is not None
    credentials = turn.credentials()
    assert any(f"turn.{turn.deployment.domain}" in uri for uri in credentials["uris"])
    relay = relay_through(turn.host.address, credentials)
    assert relayed(relay), relay.output[-2000:]


def test_the_turn_droplet_serves_its_own_certificate_for_turn(turn: TurnSwitch) -> None:
    assert turn.host is not None
    d = turn.deployment
    served_certificate(turn.host.address, f"turn.{d.domain}", d.origin_ca_file)  # verified, or it raises
    names = turn.host.ssh(f"openssl x509 -noout -ext subjectAltName -in /etc/letsencrypt/live/{d.domain}/cert.pem",
                          check=True).stdout.decode()
    assert f"DNS:turn.{d.domain}" in names and f"DNS:matrix.{d.domain}" not in names


def test_the_main_droplet_no_longer_serves_turn(turn: TurnSwitch) -> None:
    d = turn.deployment
    assert turn.host is not None
    assert d.ssh("systemctl is-enabled coturn.service || true").strip() == "disabled"
    assert d.ssh("systemctl is-active coturn.service || true").strip() == "inactive"
    assert d.ssh("ss -Hln '( sport = :3478 or sport = :5349 )'").strip() == ""
    ufw = d.ssh("ufw status")
    assert "3478" not in ufw and "5349" not in ufw and "443" in ufw
    assert not stun_answers(d.host.address)
    assert not tcp_open(d.host.address, 3478) and not tcp_open(d.host.address, 5349)
    assert stun_answers(turn.host.address) and tcp_open(turn.host.address, 5349)  # the same probes answer there


def test_the_turn_droplet_opens_only_turn_and_ssh(turn: TurnSwitch) -> None:
    assert turn.host is not None
    ufw = turn.host.ssh("ufw status", check=True).stdout.decode()
    allowed = {line.split()[0] for line in ufw.splitlines()[4:] if line.strip()}
    low, high = load({k.split(":", 1)[1]: v for k, v in config_strings(turn.deployment.config).items()},
                     "test")[0].turn_relay_ports
    # 80: the CA's HTTP-01 check of turn. (certbot listens only while it orders or renews).
    assert {p.split("/")[0] for p in allowed} == {"22", "80", "3478", "5349", f"{low}:{high}"}


def coturn_invocation(host: TestHost) -> str:
    return host.ssh("systemctl show -p InvocationID --value coturn.service", check=True).stdout.decode().strip()


def test_re_running_the_turn_droplets_steps_changes_nothing(turn: TurnSwitch) -> None:
    """Every TURN droplet step run again on the running droplet (as a replaced step would): all pass,
    coturn is not restarted."""
    assert turn.host is not None and turn.deployment.recording is not None
    before = coturn_invocation(turn.host)
    results = run_all(turn.deployment.recording, only=TURN_STEPS)
    assert [r.name for r in results] == [c.name for c in turn.deployment.recording.commands() if c.name in TURN_STEPS]
    assert coturn_invocation(turn.host) == before
    print(f"\nTURN droplet re-run: {sum(r.seconds for r in results):.1f} s for {len(results)} steps")


def test_a_renewal_on_the_turn_droplet_reaches_coturn(turn: TurnSwitch) -> None:
    assert turn.host is not None
    d = turn.deployment
    before = served_certificate(turn.host.address, f"turn.{d.domain}", d.origin_ca_file)
    turn.host.ssh(f"certbot renew --force-renewal --no-random-sleep-on-renew --cert-name {d.domain} --quiet",
                  timeout=300, check=True)
    after = served_certificate(turn.host.address, f"turn.{d.domain}", d.origin_ca_file)
    live = turn.host.ssh(f"openssl x509 -in /etc/letsencrypt/live/{d.domain}/cert.pem -outform DER",
                         check=True).stdout
    assert after != before and after == live


def test_switching_off_converges_back_to_coturn_on_the_main_droplet(turn: TurnSwitch) -> None:
    turn.switch_off()
    assert turn.off is not None
    changed, results = turn.off
    assert changed == SWITCHED_STEPS
    assert {r.name for r in results} == {"base-firewall", "coturn-install", "coturn-config", "selfcheck-verify",
                                         "health-schedule"}
    d = turn.deployment
    assert turn_a_record(d) == d.host.address
    assert d.ssh("systemctl is-enabled coturn.service").strip() == "enabled"
    assert stun_answers(d.host.address) and tcp_open(d.host.address, 5349)
    relay = relay_through(d.host.address, turn.credentials())
    assert relayed(relay), relay.output[-2000:]
    print(f"\nturnDroplet on: {sum(r.seconds for r in turn.on[1]):.0f} s of steps; "
          f"off: {sum(r.seconds for r in results):.0f} s")
