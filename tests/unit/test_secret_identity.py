"""Secrets are never regenerated silently: every generating resource is pinned by name and inputs.

pulumi-random and pulumi-tls make a new value whenever a resource is replaced: a new name (URN), a
new type or changed inputs (length, character set, keepers, algorithm). The mocks give each value
from the resource's name *and* inputs (harness.identity), so such a change shows up as a new
secret; the table below pins each one, and the message says what a change would do to users.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import CloudMocks, Recording, record, unwrap

WHAT_A_NEW_VALUE_DOES = {
    "secrets-postgres-password": "Synapse loses its database until the role password is reset",
    "secrets-registration-shared-secret": "scripts that register users with the old secret stop working",
    "secrets-macaroon-secret": "every login token and password-reset link stops working",
    "secrets-form-secret": "open consent and registration forms stop working",
    "secrets-turn-shared-secret": "calls fail until every client fetches new TURN credentials",
    "secrets-admin-password": "the admin's password changes under the admin's feet",
    "secrets-health-token": "the status page moves: the uptime check follows in the same `up` (harmless)",
    "secrets-signing-key-seed": "a new federation signing key: other servers must re-fetch our keys",
    "secrets-signing-key-id": "a new federation signing key id",
    "host-deploy-key": "the droplet's authorized deploy key changes: every step loses SSH access",
    "host-host-key": "the droplet's SSH host key changes: the droplet is replaced (user data)",
    "edge-origin-pull-ca-key": "a new origin-pull CA: nginx must trust it before Cloudflare presents a certificate of it",
    "edge-origin-pull-client-key": "a new origin-pull client certificate is uploaded to Cloudflare (the CA stays)",
}

# type, inputs: exactly what each generating resource is created from today.
PINNED: dict[str, tuple[str, dict[str, Any]]] = {
    "secrets-postgres-password": ("random:index/randomPassword:RandomPassword", {"length": 40, "special": False}),
    "secrets-registration-shared-secret": ("random:index/randomPassword:RandomPassword", {"length": 64, "special": False}),
    "secrets-macaroon-secret": ("random:index/randomPassword:RandomPassword", {"length": 64, "special": False}),
    "secrets-form-secret": ("random:index/randomPassword:RandomPassword", {"length": 64, "special": False}),
    "secrets-turn-shared-secret": ("random:index/randomPassword:RandomPassword", {"length": 64, "special": False}),
    "secrets-admin-password": ("random:index/randomPassword:RandomPassword", {"length": 24, "special": False}),
    "secrets-health-token": ("random:index/randomPassword:RandomPassword", {"length": 32, "special": False}),
    "secrets-signing-key-seed": ("random:index/randomBytes:RandomBytes", {"length": 32}),
    "secrets-signing-key-id": ("random:index/randomString:RandomString", {"length": 6, "special": False, "upper": False}),
    "host-deploy-key": ("tls:index/privateKey:PrivateKey", {"algorithm": "ED25519"}),
    "host-host-key": ("tls:index/privateKey:PrivateKey", {"algorithm": "ED25519"}),
    "edge-origin-pull-ca-key": ("tls:index/privateKey:PrivateKey", {"algorithm": "ECDSA", "ecdsaCurve": "P256"}),
    "edge-origin-pull-client-key": ("tls:index/privateKey:PrivateKey", {"algorithm": "ECDSA", "ecdsaCurve": "P256"}),
}
GENERATING = {"random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes",
              "random:index/randomString:RandomString", "tls:index/privateKey:PrivateKey"}


def test_every_generating_resource_is_pinned(graph: Recording) -> None:
    found = {r.name for r in graph.registrations if r.type in GENERATING}
    assert found == set(PINNED), (
        f"new or renamed secret resources {sorted(found ^ set(PINNED))}: a renamed one is a NEW secret "
        "on every existing stack; pin it here with what its change would do to users"
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_secret_resource_keeps_its_name_type_and_inputs(graph: Recording, name: str) -> None:
    typ, inputs = PINNED[name]
    (resource,) = [r for r in graph.registrations if r.name == name and r.type in GENERATING]
    assert resource.type == typ, f"{name} changed type: a new value, so {WHAT_A_NEW_VALUE_DOES[name]}"
    assert unwrap(resource.raw_inputs) == inputs, (
        f"{name} changed inputs {unwrap(resource.raw_inputs)} (pinned {inputs}): pulumi would replace it "
        f"and generate a new value, so {WHAT_A_NEW_VALUE_DOES[name]}"
    )


def _values(recording: Recording) -> dict[str, Any]:
    return {r.name: unwrap(r.raw_outputs) for r in recording.registrations if r.type in GENERATING}


def test_the_mocks_give_a_new_value_when_the_inputs_change() -> None:
    """The property the pins rely on: the mock value follows the inputs, as a replacement would."""
    from tests.harness import identity

    assert identity("secrets-admin-password", {"length": 24}) != identity("secrets-admin-password", {"length": 25})
    assert identity("x", {"length": 24}, seed="a") != identity("x", {"length": 24}, seed="b")


def test_another_stack_life_has_other_secrets_and_the_same_life_the_same(graph: Recording) -> None:
    again, other = record(), record(mocks=CloudMocks(secret_seed="a re-created stack"))
    assert _values(again) == _values(graph)
    differing = {n for n, v in _values(other).items() if v != _values(graph)[n]}
    randoms = {n for n, (t, _) in PINNED.items() if t.startswith("random:")}
    assert differing >= randoms
