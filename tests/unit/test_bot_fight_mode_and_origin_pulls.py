"""Bot Fight Mode off without touching the zone's other bot settings, and the wait for Authenticated Origin
Pulls to be active, each provider against the Cloudflare API stand-in over HTTP."""

from __future__ import annotations

import time
from typing import TypeVar

import pytest
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config

from components.cloud.bot_fight_mode import BotFightModeOffProvider
from components.cloud.cloudflare_api import CloudflareProvider
from components.cloud.origin_pulls_ready import OriginPullsNotActive, OriginPullsReadyProvider
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import CLOUDFLARE_TOKEN

PEM = ("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nx\n")


@pytest.fixture
def zone(zone_api: CloudflareStandin) -> CloudflareStandin:
    return zone_api
P = TypeVar("P", bound=CloudflareProvider)


def configured(provider: P, zone: CloudflareStandin) -> P:
    provider.configure(ConfigureRequest(Config({"cloudflare:apiToken": CLOUDFLARE_TOKEN, "cloudflare:baseUrl": zone.url},
                                              "matrix-stack")))
    return provider


def test_bot_fight_mode_goes_off_and_the_zones_other_bot_settings_stay(zone: CloudflareStandin) -> None:
    before = dict(zone.bot_management)
    assert before["fight_mode"] is True and before["is_robots_txt_managed"] is True
    provider = configured(BotFightModeOffProvider(), zone)
    result = provider.create({"zone_id": zone.zone_id, "fight_mode": False})
    assert result.outs is not None and result.outs["was_on"] is True
    assert zone.bot_management == {**before, "fight_mode": False}
    assert [c for c in zone.calls if c.startswith("PUT")] == [f"PUT zones/{zone.zone_id}/bot_management"]


def test_bot_fight_mode_turned_on_again_is_seen_by_refresh_and_turned_off_by_the_next_up(zone: CloudflareStandin) -> None:
    provider = configured(BotFightModeOffProvider(), zone)
    outs = provider.create({"zone_id": zone.zone_id, "fight_mode": False}).outs
    assert outs is not None
    zone.bot_fight_mode = True  # someone switched it on in the dashboard
    refreshed = provider.read(zone.zone_id, outs).outs
    assert refreshed is not None and refreshed["fight_mode"] is True
    assert provider.diff(zone.zone_id, refreshed, {"zone_id": zone.zone_id, "fight_mode": False}).changes
    provider.update(zone.zone_id, refreshed, {"zone_id": zone.zone_id, "fight_mode": False})
    assert zone.bot_fight_mode is False and zone.bot_management["is_robots_txt_managed"] is True
    provider.delete(zone.zone_id, outs)  # destroy: it stays off for the zone's other stacks
    assert zone.bot_fight_mode is False


def upload_and_associate(zone: CloudflareStandin, hostnames: list[str]) -> str:
    base = f"/client/v4/zones/{zone.zone_id}/origin_tls_client_auth/hostnames"
    status, certificate = zone.handle("POST", f"{base}/certificates", {}, {"certificate": PEM[0], "private_key": PEM[1]})
    assert status == 200 and certificate["status"] == ("active" if zone.deployment_seconds == 0 else "pending_deployment")
    zone.handle("PUT", base, {}, {"config": [{"hostname": h, "cert_id": certificate["id"], "enabled": True} for h in hostnames]})
    return str(certificate["id"])


def test_the_wait_ends_when_cloudflare_reports_the_certificate_and_every_name_active(zone: CloudflareStandin) -> None:
    """Cloudflare deploys them asynchronously; nginx requires the certificate from its first step, so nginx's step
    waits for this one."""
    zone.deployment_seconds = 1.5
    names = ["matrix.example.org", "chat.example.org"]
    certificate = upload_and_associate(zone, names)
    assert all(zone.presented_certificate(n) is None for n in names)  # pending: nothing presented yet
    provider = configured(OriginPullsReadyProvider(), zone)
    provider.poll_seconds = 0.2
    started = time.monotonic()
    result = provider.create({"zone_id": zone.zone_id, "certificate_id": certificate, "hostnames": names})
    waited = time.monotonic() - started
    assert result.outs is not None and result.outs["active"] is True
    assert waited >= 1.0, f"returned after {waited:.1f} s, before Cloudflare could have deployed it"
    assert all(zone.presented_certificate(n) is not None for n in names)


def test_a_deployment_that_does_not_finish_fails_the_up_naming_what_is_pending(zone: CloudflareStandin) -> None:
    zone.deployment_seconds = 3600
    certificate = upload_and_associate(zone, ["matrix.example.org"])
    provider = configured(OriginPullsReadyProvider(), zone)
    provider.poll_seconds, provider.wait_seconds = 0.1, 0.5
    with pytest.raises(OriginPullsNotActive, match=r"pending_deployment.*run `pulumi up` again later"):
        provider.create({"zone_id": zone.zone_id, "certificate_id": certificate, "hostnames": ["matrix.example.org"]})


def test_a_name_associated_with_another_certificate_fails_at_once(zone: CloudflareStandin) -> None:
    mine = upload_and_associate(zone, ["matrix.example.org"])
    upload_and_associate(zone, ["matrix.example.org"])  # someone else's certificate took the name over
    provider = configured(OriginPullsReadyProvider(), zone)
    with pytest.raises(OriginPullsNotActive, match="associated with"):
        provider.create({"zone_id": zone.zone_id, "certificate_id": mine, "hostnames": ["matrix.example.org"]})
