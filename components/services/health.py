"""The inside checks between deploys: matrix-stack-health, hourly, and how a failure reaches the operator.

DigitalOcean's alerts see the droplet from outside; what only the server knows (a certificate renewal that keeps
failing, a stopped service, a backup that is old or does not match its checksums, the data volume filling up)
is checked here by a timer. A failure is told without details in public: nginx serves a status file on a path
with a secret token, which the second uptime check (cloud/alerts.py) reads through Cloudflare; with a mail relay
the operator also gets a mail naming each problem and what to do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi

from components import paths, worker_topology
from components.cloud.origin_pulls import EARLY_RENEWAL_HOURS
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import (
    ServiceContext,
    backup,
    certificates,
    coturn,
    maintenance,
    media,
    rtc,
    synapse_workers,
)

COMMAND = "/usr/local/sbin/matrix-stack-health"
CONFIG = "/etc/matrix-stack/health.json"  # 0600 root: the checks, and the relay's password with mail
TIMER = "matrix-stack-health.timer"
SERVICE = "matrix-stack-health.service"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
STATUS_DIR = "/var/lib/matrix-stack-health"  # root 0755: ok-<day> while every check passes (nginx serves it)
STATE_DIR = f"{STATUS_DIR}/state"  # root 0700: what was last found and mailed
STATUS_PATH = paths.HEALTH_STATUS_PATH  # + the token
NGINX_LOCATION = "/etc/nginx/matrix-stack/health.conf"  # 0600 root (nginx reads it as root): holds the token
# certbot renews 30 days before the end: two weeks left means two weeks of failed renewals.
CERT_MARGIN_DAYS = 14
# The origin-pull certificate is renewed by the first `pulumi up` in its last EARLY_RENEWAL_HOURS.
ORIGIN_PULL_MARGIN_DAYS = EARLY_RENEWAL_HOURS // 24
# The backup timer runs nightly within half an hour: a day and a quarter without a new one is a missed night.
BACKUP_MAX_AGE_HOURS = 30
REMIND_HOURS = 24
TOKEN = re.compile(r"[A-Za-z0-9]{16,64}")


def units(ctx: ServiceContext) -> list[str]:
    """Every unit of the stack on the main droplet that must be active."""
    s = ctx.settings
    found = ["nginx.service", paths.SYNAPSE_UNIT]
    if ctx.local_postgres_unit:
        found.append(ctx.local_postgres_unit)
    if not s.turn_droplet:
        found.append("coturn.service")
    if synapse_workers.enabled(ctx):
        found += [synapse_workers.REDIS_UNIT, *(synapse_workers.worker_unit(w.name) for w in worker_topology.WORKERS)]
    if s.matrix_rtc:
        found += list(rtc.UNITS)
    found += [certificates.TIMER, backup.TIMER, maintenance.TIMER, TIMER]
    if ctx.media is not None:
        found.append(media.TIMER)
    return found


def checks(ctx: ServiceContext) -> dict[str, Any]:
    """Everything matrix-stack-health checks, without the mail secrets."""
    s = ctx.settings
    turn_address = s.turn_host if s.turn_droplet else "127.0.0.1"
    turn_fix = ("the TURN droplet renews it with certbot: journalctl -u certbot there" if s.turn_droplet else
                "certbot's deploy hook gives coturn each renewed certificate: journalctl -u certbot")
    return {
        "server": s.domain,
        "units": units(ctx),
        "last_runs": {certificates.SERVICE: "certificate renewal", backup.SERVICE: "backup",
                      maintenance.SERVICE: "database upkeep"},
        "certificates": [
            {"key": "web", "what": f"the web certificate for {', '.join(s.hostnames)}",
             "file": f"{paths.CERT_LIVE_DIR}/{s.domain}/cert.pem", "margin_days": CERT_MARGIN_DAYS,
             "fix": "certbot renews it 30 days before its end and has failed since: journalctl -u certbot; "
                    "Cloudflare answers 526 for every name once it has expired"},
            {"key": "origin-pull", "what": "the origin-pull client certificate Cloudflare presents",
             "file": paths.ORIGIN_PULL_CLIENT, "margin_days": ORIGIN_PULL_MARGIN_DAYS,
             "fix": "run `pulumi up`: it renews this certificate in its last 30 days (once it has expired, nginx "
                    "refuses Cloudflare and every name answers an error)"},
        ],
        "tls_endpoints": [
            {"key": "turn", "what": f"coturn's certificate for {s.turn_host}", "address": turn_address,
             "unit": "" if s.turn_droplet else "coturn.service",
             "port": coturn.TLS_LISTENING_PORT, "name": s.turn_host, "margin_days": CERT_MARGIN_DAYS, "fix": turn_fix,
             "fix_down": "calls through TURN fail: systemctl status coturn"
                         + (f" on the TURN droplet ({s.turn_host})" if s.turn_droplet else "")},
        ],
        "data_mount": paths.DATA_MOUNT,
        "disk_percent": s.alert_disk_percent,
        "disk_fix": "raise volumeSizeGb, or lower localMediaRetentionDays/remoteMediaRetentionDays or backupKeepDays "
                    "(docs/operate.md: Disk space)",
        "backup_dir": paths.BACKUP_DIR,
        "backup_max_age_hours": BACKUP_MAX_AGE_HOURS,
        "backup_fix": f"the nightly backup did not run or failed: journalctl -u {backup.SERVICE}; take one now: "
                      f"sudo {paths.BACKUP_COMMAND}",
        "backup_command": f"sudo {paths.BACKUP_COMMAND}",
        "status_dir": STATUS_DIR,
        "state_dir": STATE_DIR,
        "remind_hours": REMIND_HOURS,
    }


def config_json(ctx: ServiceContext) -> pulumi.Input[str]:
    """health.json: the checks, and with a mail relay where to send (the relay's password resolved in, secret)."""
    s = ctx.settings
    base = checks(ctx)

    def document(values: list[Any]) -> str:
        password, recipient = values
        mail = {"host": s.smtp_host, "port": s.smtp_port, "tls": s.smtp_tls, "user": s.smtp_user,
                "password": password if s.smtp_user else "", "from": s.mail_sender, "to": recipient}
        return json.dumps({**base, "mail": mail if s.mail_enabled else None}, indent=1) + "\n"

    values: list[pulumi.Input[str]] = [ctx.smtp_password, ctx.alert_email]
    if not any(isinstance(v, pulumi.Output) for v in values):  # tests, `review`: plain placeholders
        return document(values)
    return pulumi.Output.secret(pulumi.Output.all(*values).apply(document))


def nginx_location(ctx: ServiceContext) -> pulumi.Input[str]:
    """The status location of the matrix. site (included there), with the token in its path."""

    def location(token: str) -> str:
        if not TOKEN.fullmatch(token):
            raise ValueError("the health token must be 16-64 letters and digits")
        return render("health/nginx-location.conf.j2", path=STATUS_PATH + token, status_dir=STATUS_DIR)

    if isinstance(ctx.health_token, pulumi.Output):
        return pulumi.Output.secret(ctx.health_token.apply(location))
    return location(str(ctx.health_token) if TOKEN.fullmatch(str(ctx.health_token)) else "healthtokenplaceholder")


def steps(ctx: ServiceContext) -> list[StepSpec]:
    if ctx.role == "turn":  # the main droplet checks the TURN droplet's coturn and certificate from outside
        return []
    service = render("health/matrix-stack-health.service.j2", command=COMMAND)
    return [StepSpec(
        name="health-schedule",
        script=render("health/schedule.sh.j2", timer=TIMER, timer_path=TIMER_PATH, service=SERVICE),
        files=[
            RemoteFile(COMMAND, read("health/matrix-stack-health.py"), mode="0755"),
            RemoteFile(CONFIG, config_json(ctx), mode="0600"),
            RemoteFile(SERVICE_PATH, service, mode="0644"),
            RemoteFile(TIMER_PATH, read("health/matrix-stack-health.timer"), mode="0644"),
        ],
    )]
