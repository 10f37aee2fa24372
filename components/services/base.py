"""Base system: wait for first boot, common packages, root's SSH keys, the host firewall (ufw)."""

from __future__ import annotations

from components.cloud.firewall import inbound_rules
from components.remote import RemoteFile, StepSpec
from components.render import read
from components.services import ServiceContext, rendered


def steps(ctx: ServiceContext) -> list[StepSpec]:
    settings = ctx.settings
    authorized_keys = rendered(
        "base/authorized_keys.j2",
        deploy_public_key=ctx.deploy_public_key,
        user_keys=settings.ssh_public_keys,
    )
    ufw_rules = rendered(
        "base/ufw.rules.j2",
        rules_for=lambda cloudflare: inbound_rules(settings, cloudflare, ctx.role),
        cloudflare_ipv4=ctx.cloudflare_ipv4,
        cloudflare_ipv6=ctx.cloudflare_ipv6,
    )
    return [
        StepSpec(name="base-packages", script=read("base/packages.sh")),
        StepSpec(
            name="base-firewall",
            script=read("base/firewall.sh"),
            files=[
                RemoteFile("/root/.ssh/authorized_keys", authorized_keys, mode="0600"),
                RemoteFile("/etc/matrix-stack/ufw.rules", ufw_rules, mode="0644"),
            ],
        ),
    ]
