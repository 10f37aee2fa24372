"""TLS certificate: certbot with the Cloudflare DNS-01 plugin, renewal timer and a deploy hook.

One lineage named after the apex covers the apex, matrix., chat. and turn. (DNS-01 works although
80/443 only accept Cloudflare); on the TURN droplet (`turnDroplet`) the same lineage name covers turn.
alone. The API token lives only in a 0600 root file. The deploy hook
reloads nginx and hands coturn a readable copy of the certificate.
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, rendered

# certbot's DNS propagation waits, tried in turn until one works: the dns-cloudflare plugin's own
# default first, then longer ones (templates/certificates/issue.sh.j2).
PROPAGATION_WAITS_S = (10, 30, 90)


def names(ctx: ServiceContext) -> list[str]:
    """The names the droplet's certificate covers: turn. alone on the TURN droplet."""
    s = ctx.settings
    return [s.turn_host] if ctx.role == "turn" else list(s.hostnames)


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    common = {"domain": s.domain, "live_dir": paths.CERT_LIVE_DIR}
    hook = render("certificates/deploy-hook.sh.j2", coturn_tls_dir=paths.COTURN_TLS_DIR, **common)
    issue = render(
        "certificates/issue.sh.j2",
        names=names(ctx),
        email=s.letsencrypt_email,
        acme_server=s.acme_server,
        credentials=paths.CERTBOT_CREDENTIALS,
        deploy_hook=paths.CERT_DEPLOY_HOOK,
        propagation_waits=PROPAGATION_WAITS_S,
        **common,
    )
    return [
        StepSpec(name="certificates-install", script=read("certificates/install.sh")),
        StepSpec(
            name="certificates-issue",
            script=issue,
            files=[
                RemoteFile(
                    paths.CERTBOT_CREDENTIALS,
                    rendered("certificates/cloudflare.ini.j2", token=ctx.certbot_token),
                    mode="0600",
                ),
                RemoteFile(paths.CERT_DEPLOY_HOOK, hook, mode="0755"),
            ],
        ),
    ]
