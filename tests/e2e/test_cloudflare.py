"""The stack's Cloudflare configuration, at work on the edge stand-in (tests/e2e/edge.py) in front of the
real server: its rules decide for its own names only, and the self-check's public path notices when
Cloudflare answers in the origin's place.

The zone stand-in starts as a user's zone would: SSL Flexible, no Always Use HTTPS, TLS 1.0 allowed,
Bot Fight Mode on. The stack changes none of that zone-wide (only Bot Fight Mode, which no rule can
skip); its names still get Full (strict), HTTPS only and TLS 1.2+ from its rules.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import warnings
from collections.abc import Iterator

import pytest

from tests.e2e.clients import http_get, run
from tests.e2e.deployment import Deployment
from tests.e2e.runner import StepFailed, run_all
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin

pytestmark = pytest.mark.e2e


def edge_request(deployment: Deployment, host: str, path: str, *, tls: bool = True, method: str = "GET",
                 headers: dict[str, str] | None = None, tls_version: ssl.TLSVersion | None = None,
                 ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request to the edge for `host` (its certificate verified), optionally pinned to a TLS version."""
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context(cafile=str(deployment.ca_file))
        if tls_version is not None:
            with warnings.catch_warnings():  # an old TLS version on purpose
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = context.maximum_version = tls_version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        connection = http.client.HTTPSConnection(host, 443, timeout=30, context=context)
        connection.sock = context.wrap_socket(socket.create_connection((deployment.edge_address, 443), 30),
                                              server_hostname=host)
    else:
        connection = http.client.HTTPConnection(host, 80, timeout=30)
        connection.sock = socket.create_connection((deployment.edge_address, 80), 30)
    try:
        connection.request(method, path, headers=headers or {})
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
    standin = deployment.host.cloudflare
    assert standin is not None
    assert standin.settings == {"ssl": "flexible", "always_use_https": "off", "min_tls_version": "1.0"}
    refs = {r["ref"] for phase in standin.rulesets for r in standin.rules_of(phase)}
    assert refs == {f"matrix-test-example-test-{k}" for k in
                    ("tls-strict", "https-only", "tls-floor", "matrix-unchallenged")}


def test_plain_http_on_the_stacks_names_is_redirected_to_https(deployment: Deployment) -> None:
    status, headers, _ = edge_request(deployment, f"matrix.{deployment.domain}", "/_matrix/client/versions?x=1", tls=False)
    assert status == 301 and headers["location"] == f"https://matrix.{deployment.domain}/_matrix/client/versions?x=1"


def test_tls_below_1_2_is_refused_on_the_stacks_names(deployment: Deployment) -> None:
    host = f"matrix.{deployment.domain}"
    try:
        old = edge_request(deployment, host, "/_matrix/client/versions", tls_version=ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError as error:  # this machine's OpenSSL may refuse TLS 1.1 itself: that is a refusal too
        pytest.fail(f"could not speak TLS 1.1 to the edge stand-in, which accepts it: {error}")
    modern = edge_request(deployment, host, "/_matrix/client/versions", tls_version=ssl.TLSVersion.TLSv1_2)
    print(f"\n  {host}: TLS 1.1 -> {old[0]}, TLS 1.2 -> {modern[0]}")
    assert old[0] == 403 and modern[0] == 200


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
