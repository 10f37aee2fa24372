"""coturn: the TURN server Synapse hands out to clients for voice and video calls.

Synapse's recommended hardening (anchors.md section 3.1) in full: shared-secret auth, no TCP
relay, every private/special range denied as a peer except the droplet itself, quotas; plus TLS
on 5349 with a coturn-readable copy of the Let's Encrypt certificate, and the relay port range
the firewalls open.
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, certificates, rendered

# Synapse docs/setup/turn/coturn.md, in its order: peers a relay must never reach.
DENIED_PEER_IPS: tuple[str, ...] = (
    "10.0.0.0-10.255.255.255",
    "192.168.0.0-192.168.255.255",
    "172.16.0.0-172.31.255.255",
    "0.0.0.0-0.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.88.99.0-192.88.99.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "240.0.0.0-255.255.255.255",
    "::1",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "100::-100::ffff:ffff:ffff:ffff",
    "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    # Beyond Synapse's list: the other IPv6 forms that embed a private IPv4 address or are not
    # public (coturn GHSA-2x4g-wx24-48m4: 4.6.1 does not reduce them to IPv4 before its checks).
    # coturn compares IPv6 ranges byte by byte (GHSA-4v97-rxjj-4f99), so each is prefix-aligned.
    "::1.0.0.0-::255.255.255.255",  # IPv4-compatible (:: itself is refused by coturn)
    "64:ff9b:1::-64:ff9b:1:ffff:ffff:ffff:ffff:ffff",  # local-use NAT64 (RFC 8215)
    "fec0::-feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # former site-local
)

# The sandbox coturn runs in (templates/coturn/hardening.conf), a drop-in for Debian's own unit.
HARDENING_DROP_IN = "/etc/systemd/system/coturn.service.d/matrix-stack-hardening.conf"

LISTENING_PORT = 3478
TLS_LISTENING_PORT = 5349


def config(ctx: ServiceContext) -> RemoteFile:
    """/etc/turnserver.conf: holds the shared secret, so 0640 root:turnserver (Debian's statoverride)."""
    settings = ctx.settings
    content = rendered(
        "coturn/turnserver.conf.j2",
        secret=ctx.turn_shared_secret,
        ipv4=ctx.droplet_ipv4,
        # The realm only names this server in the 401 challenge (clients echo it back); with
        # use-auth-secret it does not enter the credentials Synapse mints, so the TURN host name
        # (Synapse's own example) identifies the server best.
        turn_host=settings.turn_host,
        min_port=settings.turn_relay_ports[0],
        max_port=settings.turn_relay_ports[1],
        tls_dir=paths.COTURN_TLS_DIR,
        denied_peer_ips=DENIED_PEER_IPS,
    )
    return RemoteFile(paths.COTURN_CONFIG, content, mode="0640", owner="root", group="turnserver")


def steps(ctx: ServiceContext) -> list[StepSpec]:
    settings = ctx.settings
    if ctx.role == "main" and settings.turn_droplet:
        # The TURN droplet runs coturn: stop and disable a coturn this droplet ran before (switching
        # `turnDroplet` on), keeping its package and config for the way back.
        return [StepSpec(name="coturn-off", script=read("coturn/off.sh"))]
    config_script = render(
        "coturn/config.sh.j2",
        live_dir=f"{paths.CERT_LIVE_DIR}/{settings.domain}",
        tls_dir=paths.COTURN_TLS_DIR,
        deploy_hook=paths.CERT_DEPLOY_HOOK,
        hostnames=certificates.names(ctx),
    )
    return [
        # Package, /etc/default/coturn and /etc/services; creates the turnserver group first.
        StepSpec(name="coturn-install", script=read("coturn/install.sh")),
        # Hardened config, certificate copy, enable, restart only when something changed.
        StepSpec(name="coturn-config", script=config_script,
                 files=[config(ctx), RemoteFile(HARDENING_DROP_IN, read("coturn/hardening.conf"), mode="0644")]),
    ]
