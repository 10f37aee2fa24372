"""MatrixStack: the cloud pieces, then every service step in the seed guide's order."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pulumi
import pulumi_cloudflare as cloudflare

from components.cloud.adoption import VolumePlan
from components.cloud.alerts import Alerts, alert_email
from components.cloud.database import ManagedDatabase
from components.cloud.edge import Edge, EdgePlan
from components.cloud.firewall import Firewall, inbound_rules
from components.cloud.host import Host
from components.cloud.media_bucket import MediaBucket
from components.cloud.secrets import Secrets
from components.remote import StepSpec
from components.services import (
    Service,
    ServiceContext,
    admin,
    backup,
    base,
    certificates,
    coturn,
    element,
    health,
    maintenance,
    media,
    nginx,
    postgres,
    release,
    rtc,
    selfcheck,
    synapse,
    team,
    volume,
)
from components.settings import Settings

# DESIGN section 3: each service starts when the one before it has finished. Backups come right
# after PostgreSQL: synapse-install takes one before changing Synapse's version; the database's
# weekly upkeep next to them.
SERVICE_ORDER: tuple[ModuleType, ...] = (
    base,
    volume,
    postgres,
    backup,
    maintenance,
    certificates,
    synapse,
    media,
    coturn,
    rtc,
    element,
    nginx,
    admin,
    team,
    selfcheck,
)
# The TURN droplet (turnDroplet): the same services in role "turn" (services/__init__.py ServiceContext).
TURN_SERVICE_ORDER: tuple[ModuleType, ...] = (base, certificates, coturn, selfcheck)


def turn_steps(turn_context: ServiceContext) -> list[StepSpec]:
    """The TURN droplet's steps (a context in role "turn"), each named turn-<step> so that `pulumi up`
    and the state tell them from the main droplet's."""
    assert turn_context.role == "turn"
    return [dataclasses.replace(spec, name=f"turn-{spec.name}")
            for module in TURN_SERVICE_ORDER for spec in module.steps(turn_context)]


