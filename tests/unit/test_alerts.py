"""DigitalOcean's alerts under mocks: the policies watch every droplet with the thresholds set, the uptime check
asks the Matrix API through Cloudflare only once the server answers, the mail goes where DigitalOcean accepts it
(the account's own verified e-mail unless alertEmail says otherwise), and one setting turns it all off. Each
resource is also checked against the provider's schema and rules by record() itself."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.services import health, nginx
from components.settings import SettingsError
from tests.harness import CloudMocks, Recording, changed_steps, record, registered_resources, unwrap
from tests.unit.test_managed_database import step_files

DO = "digitalocean:index/"
MONITOR, CHECK, UPTIME_ALERT = f"{DO}monitorAlert:MonitorAlert", f"{DO}uptimeCheck:UptimeCheck", f"{DO}uptimeAlert:UptimeAlert"
GET_ACCOUNT = f"{DO}getAccount:getAccount"


def droplet_ids(graph: Recording) -> set[str]:
    return {r.id for r in graph.of_type(f"{DO}droplet:Droplet")}


def uptime_check(graph: Recording, key: str) -> Any:
    """The uptime check whose resource name ends in `key`: matrix-api or server-checks."""
    (check,) = [c for c in graph.of_type(CHECK) if c.name.endswith(key)]
    return check


def policies(graph: Recording) -> dict[str, dict[str, Any]]:
    return {unwrap(r.raw_inputs["type"]).rsplit("/", 1)[-1]: unwrap(r.raw_inputs) for r in graph.of_type(MONITOR)}


def test_each_droplet_metric_alerts_above_its_threshold_to_the_accounts_own_address() -> None:
    graph = record({"alertCpuPercent": 75, "alertMemoryPercent": 80, "alertDiskPercent": 70},
                   mocks=CloudMocks(account_email="owner@example.net"))
    found = policies(graph)
    assert {k: (v["value"], v["window"], v["compare"]) for k, v in found.items()} == {
        "cpu": (75.0, "30m", "GreaterThan"), "memory_utilization_percent": (80.0, "10m", "GreaterThan"),
        "disk_utilization_percent": (70.0, "10m", "GreaterThan")}
    assert all(set(p["entities"]) == droplet_ids(graph) and p["alerts"] == {"emails": ["owner@example.net"]}
               for p in found.values())
    assert [token for token, _ in graph.invokes].count(GET_ACCOUNT) == 1


def test_the_uptime_check_asks_the_matrix_api_through_cloudflare_once_the_server_answers() -> None:
    graph = record({}, mocks=CloudMocks(account_email="owner@example.net"))
    check = uptime_check(graph, "matrix-api")
    assert unwrap(check.raw_inputs["target"]) == "https://matrix.example.org/_matrix/client/versions"
    assert unwrap(check.raw_inputs["type"]) == "https"
    # Made after the last step, which runs after the self-check: a first deployment's ten minutes are no outage.
    last = graph.named("health-schedule")
    assert last.urn in check.dependencies and graph.named("selfcheck-verify").urn in last.dependencies
    (alert,) = [a for a in graph.of_type(UPTIME_ALERT) if unwrap(a.raw_inputs["checkId"]) == check.id]
    inputs = unwrap(alert.raw_inputs)
    assert (inputs["checkId"], inputs["type"]) == (check.id, "down_global")
    assert inputs["notifications"] == [{"emails": ["owner@example.net"]}]


def test_with_a_turn_droplet_both_droplets_are_watched() -> None:
    graph = record({"turnDroplet": True})
    assert len(droplet_ids(graph)) == 2
    assert all(set(p["entities"]) == droplet_ids(graph) for p in policies(graph).values())
    # The last step (the inside checks, which ask the TURN droplet's coturn too) waits for both droplets.
    assert graph.named("turn-selfcheck-verify").urn in graph.named("health-schedule").dependencies
    assert all(graph.named("health-schedule").urn in c.dependencies for c in graph.of_type(CHECK))


def test_an_alert_email_given_is_used_and_the_account_is_not_read() -> None:
    graph = record({"alertEmail": "alerts@example.org"})
    assert all(p["alerts"] == {"emails": ["alerts@example.org"]} for p in policies(graph).values())
    assert GET_ACCOUNT not in [token for token, _ in graph.invokes]


def test_one_setting_turns_them_off() -> None:
    graph = record({"alerts": False})
    assert not graph.of_type(MONITOR) and not graph.of_type(CHECK) and not graph.of_type(UPTIME_ALERT)
    assert GET_ACCOUNT not in [token for token, _ in graph.invokes]


def test_a_threshold_changes_only_its_policy() -> None:
    before, after = record({}), record({"alertDiskPercent": 70})
    assert changed_steps(before, after) == {"health-schedule"}  # the inside checks use it for the data volume
    old, new = policies(before), policies(after)
    assert [k for k in old if old[k] != new[k]] == ["disk_utilization_percent"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("alertEmail", "ops-at-example.org", "alertEmail"),
    ("alertCpuPercent", 0, "alertCpuPercent"),
    ("alertDiskPercent", 101, "alertDiskPercent"),
    ("alerts", "sometimes", "alerts"),
])
def test_a_bad_alert_setting_is_one_line_before_any_resource(key: str, value: Any, message: str) -> None:
    recording = Recording()
    with pytest.raises(SettingsError, match=message) as refused:
        record({key: value}, into=recording)
    assert "\n" not in str(refused.value)
    assert registered_resources(recording) == []


def health_settings(graph: Recording) -> dict[str, Any]:
    return dict(json.loads(step_files(graph, "health-schedule")[health.CONFIG].content))


def test_the_server_checks_page_is_watched_on_a_secret_path_the_nginx_site_serves() -> None:
    graph = record({}, mocks=CloudMocks(account_email="owner@example.net"))
    check = uptime_check(graph, "server-checks")
    assert check.is_secret("target")  # the token is the page's only protection
    target = unwrap(check.raw_inputs["target"])
    prefix = "https://matrix.example.org/_matrix-stack/health/"
    assert target.startswith(prefix) and health.TOKEN.fullmatch(target.removeprefix(prefix))
    location = step_files(graph, "nginx-sites")[health.NGINX_LOCATION]
    assert location.mode == "0600" and f'location = "{target.removeprefix("https://matrix.example.org")}" {{' in \
        location.content
    site = step_files(graph, "nginx-sites")[f"{nginx.SITES_AVAILABLE}/matrix-stack-matrix"].content
    assert f'include "{health.NGINX_LOCATION}";' in site
    (alert,) = [a for a in graph.of_type(UPTIME_ALERT) if unwrap(a.raw_inputs["checkId"]) == check.id]
    inputs = unwrap(alert.raw_inputs)
    assert (inputs["type"], inputs["period"]) == ("down_global", "10m")
    assert inputs["notifications"] == [{"emails": ["owner@example.net"]}]
    # Cloudflare lets the checkers through unchallenged, as Matrix traffic.
    rule = next(r for r in graph.of_type("pulumi-python:dynamic:Resource") if "matrix-unchallenged" in r.name)
    assert 'starts_with(http.request.uri.path, "/_matrix-stack/health/")' in str(unwrap(rule.raw_inputs))


def test_the_server_checks_mail_the_alert_address_through_the_relay_with_its_password_kept_secret() -> None:
    relay = {"smtpHost": "smtp.example.net", "smtpPort": 587, "smtpUser": "bot", "smtpPassword": "relay-pass-1"}
    graph = record(relay, mocks=CloudMocks(account_email="owner@example.net"))
    files = step_files(graph, "health-schedule")
    assert files[health.CONFIG].mode == "0600"
    mail = health_settings(graph)["mail"]
    assert mail == {"host": "smtp.example.net", "port": 587, "tls": "starttls", "user": "bot",
                    "password": "relay-pass-1", "from": "Matrix <matrix@example.org>", "to": "owner@example.net"}
    command = next(c for c in graph.commands() if c.name == "health-schedule")
    assert command.is_secret("stdin")
    assert health_settings(record({**relay, "alertEmail": "alerts@example.org"}))["mail"]["to"] == "alerts@example.org"
    # alerts: false keeps the server's own checks and mails letsencryptEmail.
    assert health_settings(record({**relay, "alerts": False}))["mail"]["to"] == "ops@example.org"
    assert health_settings(record({}))["mail"] is None  # no relay: the status page only
