"""The server's own checks between deploys (matrix-stack-health), made to fail for real on the shared host.

Each problem is caused as it happens on a real droplet (a stopped service and renewal timer, a full volume, a
missing, old or damaged backup, certificates near their end under faketime) and then seen where the operator sees
it: the status page DigitalOcean's uptime check reads through Cloudflare (at the very URL the recorded uptime check
has) and the mail the relay receives. Everything is put back before the next test.
"""

from __future__ import annotations

import shlex
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from components import paths
from components.services import health
from tests.e2e.deployment import Deployment
from tests.e2e.test_cloudflare import edge_request
from tests.e2e.testhost.smtp import SmtpRelay

pytestmark = pytest.mark.e2e

ALERTS_TO = "alerts@ops.test"
MAIL_SETTINGS = ("smtpHost", "smtpPort", "smtpUser", "smtpPassword", "alertEmail")
HELD = f"{paths.DATA_MOUNT}/matrix-stack/e2e-held-backups"  # root-only, on the volume: backups moved aside


@pytest.fixture(scope="module")
def relay(deployment: Deployment) -> Iterator[SmtpRelay]:
    """The shared host with the mail relay configured and alerts going to ALERTS_TO; put back afterwards."""
    relay = deployment.host.mail_relay
    assert relay is not None and relay.running
    changed, _ = deployment.apply_changes(smtpHost=relay.name, smtpPort=relay.starttls_port, smtpUser=relay.username,
                                          smtpPassword=relay.password, alertEmail=ALERTS_TO)
    assert "health-schedule" in changed  # its settings file names the relay and the address
    try:
        yield relay
    finally:
        deployment.apply_changes(**dict.fromkeys(MAIL_SETTINGS))


def status_url(deployment: Deployment) -> str:
    """The URL the recorded uptime check of the inside checks fetches."""
    assert deployment.recording is not None
    (check,) = [c for c in deployment.recording.of_type("digitalocean:index/uptimeCheck:UptimeCheck")
                if "server-checks" in c.name]
    return str(check.inputs["target"])


def status(deployment: Deployment, url: str | None = None) -> tuple[int, bytes]:
    """What the uptime checker gets: through the edge, without a browser's User-Agent."""
    url = url or status_url(deployment)
    host, path = url.removeprefix("https://").split("/", 1)
    code, _, body = edge_request(deployment, host, "/" + path)
    return code, body


def run_checks(deployment: Deployment, prefix: str = "") -> tuple[int, str]:
    proc = deployment.host.ssh(f"{prefix}{health.COMMAND}", timeout=180)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


def quiet(relay: SmtpRelay, after: int, seconds: float = 3) -> list[Any]:
    """The mails to ALERTS_TO since `after`, after a short wait for one that should not come."""
    time.sleep(seconds)
    return [m for m in relay.messages() if m.seq > after and ALERTS_TO in m.rcpt_tos]


def test_a_healthy_server_says_ok_on_its_secret_path_only(deployment: Deployment, relay: SmtpRelay) -> None:
    step = next(r for r in deployment.provisioning if r.name == "health-schedule")
    assert "the checks of the server pass" in step.stderr, step.stderr[-2000:]
    assert deployment.ssh(f"systemctl is-active {health.TIMER}").strip() == "active"
    rc, out = run_checks(deployment)
    assert rc == 0 and "every check passed" in out, out
    url = status_url(deployment)
    assert url.startswith(f"https://matrix.{deployment.domain}{health.STATUS_PATH}")
    assert status(deployment) == (200, b"ok\n")
    # Another token, or none, finds nothing: the page is only the uptime check's.
    assert status(deployment, url[:-4] + "abcd")[0] == 404
    assert status(deployment, url.rsplit("/", 1)[0] + "/")[0] == 404


def test_a_stopped_service_and_renewal_timer_reach_the_operator_and_their_return_too(
        deployment: Deployment, relay: SmtpRelay) -> None:
    mark = relay.last_seq()
    deployment.ssh("systemctl stop coturn.service certbot.timer")
    try:
        rc, out = run_checks(deployment)
        assert rc == 1, out
        assert "coturn.service is inactive" in out and "certbot.timer is inactive" in out, out
        assert status(deployment)[0] == 503
        mail = relay.wait_for(ALERTS_TO, timeout=30, after=mark)
        assert mail.subject == f"Matrix {deployment.domain}: 2 problem(s) on the server", mail.subject
        assert "coturn.service is inactive" in mail.body() and "certbot.timer is inactive" in mail.body()
        # The same problems an hour later: no second mail (one a day while they remain).
        mark = relay.last_seq()
        assert run_checks(deployment)[0] == 1
        assert quiet(relay, mark) == []
    finally:
        deployment.ssh("systemctl start coturn.service certbot.timer")
    rc, out = run_checks(deployment)
    assert rc == 0, out
    assert relay.wait_for(ALERTS_TO, timeout=30, after=mark).subject == \
        f"Matrix {deployment.domain}: every check passes again"
    assert status(deployment) == (200, b"ok\n")


