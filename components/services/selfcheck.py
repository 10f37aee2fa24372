"""Self-check: the last step. Fails `pulumi up` unless the server answers like a healthy one.

Everything is asked through nginx on 127.0.0.1:443 with the real host names (SNI and Host) and the
origin-pull client certificate, so the check covers nginx, Synapse, Element, the well-known files,
the certificate and coturn's TLS copy, and Synapse's TURN credentials (the admin's kept session,
turnServer). Then the public path: the same names as DNS resolves them, through Cloudflare, so a 526, a
DNS mistake or a challenge page fails the `up` too.

It re-runs when its own script changes (host names, paths) and whenever the step is replaced;
making it re-run on every `up` that changed any other step is the stack's decision (for example
by adding the other steps' triggers to this one), not this pure function's.
"""

from __future__ import annotations

from components import paths, worker_topology
from components.remote import StepSpec
from components.render import render
from components.services import ServiceContext, backup, coturn, synapse_workers

# Fail while the certificate still has a week left, long before users see an expiry error.
MIN_CERT_DAYS = 7
# How long the public path may take to answer right (new DNS records, Cloudflare picking up rules).
PUBLIC_WAIT_S = 90
# Share of the data volume in use at which the check warns, and fails (naming the biggest users).
DISK_WARN_PERCENT = 80
DISK_FAIL_PERCENT = 95


def steps(ctx: ServiceContext) -> list[StepSpec]:
    settings = ctx.settings
    cert = f"{paths.CERT_LIVE_DIR}/{settings.domain}/cert.pem"
    if ctx.role == "turn":
        turn_check = render(
            "selfcheck/turn.sh.j2",
            turn_host=settings.turn_host,
            cert=cert,
            min_cert_days=MIN_CERT_DAYS,
            listening_port=coturn.LISTENING_PORT,
            tls_listening_port=coturn.TLS_LISTENING_PORT,
        )
        return [StepSpec(name="selfcheck-verify", script=turn_check)]
    script = render(
        "selfcheck/verify.sh.j2",
        domain=settings.domain,
        matrix_host=settings.matrix_host,
        chat_host=settings.chat_host,
        turn_host=settings.turn_host,
        # With a TURN droplet coturn must be off here; the TURN droplet's own check (turn-verify) covers it.
        local_coturn=not settings.turn_droplet,
        homeserver_url=settings.homeserver_url,
        admin_credentials=paths.ADMIN_CREDENTIALS,
        cert=cert,
        min_cert_days=MIN_CERT_DAYS,
        backup_timer=backup.TIMER,
        backup_service=backup.SERVICE,
        volume_device=settings.volume_device,
        data_mount=paths.DATA_MOUNT,
        origin_pull_client=paths.ORIGIN_PULL_CLIENT,
        public_wait=PUBLIC_WAIT_S,
        disk_warn_percent=DISK_WARN_PERCENT,
        disk_fail_percent=DISK_FAIL_PERCENT,
        postgres_major=settings.platform.postgres_major,
        postgres_base=paths.POSTGRES_BASE,
        managed_database=ctx.database is not None,
        database_command=paths.DATABASE_COMMAND,
        spaces_command=paths.SPACES_COMMAND if ctx.media is not None else "",
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_starttls=settings.smtp_tls == "starttls",
        worker_units=[synapse_workers.worker_unit(w.name) for w in worker_topology.WORKERS]
        if synapse_workers.enabled(ctx) else [],
    )
    return [StepSpec(name="selfcheck-verify", script=script)]
