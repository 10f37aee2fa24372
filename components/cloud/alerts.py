"""DigitalOcean's view from outside: alert policies on each droplet's CPU, memory and disk, an uptime check of
the Matrix API through Cloudflare, and one of the inside checks' status page (services/health.py), all mailed to
one address.

They run at DigitalOcean, so they keep watching between deploys and still speak when the droplet cannot: a
droplet that is down, or nginx, Synapse or the Cloudflare path broken, fails the uptime check (Cloudflare
answers 52x). DigitalOcean mails only addresses verified on the account, so the default is the account's own
e-mail, read from the API (getAccount) rather than assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from components.paths import HEALTH_STATUS_PATH as STATUS_PATH
from components.settings import Settings

# Where DigitalOcean's uptime checkers run (the API's regions; all of them, so one region's trouble is not an
# outage) and how long the Matrix API must fail everywhere before the mail.
UPTIME_REGIONS = ("us_east", "us_west", "eu_west", "se_asia")
UPTIME_DOWN_PERIOD = "5m"
UPTIME_PATH = "/_matrix/client/versions"  # answered by Synapse, through nginx, unchallenged by Cloudflare
# The inside checks fail for an hour (their timer's period) before the page says so; the alert then needs the
# page to fail everywhere for 10 minutes, so a run that finds a passing problem once does not mail.
HEALTH_DOWN_PERIOD = "10m"


@dataclass(frozen=True)
class Metric:
    """One droplet metric DigitalOcean's agent reports, with the window it must stay above its threshold."""

    key: str  # names the resource
    type: str  # the API's alert type
    what: str
    window: str  # 5m | 10m | 30m | 1h


METRICS = (
    Metric("cpu", "v1/insights/droplet/cpu", "CPU use", "30m"),  # a long window: Synapse's bursts are normal
    Metric("memory", "v1/insights/droplet/memory_utilization_percent", "memory use", "10m"),
    Metric("disk", "v1/insights/droplet/disk_utilization_percent", "disk use", "10m"),
)


def threshold(settings: Settings, metric: Metric) -> int:
    return {"cpu": settings.alert_cpu_percent, "memory": settings.alert_memory_percent,
            "disk": settings.alert_disk_percent}[metric.key]


def alert_email(settings: Settings, parent: pulumi.Resource) -> pulumi.Output[str]:
    """Where alerts go: alertEmail; else, with DigitalOcean's alerts on, the account's own address (the only one
    it mails unverified); else letsencryptEmail (then only the inside checks' mails use it)."""
    if settings.alert_email:
        return pulumi.Output.from_input(settings.alert_email)
    if settings.alerts:
        return do.get_account_output(opts=pulumi.InvokeOptions(parent=parent)).email
    return pulumi.Output.from_input(settings.letsencrypt_email)


class Alerts(pulumi.ComponentResource):
    """The alert policies on `droplet_ids`, and the uptime checks of the Matrix API and of the inside checks'
    status page (its path ends in `health_token`) with their alerts. The checks start only after `server_ready`
    (the last step), so a first deployment's ten minutes raise no alarm."""

    def __init__(self, name: str, settings: Settings, droplet_ids: Sequence[pulumi.Input[str]],
                 server_ready: Sequence[pulumi.Resource], email: pulumi.Output[str],
                 health_token: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("matrix-stack:cloud:Alerts", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.email = email
        emails = self.email.apply(lambda address: [address])
        server = settings.domain
        self.policies = [
            do.MonitorAlert(
                f"{name}-{metric.key}",
                type=metric.type,
                compare="GreaterThan",
                value=float(threshold(settings, metric)),
                window=metric.window,
                entities=list(droplet_ids),
                description=f"Matrix {server}: {metric.what} above {threshold(settings, metric)} % for {metric.window}",
                enabled=True,
                alerts=do.MonitorAlertAlertsArgs(emails=emails),
                opts=child,
            )
            for metric in METRICS
        ]
        ready = pulumi.ResourceOptions(parent=self, depends_on=list(server_ready))
        self.check, self.down = self._watch(
            f"{name}-matrix-api", f"Matrix {server}: the Matrix API through Cloudflare",
            f"https://{settings.matrix_host}{UPTIME_PATH}", UPTIME_DOWN_PERIOD,
            (f"{name}-matrix-api-down", f"Matrix {server}: the Matrix API does not answer"), emails, ready)
        # The token keeps the page private: secret in the state too.
        self.health_check, self.health_down = self._watch(
            f"{name}-server-checks", f"Matrix {server}: the server's own hourly checks",
            pulumi.Output.concat(f"https://{settings.matrix_host}{STATUS_PATH}", pulumi.Output.secret(health_token)),
            HEALTH_DOWN_PERIOD,
            (f"{name}-server-checks-failing", f"Matrix {server}: a check on the server fails (see the mail from the "
                                              "server, or run `sudo matrix-stack-health` on it)"), emails, ready)
        self.register_outputs({"email": self.email})

    def _watch(self, key: str, name: str, url: pulumi.Input[str], period: str, alert: tuple[str, str],
               emails: pulumi.Output[list[str]], opts: pulumi.ResourceOptions) -> tuple[do.UptimeCheck, do.UptimeAlert]:
        """An uptime check `key` of `url` from every region, and its alert (resource name, name) when it fails in
        all of them for `period`."""
        check = do.UptimeCheck(key, name=name, target=url, type="https", regions=list(UPTIME_REGIONS), enabled=True,
                               opts=opts)
        down = do.UptimeAlert(alert[0], check_id=check.id, name=alert[1],
                              type="down_global", period=period,
                              notifications=[do.UptimeAlertNotificationArgs(emails=emails)],
                              opts=pulumi.ResourceOptions(parent=self))
        return check, down
