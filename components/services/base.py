"""Base system: wait for first boot, common packages, root's SSH keys, the host firewall (ufw)."""

from __future__ import annotations

from components.cloud.firewall import inbound_rules
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, rendered

# DigitalOcean's metadata service: it serves the droplet's user data (the pinned SSH host key) to anyone
# on the droplet. Only root, and DigitalOcean's monitoring agent (it reads its token there), may reach it.
METADATA_ADDRESS = "169.254.169.254"
METADATA_USERS = ("do-agent",)
GUARD_COMMAND = "/usr/local/sbin/matrix-stack-metadata-guard"
GUARD_UNIT = "matrix-stack-metadata-guard.service"
GUARD_TABLE = "matrix_stack_guard"
# sshd reads the first value of a setting it finds; its drop-ins come first, in name order, so this one
# wins over the image's own (cloud-init's 50-cloud-init.conf) and over sshd_config.
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/10-matrix-stack.conf"
# unattended-upgrades: its daily run, and whether and when it reboots (after Debian's 50unattended-upgrades).
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
UPGRADES_REBOOT = "/etc/apt/apt.conf.d/52matrix-stack-unattended-upgrades"


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
    guard = render("base/metadata-guard.sh.j2", address=METADATA_ADDRESS, allowed_users=METADATA_USERS,
                   table=GUARD_TABLE)
    guard_unit = render("base/matrix-stack-metadata-guard.service.j2", command=GUARD_COMMAND)
    firewall = render("base/firewall.sh.j2", guard_unit=GUARD_UNIT, guard_table=GUARD_TABLE,
                      metadata_address=METADATA_ADDRESS, sshd_drop_in=SSHD_DROP_IN)
    return [
        StepSpec(
            name="base-packages",
            script=read("base/packages.sh"),
            files=[
                RemoteFile(AUTO_UPGRADES, read("base/auto-upgrades.conf"), mode="0644"),
                RemoteFile(UPGRADES_REBOOT, render("base/unattended-upgrades.conf.j2",
                                                   reboot_time=settings.automatic_reboot_time), mode="0644"),
            ],
        ),
        StepSpec(
            name="base-firewall",
            script=firewall,
            files=[
                RemoteFile("/root/.ssh/authorized_keys", authorized_keys, mode="0600"),
                RemoteFile("/etc/matrix-stack/ufw.rules", ufw_rules, mode="0644"),
                RemoteFile(GUARD_COMMAND, guard, mode="0755"),
                RemoteFile(f"/etc/systemd/system/{GUARD_UNIT}", guard_unit, mode="0644"),
                RemoteFile(SSHD_DROP_IN, read("base/sshd.conf"), mode="0644"),
            ],
        ),
    ]
