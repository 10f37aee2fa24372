"""TLS certificate: certbot, renewal timer and a deploy hook.

On the main droplet one lineage named after the apex covers the apex, matrix., chat. and turn., by
DNS-01 with the Cloudflare plugin (it works although 80/443 only accept Cloudflare); the zone's DNS-edit
token lives only there, in a 0600 root file. The TURN droplet (`turnDroplet`) holds no Cloudflare token
at all: turn. is a DNS-only name pointing at it, so it proves control by HTTP-01, certbot answering
on port 80 (its firewalls open 80 for that) only while it orders or renews; the same lineage name
covers turn. alone. The deploy hook reloads nginx and hands coturn a readable copy of the certificate.
The main droplet keeps its ACME account and certificates on the data volume (paths.CERT_STORE), so a
replaced droplet reuses them rather than ordering a duplicate; the TURN droplet has no volume and orders anew.
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, rendered

# certbot's DNS propagation waits, tried in turn until one works: the dns-cloudflare plugin's own
# default first, then longer ones (templates/certificates/issue.sh.j2).
PROPAGATION_WAITS_S = (10, 30, 90)
TIMER, SERVICE = "certbot.timer", "certbot.service"  # Debian's renewal units


def names(ctx: ServiceContext) -> list[str]:
    """The names the droplet's certificate covers: turn. alone on the TURN droplet."""
    s = ctx.settings
    return [s.turn_host] if ctx.role == "turn" else list(s.hostnames)


def challenge(ctx: ServiceContext) -> str:
    """How the droplet proves control of its names: "dns-cloudflare" (main), "http" (the TURN droplet)."""
    return "http" if ctx.role == "turn" else "dns-cloudflare"


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    common = {"domain": s.domain, "live_dir": paths.CERT_LIVE_DIR}
    hook = render("certificates/deploy-hook.sh.j2", coturn_tls_dir=paths.COTURN_TLS_DIR, **common)
    how = challenge(ctx)
    issue = render(
        "certificates/issue.sh.j2",
        names=names(ctx),
        email=s.letsencrypt_email,
        acme_server=s.acme_server,
        challenge=how,
        authenticator="standalone" if how == "http" else "dns-cloudflare",
        credentials=paths.CERTBOT_CREDENTIALS,
        deploy_hook=paths.CERT_DEPLOY_HOOK,
        propagation_waits=PROPAGATION_WAITS_S,
        # Only the main droplet has the data volume: its account and certificate outlive a replacement.
        cert_store=paths.CERT_STORE if how == "dns-cloudflare" else "",
        config_dir=paths.CERT_CONFIG_DIR,
        store_dirs=paths.CERT_STORE_DIRS,
        data_mount=paths.DATA_MOUNT,
        replaced_dir=paths.CERT_REPLACED_DIR,
        **common,
    )
    token = [RemoteFile(paths.CERTBOT_CREDENTIALS, rendered("certificates/cloudflare.ini.j2", token=ctx.certbot_token),
                        mode="0600")] if how == "dns-cloudflare" else []
    packages = ["certbot", "python3-certbot-dns-cloudflare"] if how == "dns-cloudflare" else ["certbot"]
    return [
        StepSpec(name="certificates-install", script=render("certificates/install.sh.j2", packages=packages)),
        StepSpec(
            name="certificates-issue",
            script=issue,
            files=[*token, RemoteFile(paths.CERT_DEPLOY_HOOK, hook, mode="0755")],
        ),
    ]
