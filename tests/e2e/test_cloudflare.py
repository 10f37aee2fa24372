"""The stack's Cloudflare configuration, at work on the edge stand-in (tests/e2e/edge.py) in front of the
real server: its rules decide for its own names only, and the self-check's public path notices when
Cloudflare answers in the origin's place.

The zone stand-in starts as a user's zone would: SSL Flexible, no Always Use HTTPS, TLS 1.0 allowed,
Bot Fight Mode on. The stack changes none of that zone-wide (only Bot Fight Mode, which no rule can
skip); its names still get Full (strict), HTTPS only and TLS 1.2+ from its rules.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.accounts import login
from tests.e2e.clients import http_get, run
from tests.e2e.deployment import Deployment
from tests.e2e.runner import StepFailed, run_all
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin

pytestmark = pytest.mark.e2e


def edge_request(deployment: Deployment, host: str, path: str, *, tls: bool = True, method: str = "GET",
                 headers: dict[str, str] | None = None, tls_version: ssl.TLSVersion | None = None,
                 body: bytes | None = None, source: str = "",
                 ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request to the edge for `host` (its certificate verified), optionally pinned to a TLS version, from the
    address `source` (default: this machine's own towards the edge). No User-Agent unless `headers` has one."""
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context(cafile=str(deployment.ca_file))
        if tls_version is not None:
            with warnings.catch_warnings():  # an old TLS version on purpose
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = context.maximum_version = tls_version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        connection = http.client.HTTPSConnection(host, 443, timeout=30, context=context)
        connection.sock = context.wrap_socket(
            socket.create_connection((deployment.edge_address, 443), 30, source_address=(source, 0) if source else None),
            server_hostname=host)
    else:
        connection = http.client.HTTPConnection(host, 80, timeout=30)
        connection.sock = socket.create_connection((deployment.edge_address, 80), 30,
                                                   source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def self_check_failures(deployment: Deployment) -> list[str]:
    """The self-check's failure lines (it must fail)."""
    assert deployment.recording is not None
    with pytest.raises(StepFailed) as failure:
        run_all(deployment.recording, only={"selfcheck-verify"})
    return [line.removeprefix("SELF-CHECK FAILED: ") for line in failure.value.result.stderr.splitlines()
            if line.startswith("SELF-CHECK FAILED: ")]


@pytest.fixture
def zone(deployment: Deployment) -> Iterator[CloudflareStandin]:
    """The deployment's zone stand-in; anything a test changes there is put back."""
    standin = deployment.host.cloudflare
    assert standin is not None and deployment.edge is not None
    saved = (standin.bot_fight_mode, dict(deployment.edge.public_roots))
    yield standin
    standin.bot_fight_mode = saved[0]
    deployment.edge.public_roots.clear()
    deployment.edge.public_roots.update(saved[1])
    deployment.edge._origin_contexts.clear()
    assert deployment.recording is not None
    run_all(deployment.recording, only={"selfcheck-verify"})  # healthy again


def test_the_users_zone_settings_are_left_as_they_were(deployment: Deployment) -> None:
    """Nothing zone-wide but Bot Fight Mode: the zone's settings, and its other bot settings (a managed robots.txt
    the user switched on), are as the user left them."""
    standin = deployment.host.cloudflare
    assert standin is not None
    assert standin.settings == {"ssl": "flexible", "always_use_https": "off", "min_tls_version": "1.0",
                                "security_level": "medium", "browser_check": "on"}
    refs = {r["ref"] for phase in standin.rulesets for r in standin.rules_of(phase)}
    assert refs == {f"matrix-test-example-test-{k}" for k in
                    ("tls-strict", "https-only", "tls-floor", "matrix-unchallenged")}
    assert standin.bot_management["fight_mode"] is False and standin.bot_management["is_robots_txt_managed"] is True


def test_plain_http_on_the_stacks_names_is_redirected_to_https(deployment: Deployment) -> None:
    status, headers, _ = edge_request(deployment, f"matrix.{deployment.domain}", "/_matrix/client/versions?x=1", tls=False)
    assert status == 301 and headers["location"] == f"https://matrix.{deployment.domain}/_matrix/client/versions?x=1"


OLD_CLIENT = {"User-Agent": "an-old-matrix-client/0.1"}  # a client's own name (a request without one meets BIC)


def test_tls_below_1_2_is_refused_on_the_stacks_names(deployment: Deployment) -> None:
    host = f"matrix.{deployment.domain}"
    try:
        old = edge_request(deployment, host, "/_matrix/client/versions", tls_version=ssl.TLSVersion.TLSv1_1,
                           headers=OLD_CLIENT)
    except ssl.SSLError as error:  # this machine's OpenSSL may refuse TLS 1.1 itself: that is a refusal too
        pytest.fail(f"could not speak TLS 1.1 to the edge stand-in, which accepts it: {error}")
    refused_at = last_log(deployment, "/_matrix/client/versions")["note"]
    modern = edge_request(deployment, host, "/_matrix/client/versions", tls_version=ssl.TLSVersion.TLSv1_2,
                          headers=OLD_CLIENT)
    print(f"\n  {host}: TLS 1.1 -> {old[0]} ({refused_at}), TLS 1.2 -> {modern[0]}")
    # Refused by nginx, for the header the stack's transform rule set (not challenged on the way, say).
    assert old[0] == 403 and refused_at.startswith("origin 403") and "cf-mitigated" not in old[1]
    assert modern[0] == 200


def last_log(deployment: Deployment, path: str) -> dict[str, Any]:
    """What the edge did with the last request for `path`."""
    assert deployment.edge is not None
    return next(entry for entry in reversed(deployment.edge.log) if entry["path"] == path)


# Where the requests of the next test come from: an address of this machine the zone's threat intelligence
# scores badly (its Security Level challenges it).
POOR_REPUTATION = "127.0.0.78"
RATE_LIMIT = 5  # the user's own rate limiting rule: requests per 10 s per client address


@pytest.fixture
def guarded_zone(deployment: Deployment, zone: CloudflareStandin) -> Iterator[CloudflareStandin]:
    """The zone with what a careful user adds: their own rate limiting rule on every name, and a client address
    its threat intelligence scores badly. Browser Integrity Check, Security Level and the Free Managed Ruleset are
    on, as on any Free zone."""
    names = " ".join(f'"{n}"' for n in (deployment.domain, f"matrix.{deployment.domain}", f"chat.{deployment.domain}"))
    status, answer = zone.handle("PUT", f"/client/v4/zones/{zone.zone_id}/rulesets/phases/http_ratelimit/entrypoint", {},
                                 {"rules": [{"ref": "users-rate-limit", "action": "block",
                                             "expression": f"(http.host in {{{names}}})",
                                             "ratelimit": {"characteristics": ["ip.src"], "period": 10,
                                                           "requests_per_period": RATE_LIMIT}}]})
    assert status == 200, answer
    zone.bad_reputation.add(POOR_REPUTATION)
    yield zone
    zone.bad_reputation.discard(POOR_REPUTATION)
    zone.handle("DELETE", f"/client/v4/zones/{zone.zone_id}/rulesets/{zone.rulesets['http_ratelimit']['id']}", {}, None)


def test_matrix_traffic_the_zones_security_products_would_stop_reaches_synapse(
    deployment: Deployment, guarded_zone: CloudflareStandin
) -> None:
    """The stack's skip rule keeps rate limiting, the managed rules, Browser Integrity Check and Security Level away
    from /_matrix on its names: a client with no User-Agent, from a poorly scored address, sending more than the
    user's rate limit and a message whose HTML has a script tag, is answered by Synapse. The same requests to
    Element's pages (not Matrix traffic) are stopped, so the products are on."""
    matrix, chat = f"matrix.{deployment.domain}", f"chat.{deployment.domain}"
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) e2e"}
    for product, (status, _, _) in {
        "Browser Integrity Check": edge_request(deployment, chat, "/"),
        "Security Level": edge_request(deployment, chat, "/", headers=browser, source=POOR_REPUTATION),
        "managed rules": edge_request(deployment, chat, "/?q=<script>", headers=browser),
    }.items():
        assert status == 403, f"{product} let Element's page through: {status}"
    limited = [edge_request(deployment, chat, "/", headers=browser)[0] for _ in range(RATE_LIMIT + 2)]
    assert 429 in limited, limited

    _, token = login(deployment, "admin", deployment.admin_password)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statuses = [edge_request(deployment, matrix, "/_matrix/client/versions", source=POOR_REPUTATION)[0]
                for _ in range(RATE_LIMIT + 2)]
    status, _, body = edge_request(deployment, matrix, "/_matrix/client/v3/createRoom", method="POST", headers=auth,
                                   body=b'{"name": "scripts"}', source=POOR_REPUTATION)
    assert status == 200, body
    room = json.loads(body)["room_id"]
    message = {"msgtype": "m.text", "body": "look: <script>alert(1)</script>", "format": "org.matrix.custom.html",
               "formatted_body": "look: <code>&lt;script&gt;</code><script>alert(1)</script>"}
    sent = edge_request(deployment, matrix, f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/e2e-script",
                        method="PUT", headers=auth, body=json.dumps(message).encode(), source=POOR_REPUTATION)
    print(f"\n  /_matrix without User-Agent from {POOR_REPUTATION}: {statuses}; a message with a script tag: {sent[0]}")
    assert statuses == [200] * (RATE_LIMIT + 2)
    assert sent[0] == 200 and "event_id" in json.loads(sent[2])


