"""`matrixRtc`: its settings' refusals, and what the program records with it on and off (mocks): the secrets, the
media ports in the cloud firewall, the edge's unchallenged paths, the steps and what changes when it is switched."""

from __future__ import annotations

from typing import Any

import pytest

from components import rtc_memory
from components.settings import DEFAULTS, SettingsError, load
from tests.harness import DEFAULT_CONFIG, Recording, changed_steps, config_strings, record, refusals, unwrap

PIN = "cd" * 32
ON = {"matrixRtc": True, "lkJwtServiceSha256": PIN}


def _load(**changes: Any) -> None:
    load({k.split(":", 1)[-1]: v for k, v in config_strings({**DEFAULT_CONFIG, **changes}).items()})


def test_the_token_service_pin_is_required_with_matrix_rtc() -> None:
    with pytest.raises(SettingsError, match=r"lkJwtServiceSha256.*required with matrixRtc.*pulumi config set"):
        _load(matrixRtc=True)
    _load(**ON)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("lkJwtServiceVersion", "0.7.0", "GHSA-rq24-fh66-rq7x"),
    ("lkJwtServiceSha256", "ABC", "64 lower-case hex"),
    ("livekitSha256", "c020fac437b7", "64 lower-case hex"),
    ("livekitDownloadUrl", "http://mirror.example.com/{version}.tar.gz", "https"),
    ("lkJwtServiceDownloadUrl", "https://mirror.example.com/lk-jwt-service", "{version}"),
])
def test_bad_rtc_values_are_refused_with_their_setting(key: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=key) as error:
        _load(**{**ON, key: value})
    assert says in str(error.value) and "\n" not in str(error.value)


def test_a_droplet_too_small_for_the_sfu_is_refused_and_the_default_fits() -> None:
    # The default droplet (1 GB) holds the stack under load (328 MiB), the SFU and token service (200 MiB) and
    # the reserve; 512 MB does not.
    assert rtc_memory.needed_mb(False) <= 1024 < rtc_memory.needed_mb(True) <= 4096
    _load(**ON)
    with pytest.raises(SettingsError, match=r"matrixRtc.*at least 784 MB.*s-1vcpu-512mb-10gb has 512"):
        _load(**ON, dropletSize="s-1vcpu-512mb-10gb")
    _load(**ON, dropletSize="s-2vcpu-4gb", synapseWorkers=True)


@pytest.fixture(scope="module")
def off() -> Recording:
    return record({})


@pytest.fixture(scope="module")
def on() -> Recording:
    return record(ON)


def _firewall_rules(recording: Recording) -> set[tuple[str, str, tuple[str, ...]]]:
    [main] = [r for r in recording.of_type("digitalocean:index/firewall:Firewall") if r.inputs["name"].endswith("-fw")]
    return {(rule["protocol"], rule["portRange"], tuple(unwrap(rule["sourceAddresses"])))
            for rule in main.inputs["inboundRules"]}


def test_the_media_ports_are_open_to_everyone_only_with_matrix_rtc(off: Recording, on: Recording) -> None:
    added = _firewall_rules(on) - _firewall_rules(off)
    assert added == {("tcp", "7881", ("0.0.0.0/0", "::/0")), ("udp", "7882", ("0.0.0.0/0", "::/0"))}
    assert _firewall_rules(off) <= _firewall_rules(on)
    assert not any(port == "7880" or port == "8070" for _, port, _ in _firewall_rules(on))


def test_the_secrets_exist_only_with_matrix_rtc_and_stay_secret(off: Recording, on: Recording) -> None:
    names = {"secrets-livekit-secret", "secrets-rtc-as-token", "secrets-rtc-hs-token"}
    passwords = {r.name: r for r in on.of_type("random:index/randomPassword:RandomPassword")}
    assert names <= set(passwords)
    assert all(passwords[n].inputs["length"] == 64 and passwords[n].inputs["special"] is False for n in names)
    assert not names & {r.name for r in off.of_type("random:index/randomPassword:RandomPassword")}


def test_the_edge_lets_calls_through_unchallenged_only_with_matrix_rtc(off: Recording, on: Recording) -> None:
    def skip_expression(recording: Recording) -> str:
        rules = [r for r in recording.registrations if r.name.endswith("matrix-unchallenged")]
        assert len(rules) == 1, [r.name for r in recording.registrations if "unchallenged" in r.name]
        return str(unwrap(rules[0].inputs))

    assert '"/livekit/"' in skip_expression(on) and '"/livekit/"' not in skip_expression(off)


def test_the_recording_passes_the_providers_checks(on: Recording) -> None:
    assert refusals(on) == []


def test_switching_on_and_off_changes_only_the_steps_it_concerns(off: Recording, on: Recording) -> None:
    switched = changed_steps(off, on)
    assert switched == {"rtc-off", "rtc-install", "rtc-config", "synapse-config", "nginx-sites", "element-web",
                        "base-firewall", "selfcheck-verify", "health-schedule"}, switched
    assert changed_steps(on, off) == switched
    assert DEFAULTS["matrixRtc"] is False


def test_with_a_turn_droplet_the_sfu_stays_on_the_main_droplet() -> None:
    recording = record({**ON, "turnDroplet": True})
    rules = {r.inputs["name"]: {(rule["protocol"], rule["portRange"]) for rule in r.inputs["inboundRules"]}
             for r in recording.of_type("digitalocean:index/firewall:Firewall")}
    main = next(v for k, v in rules.items() if k.endswith("-fw") and not k.endswith("turn-fw"))
    turn = next(v for k, v in rules.items() if k.endswith("turn-fw"))
    assert {("tcp", "7881"), ("udp", "7882")} <= main and not {("tcp", "7881"), ("udp", "7882")} & turn
    steps = {c.name for c in recording.commands()}
    assert {"rtc-install", "rtc-config"} <= steps and not any(name.startswith("turn-rtc") for name in steps)