def test_a_volume_past_the_alert_threshold_is_named(deployment: Deployment, relay: SmtpRelay) -> None:
    filler = f"{paths.DATA_MOUNT}/matrix-stack/e2e-filler"
    threshold = deployment.settings.alert_disk_percent
    size, used = (int(v) for v in deployment.ssh(
        f"df --block-size=1 --output=size,used {paths.DATA_MOUNT} | tail -n 1").split())
    needed = size * (threshold + 1) // 100 - used
    assert needed > 0, "the volume is already past the threshold"
    mark = relay.last_seq()
    deployment.ssh(f"fallocate -l {needed} {filler}")
    try:
        rc, out = run_checks(deployment)
        assert rc == 1 and f"the data volume {paths.DATA_MOUNT} is" in out and "raise volumeSizeGb" in out, out
        assert status(deployment)[0] == 503
        assert "raise volumeSizeGb" in relay.wait_for(ALERTS_TO, timeout=30, after=mark).body()
    finally:
        deployment.ssh(f"rm -f {filler}")
    assert run_checks(deployment)[0] == 0
    assert status(deployment)[0] == 200


def backups(deployment: Deployment) -> list[str]:
    return deployment.ssh(f"ls {paths.BACKUP_DIR}").split()


def test_a_missing_an_old_and_a_damaged_backup_are_each_found(deployment: Deployment, relay: SmtpRelay) -> None:
    deployment.ssh(f"{paths.BACKUP_COMMAND} e2e-health")
    assert run_checks(deployment)[0] == 0  # the newest backup is recent and verified
    kept = backups(deployment)
    newest = max(kept)
    deployment.ssh(f"mkdir -m 0700 {HELD} && mv {paths.BACKUP_DIR}/* {HELD}/")
    try:
        rc, out = run_checks(deployment)  # every backup gone
        assert rc == 1 and f"there is no backup in {paths.BACKUP_DIR}" in out, out
        assert status(deployment)[0] == 503

        # Only a backup of two days ago.
        old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 49 * 3600)) + "-nightly"
        deployment.ssh(f"cp -a {HELD}/{newest} {paths.BACKUP_DIR}/{old}")
        rc, out = run_checks(deployment)
        assert rc == 1 and f"the newest backup ({old}) is 49 hours old" in out, out

        # A new backup whose dump was damaged on the disk: its checksums say so.
        damaged = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-manual"
        deployment.ssh(f"cp -a {HELD}/{newest} {paths.BACKUP_DIR}/{damaged} && "
                       f"printf 'X' | dd of={paths.BACKUP_DIR}/{damaged}/synapse.dump bs=1 seek=4096 conv=notrunc "
                       "status=none")
        rc, out = run_checks(deployment)
        assert rc == 1 and f"the newest backup ({damaged}) cannot be trusted: its files do not match its " \
                           "SHA256SUMS" in out, out
        assert "is 49 hours old" not in out
    finally:
        deployment.ssh(f"rm -rf {paths.BACKUP_DIR}/* && mv {HELD}/* {paths.BACKUP_DIR}/ && rmdir {HELD}")
    assert sorted(backups(deployment)) == sorted(kept)
    rc, out = run_checks(deployment)
    assert rc == 0, out
    assert status(deployment)[0] == 200


def not_after(deployment: Deployment, path: str) -> float:
    end = deployment.ssh(f"openssl x509 -noout -enddate -in {shlex.quote(path)}").strip().split("=", 1)[1]
    return ssl.cert_time_to_seconds(end)


def test_certificates_near_their_end_are_named_with_what_to_do(deployment: Deployment, relay: SmtpRelay) -> None:
    """faketime moves the checks' clock (and only theirs) to days before each certificate's end."""
    deployment.ssh("command -v faketime >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends faketime >/dev/null", timeout=600)
    web = f"{paths.CERT_LIVE_DIR}/{deployment.domain}/cert.pem"

    def at(moment: float) -> str:
        return f"faketime -f {shlex.quote(time.strftime('@%Y-%m-%d %H:%M:%S', time.gmtime(moment)))} "

    try:
        rc, out = run_checks(deployment, prefix="TZ=UTC " + at(not_after(deployment, web) - 10 * 86400))
        assert rc == 1, out
        assert "the web certificate for" in out and "expires in 9 days" in out and "journalctl -u certbot" in out, out
        assert "coturn's certificate for" in out, out  # the copy coturn serves on 5349
        assert status(deployment)[0] == 503

        rc, out = run_checks(deployment, prefix="TZ=UTC " + at(not_after(deployment, paths.ORIGIN_PULL_CLIENT) + 86400))
        assert "the origin-pull client certificate Cloudflare presents has expired: run `pulumi up`" in out, out
    finally:
        rc, out = run_checks(deployment)
    assert rc == 0, out
    assert status(deployment)[0] == 200