def test_a_body_over_cloudflares_limit_is_refused_at_the_edge(deployment: Deployment) -> None:
    status, _, _ = edge_request(deployment, f"matrix.{deployment.domain}", "/_matrix/media/v3/upload", method="POST",
                                headers={"Content-Length": str(100 * 1024 * 1024 + 1), "Expect": "100-continue"})
    assert status == 413


def test_bot_fight_mode_turned_back_on_fails_the_self_check_with_a_challenge(
    deployment: Deployment, zone: CloudflareStandin
) -> None:
    """Bot Fight Mode cannot be skipped by rules: if someone turns it on again, Matrix traffic (no browser
    User-Agent) is challenged, and the next `up` fails naming it."""
    zone.bot_fight_mode = True
    status, headers, _ = run(lambda: http_get(f"https://matrix.{deployment.domain}/_matrix/key/v2/server",
                                              deployment.edge_address, deployment.ca_file))
    assert status == 403 and headers.get("cf-mitigated") == "challenge"
    failures = self_check_failures(deployment)
    print(f"\n  self-check with Bot Fight Mode on: {failures}")
    assert failures and all(line.startswith("public path: ") and "challenge" in line for line in failures)


def test_an_origin_certificate_cloudflare_does_not_trust_fails_the_self_check_with_526(
    deployment: Deployment, zone: CloudflareStandin
) -> None:
    """Full (strict) for the stack's names (the zone itself says Flexible): an origin certificate from a CA
    Cloudflare does not trust, as Let's Encrypt staging's, gets 526, and the self-check names it."""
    assert deployment.edge is not None
    deployment.edge.public_roots.clear()
    deployment.edge._origin_contexts.clear()
    status, _, _ = edge_request(deployment, f"matrix.{deployment.domain}", "/_matrix/client/versions")
    assert status == 526
    failures = self_check_failures(deployment)
    print(f"\n  self-check with an untrusted origin certificate: {failures}")
    assert len(failures) == 5 and all("526" in line for line in failures)
