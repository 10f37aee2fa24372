"""Every generated secret, created once by pulumi-random and kept encrypted in the stack state.

Random resources never change unless their own inputs change, so secrets are stable across
`pulumi up`s; nothing here is regenerated silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_random as random

# name -> length. Alphanumeric only: the values land in YAML, shell and coturn's key=value files.
PASSWORDS = {
    "postgres-password": 40,
    "registration-shared-secret": 64,
    "macaroon-secret": 64,
    "form-secret": 64,
    "turn-shared-secret": 64,
    "admin-password": 24,
    # The secret part of the inside checks' status path (services/health.py), read by the uptime check.
    "health-token": 32,
}

# synapseWorkers only: created when the option is on, so a stack without workers keeps its graph.
WORKER_PASSWORDS = {
    "redis-password": 48,
    "replication-secret": 64,
}

# matrixRtc only: LiveKit's API secret (its key name is fixed, services/rtc.py; LiveKit wants 32 characters or
# more), and the tokens Synapse and lk-jwt-service, an application service, authenticate each other with.
RTC_PASSWORDS = {
    "livekit-secret": 64,
    "rtc-as-token": 64,
    "rtc-hs-token": 64,
}


# The team (users, invitations): a password per listed account, a token per invitation. Each is its own
# resource named after its account or invitation, so `pulumi preview` shows who is added or removed.
USER_PASSWORD_LENGTH = 24
# A registration token holder signs up with it: 20 letters and digits (Synapse allows A-Za-z0-9._~-, 64 at most).
INVITATION_TOKEN_LENGTH = 20


@dataclass(frozen=True)
class RtcSecrets:
    """matrixRtc: the SFU's API secret and the application service's two tokens."""

    livekit_secret: pulumi.Input[str]
    as_token: pulumi.Input[str]
    hs_token: pulumi.Input[str]


@dataclass(frozen=True)
class WorkerSecrets:
    """synapseWorkers: Redis's password and the secret of the main process's replication listener."""

    redis_password: pulumi.Input[str]
    replication_secret: pulumi.Input[str]


class Secrets(pulumi.ComponentResource):
    """Generated secrets as secret Outputs."""

    postgres_password: pulumi.Output[str]
    registration_shared_secret: pulumi.Output[str]
    macaroon_secret: pulumi.Output[str]
    form_secret: pulumi.Output[str]
    turn_shared_secret: pulumi.Output[str]
    admin_password: pulumi.Output[str]
    health_token: pulumi.Output[str]
    signing_key: pulumi.Output[str]
    workers: WorkerSecrets | None
    rtc: RtcSecrets | None
    user_passwords: dict[str, pulumi.Output[str]]  # local part -> initial password
    invitation_tokens: dict[str, pulumi.Output[str]]  # invitation name -> registration token

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None, workers: bool = False,
                 users: Sequence[str] = (), invitations: Sequence[str] = (), rtc: bool = False) -> None:
        super().__init__("matrix-stack:cloud:Secrets", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        values: dict[str, pulumi.Output[str]] = {}
        for secret_name, length in {**PASSWORDS, **(WORKER_PASSWORDS if workers else {}),
                                    **(RTC_PASSWORDS if rtc else {})}.items():
            password = random.RandomPassword(f"{name}-{secret_name}", length=length, special=False, opts=child)
            values[secret_name] = pulumi.Output.secret(password.result)
        self.postgres_password = values["postgres-password"]
        self.registration_shared_secret = values["registration-shared-secret"]
        self.macaroon_secret = values["macaroon-secret"]
        self.form_secret = values["form-secret"]
        self.turn_shared_secret = values["turn-shared-secret"]
        self.admin_password = values["admin-password"]
        self.health_token = values["health-token"]
        self.workers = WorkerSecrets(values["redis-password"], values["replication-secret"]) if workers else None
        self.rtc = RtcSecrets(values["livekit-secret"], values["rtc-as-token"], values["rtc-hs-token"]) if rtc else None
        self.user_passwords = {
            user: pulumi.Output.secret(random.RandomPassword(f"{name}-user-{user}",
                                                             length=USER_PASSWORD_LENGTH, special=False,
                                                             opts=child).result)
            for user in users}
        self.invitation_tokens = {
            invitation: pulumi.Output.secret(random.RandomPassword(f"{name}-invitation-{invitation}",
                                                                   length=INVITATION_TOKEN_LENGTH, special=False,
                                                                   opts=child).result)
            for invitation in invitations}

        # Synapse's signing key file format: "ed25519 <key id> <unpadded base64 of a 32-byte seed>".
        seed = random.RandomBytes(f"{name}-signing-key-seed", length=32, opts=child)
        key_id = random.RandomString(
            f"{name}-signing-key-id", length=6, special=False, upper=False, opts=child
        )
        self.signing_key = pulumi.Output.secret(
            pulumi.Output.all(key_id.result, seed.base64).apply(
                lambda parts: f"ed25519 a_{parts[0]} {parts[1].rstrip('=')}\n"
            )
        )
        self.register_outputs({})
