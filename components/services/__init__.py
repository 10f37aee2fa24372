"""Server-side services. Each module turns the shared context into the steps of one service.

A service module exposes `steps(ctx) -> list[StepSpec]`: a pure function of the settings,
secrets and host facts, so it is easy to test and to read. `Service` wraps those steps in a
ComponentResource and chains them; services share only this context and the connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_command import remote

from components.cloud.database import DatabaseEndpoint
from components.cloud.firewall import Role
from components.cloud.media_bucket import MediaBucketEndpoint
from components.cloud.secrets import RtcSecrets, WorkerSecrets
from components.remote import StepSpec, remote_step
from components.render import render
from components.settings import Settings


@dataclass(frozen=True)
class ServiceContext:
    """What a service may use: settings, generated secrets and facts about the host."""

    settings: Settings
    deploy_public_key: pulumi.Input[str]
    droplet_ipv4: pulumi.Input[str]
    droplet_ipv6: pulumi.Input[str]
    cloudflare_ipv4: pulumi.Input[Sequence[str]]
    cloudflare_ipv6: pulumi.Input[Sequence[str]]
    certbot_token: pulumi.Input[str]
    postgres_password: pulumi.Input[str]
    registration_shared_secret: pulumi.Input[str]
    macaroon_secret: pulumi.Input[str]
    form_secret: pulumi.Input[str]
    turn_shared_secret: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    signing_key: pulumi.Input[str]
    origin_pull_ca: pulumi.Input[str]  # the CA nginx requires Cloudflare's client certificate to chain to
    origin_pull_client: pulumi.Input[str]  # secret: that client certificate and key (the self-check's requests)
    website_on_server_name: bool  # the user's website owns the server name: delegation is redirected
    role: Role = "main"  # "turn": the TURN droplet (droplet_ipv4/ipv6 are then its addresses)
    database: DatabaseEndpoint | None = None  # database: managed; None: PostgreSQL on the droplet
    media: MediaBucketEndpoint | None = None  # mediaStorage: spaces; None: media on the volume only
    worker_secrets: WorkerSecrets | None = None  # synapseWorkers: Redis's password, the replication secret
    rtc_secrets: RtcSecrets | None = None  # matrixRtc: LiveKit's API secret, the application service's tokens
    user_passwords: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # users: local part -> password
    invitation_tokens: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # invitations: name -> token
    smtp_password: pulumi.Input[str] = ""  # secret: smtpPassword
    health_token: pulumi.Input[str] = "health-token"  # secret: the inside checks' status path (services/health.py)
    alert_email: pulumi.Input[str] = ""  # where alerts go: alertEmail, the account's e-mail or letsencryptEmail

    @property
    def local_postgres_unit(self) -> str:
        """The droplet's PostgreSQL unit the database tools wait for; "" with database: managed."""
        return self.settings.platform.postgres_unit if self.database is None else ""


def rendered(template: str, **values: Any) -> pulumi.Input[str]:
    """Render a template whose values may be Outputs; plain text when none is an Output.

    A secret value keeps the result secret, so secret-bearing files stay encrypted in state.
    """
    outputs = {k: v for k, v in values.items() if isinstance(v, pulumi.Output)}
    if not outputs:
        return render(template, **values)
    keys = list(outputs)
    return pulumi.Output.all(*[outputs[k] for k in keys]).apply(
        lambda resolved: render(template, **{**values, **dict(zip(keys, resolved))})
    )


class Service(pulumi.ComponentResource):
    """One service's steps on the droplet, run in order after `after`."""

    commands: list[remote.Command]

    def __init__(
        self,
        kind: str,
        steps: Sequence[StepSpec],
        connection: remote.ConnectionArgs,
        after: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
        watch: Sequence[pulumi.Output[Any]] = (),
        replace_with: Sequence[pulumi.Output[Any]] | None = None,
    ) -> None:
        super().__init__(f"matrix-stack:service:{kind.capitalize()}", kind, {}, opts)
        self.kind = kind
        self.commands = []
        previous = list(after)
        for spec in steps:
            if not spec.name.startswith(f"{kind}-"):
                raise ValueError(f"step {spec.name!r} of service {kind!r} must be named {kind}-<what>")
            command = remote_step(spec, connection, parent=self, depends_on=previous, watch=watch,
                                  replace_with=replace_with)
            self.commands.append(command)
            previous = [command]
        self.register_outputs({})

    @property
    def last(self) -> list[pulumi.Resource]:
        """What the next service waits for."""
        return list(self.commands[-1:])
