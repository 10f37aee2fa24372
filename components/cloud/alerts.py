"""DigitalOcean's view from outside: alert policies on each droplet's CPU, memory and disk, and an uptime check
of the Matrix API through Cloudflare, all mailed to one address.

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

from components.settings import Settings

# Where DigitalOcean's uptime checkers run (the API's regions; all of them, so one region's trouble is not an
# outage) and how long the Matrix API must fail everywhere before the mail.
UPTIME_REGIONS = ("us_east", "us_west", "eu_west", "se_asia")
UPTIME_DOWN_PERIOD = "5m"
UPTIME_PATH = "/_matrix/client/versions"  # answered by Synapse, through nginx, unchallenged by Cloudflare


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


class Alerts(pulumi.ComponentResource):
    """The alert policies on `droplet_ids` and the Matrix API's uptime check with its alert. The check starts
    only after `server_ready` (the self-check), so a first deployment's ten minutes raise no alarm."""

    def __init__(self, name: str, settings: Settings, droplet_ids: Sequence[pulumi.Input[str]],
                 server_ready: Sequence[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("matrix-stack:cloud:Alerts", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.email: pulumi.Output[str] = (
            pulumi.Output.from_input(settings.alert_email) if settings.alert_email else
            do.get_account_output(opts=pulumi.InvokeOptions(parent=self)).email)
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
        self.check = do.UptimeCheck(
            f"{name}-matrix-api",
            name=f"Matrix {server}: the Matrix API through Cloudflare",
            target=f"https://{settings.matrix_host}{UPTIME_PATH}",
            type="https",
            regions=list(UPTIME_REGIONS),
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(server_ready)),
        )
        self.down = do.UptimeAlert(
            f"{name}-matrix-api-down",
            check_id=self.check.id,
            name=f"Matrix {server}: the Matrix API does not answer",
            type="down_global",
            period=UPTIME_DOWN_PERIOD,
            notifications=[do.UptimeAlertNotificationArgs(emails=emails)],
            opts=child,
        )
        self.register_outputs({"email": self.email})