class MatrixStack(pulumi.ComponentResource):
    """Everything one Matrix server needs, from droplet to self-check."""

    host: Host
    edge: Edge
    secrets: Secrets
    services: list[Service]
    turn: Service | None  # the TURN droplet's steps, named turn-<step>
    database: ManagedDatabase | None  # database: managed
    media: MediaBucket | None  # mediaStorage: spaces
    alerts: Alerts | None  # alerts: DigitalOcean's alert policies and uptime check

    def __init__(
        self,
        name: str,
        settings: Settings,
        edge_plan: EdgePlan,
        volume_plan: VolumePlan,
        certbot_token: pulumi.Output[str],
        smtp_password: pulumi.Output[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("matrix-stack:index:MatrixStack", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.secrets = Secrets("secrets", opts=child, workers=settings.synapse_workers,
                               users=[m.localpart for m in settings.users],
                               invitations=[i.name for i in settings.invitations], rtc=settings.matrix_rtc)
        self.host = Host("host", settings, volume_plan, opts=child)
        ranges = cloudflare.get_ip_ranges_output(opts=pulumi.InvokeOptions(parent=self))
        cloudflare_cidrs = pulumi.Output.all(ranges.ipv4_cidrs, ranges.ipv6_cidrs).apply(
            lambda v: [*v[0], *v[1]]
        )
        droplet = self.host.droplet
        firewall = Firewall(
            "firewall",
            settings,
            droplet_id=droplet.id.apply(int),
            rules=inbound_rules(settings, cloudflare_cidrs),
            opts=child,
        )
        turn_droplet = self.host.turn.droplet if self.host.turn else droplet
        self.database = ManagedDatabase("database", settings, droplet_id=droplet.id,
                                        project_id=self.host.project.id,
                                        opts=child) if settings.managed_database else None
        self.media = MediaBucket("media", settings, opts=child) if settings.media_on_spaces else None
        self.edge = Edge("edge", settings, edge_plan, ipv4=droplet.ipv4_address, ipv6=droplet.ipv6_address,
                         turn_ipv4=turn_droplet.ipv4_address, opts=child)

        alerts_to = alert_email(settings, parent=self)
        context = ServiceContext(
            settings=settings,
            deploy_public_key=self.host.deploy_key.public_key_openssh,
            droplet_ipv4=droplet.ipv4_address,
            droplet_ipv6=droplet.ipv6_address,
            cloudflare_ipv4=ranges.ipv4_cidrs,
            cloudflare_ipv6=ranges.ipv6_cidrs,
            certbot_token=certbot_token,
            postgres_password=self.secrets.postgres_password,
            registration_shared_secret=self.secrets.registration_shared_secret,
            macaroon_secret=self.secrets.macaroon_secret,
            form_secret=self.secrets.form_secret,
            turn_shared_secret=self.secrets.turn_shared_secret,
            admin_password=self.secrets.admin_password,
            signing_key=self.secrets.signing_key,
            origin_pull_ca=self.edge.origin_pull_ca_pem,
            origin_pull_client=self.edge.origin_pull_client_pem,
            website_on_server_name=edge_plan.zone.has_website,
            database=self.database.endpoint if self.database else None,
            media=self.media.endpoint if self.media else None,
            worker_secrets=self.secrets.workers,
            rtc_secrets=self.secrets.rtc,
            user_passwords=self.secrets.user_passwords,
            invitation_tokens=self.secrets.invitation_tokens,
            smtp_password=smtp_password,
            health_token=self.secrets.health_token,
            alert_email=alerts_to,
        )
        # The volume guard comes first, right after the attachment (and the firewall): every other
        # step depends on it, and it is replaced, its delete command stopping the writers and
        # unmounting the volume, before the attachment is deleted or replaced (services/release.py).
        attachment = self.host.attachment
        guard = Service("release", release.steps(context), self.host.connection, after=[attachment, firewall],
                        opts=child, replace_with=[attachment.id, droplet.id])
        previous: list[pulumi.Resource] = guard.last
        self.services = [guard]
        for module in SERVICE_ORDER:
            kind = module.__name__.rsplit(".", 1)[-1]
            # The self-check re-runs whenever any other step changed, so every deployment is verified.
            watch = [c.triggers for s in self.services for c in s.commands] if module is selfcheck else []
            # nginx starts requiring Cloudflare's client certificate only once Cloudflare presents it.
            after = [*previous, self.edge.origin_pulls] if module is nginx else previous
            # The managed cluster's steps connect only once it trusts the droplet.
            if module is postgres and self.database is not None:
                after = [*after, self.database.firewall]
            specs = module.steps(context)
            if not specs:  # an option that is off (mediaStorage: local): no component at all
                continue
            service = Service(kind, specs, self.host.connection, after=after, opts=child, watch=watch)
            self.services.append(service)
            previous = service.last or previous
        self.turn = self._turn_droplet_steps(settings, context, cloudflare_cidrs, child)
        # The inside checks start last, once both droplets passed their self-checks: their first run is then a
        # healthy server's, and the uptime check of their status starts after it.
        checks = Service("health", health.steps(context), self.host.connection,
                         after=[*previous, *(self.turn.last if self.turn else [])], opts=child)
        self.services.append(checks)
        droplet_ids = [droplet.id, *([self.host.turn.droplet.id] if self.host.turn else [])]
        self.alerts = Alerts("alerts", settings, droplet_ids, server_ready=checks.last, email=alerts_to,
                             health_token=self.secrets.health_token, opts=child) if settings.alerts else None
        self.register_outputs({})

    def _turn_droplet_steps(self, settings: Settings, context: ServiceContext,
                            cloudflare_cidrs: pulumi.Output[list[str]],
                            child: pulumi.ResourceOptions) -> Service | None:
        """With `turnDroplet`: its firewall (TURN and SSH only), then base, certificate, coturn and its
        self-check on it. They start once the main droplet's certificate is issued, so the two droplets
        never run ACME orders for turn. at the same time."""
        turn = self.host.turn
        if turn is None:
            return None
        firewall = Firewall("turn-firewall", settings, droplet_id=turn.droplet.id.apply(int),
                            rules=inbound_rules(settings, cloudflare_cidrs, "turn"), opts=child, suffix="turn-fw")
        turn_context = dataclasses.replace(context, droplet_ipv4=turn.droplet.ipv4_address,
                                           droplet_ipv6="", role="turn")
        issued = next(s for s in self.services if s.kind == "certificates").last
        return Service("turn", turn_steps(turn_context), turn.connection, after=[firewall, *issued], opts=child)
