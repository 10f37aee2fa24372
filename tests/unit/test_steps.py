"""The remote steps as recorded: order, no-op stability, change locality and secret handling."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from components.remote import RUN_BUNDLE
from tests import harness
from tests.harness import CloudMocks, Recording, parse_bundle, record, unwrap

STEP_ORDER = [
    "release-volume",
    "base-packages",
    "base-firewall",
    "volume-mount",
    "postgres-install",
    "postgres-config",
    "backup-schedule",
    "maintenance-schedule",
    "certificates-install",
    "certificates-issue",
    "synapse-install",
    "synapse-config",
    "coturn-install",
    "coturn-config",
    "rtc-off",  # matrixRtc off: stops the SFU and token service an earlier `up` ran (tests/unit/test_matrix_rtc.py)
    "element-web",
    "nginx-sites",
    "admin-user",
    "team-accounts",
    "selfcheck-verify",
    "health-schedule",
]


def changed_steps(before: Recording, after: Recording) -> set[str]:
    """A setting change never adds or removes a step; which ones would re-run."""
    assert before.triggers().keys() == after.triggers().keys()
    return harness.changed_steps(before, after)


def test_steps_run_in_the_design_order_one_after_another(graph: Recording) -> None:
    commands = graph.commands()
    assert [c.name for c in commands] == STEP_ORDER
    command_urns = {c.urn for c in commands}
    for previous, current in itertools.pairwise(commands):
        assert previous.urn in current.dependencies, current.name
        if current.name != "selfcheck-verify":
            assert set(current.dependencies) & command_urns == {previous.urn}, current.name
    # The self-check waits for every step before it (it watches their triggers); the checks between deploys
    # come last, after it.
    selfcheck, last = commands[-2], commands[-1]
    assert set(selfcheck.dependencies) & command_urns == command_urns - {selfcheck.urn, last.urn}
    first = commands[0]
    # The first step waits for the attachment and the firewall (explicitly or through its triggers).
    depends_on = {graph.by_urn(u).type for u in first.dependencies}
    assert depends_on >= {
        "digitalocean:index/volumeAttachment:VolumeAttachment",
        "digitalocean:index/firewall:Firewall",
    }
    assert depends_on <= {
        "digitalocean:index/volumeAttachment:VolumeAttachment",
        "digitalocean:index/firewall:Firewall",
        "digitalocean:index/droplet:Droplet",  # the connection and the guard's identity
        "tls:index/privateKey:PrivateKey",  # the connection's deploy key
    }


def test_every_step_connects_with_the_deploy_key_to_the_droplet(graph: Recording) -> None:
    for command in graph.commands():
        assert command.is_secret("connection")
        connection = command.inputs["connection"]
        assert connection["host"] == "203.0.113.10"
        assert connection["user"] == "root"
        assert connection["privateKey"] == "-----FAKE PRIVATE KEY-----\n"
        assert command.inputs["create"] == RUN_BUNDLE
        assert "triggers[*]" in command.replace_on_changes


def test_every_trigger_is_plain_so_a_preview_names_what_changed(graph: Recording) -> None:
    """Triggers are hashes (tested below: no secret in them), so none needs to be a secret; a secret
    trigger would show as [secret] in `pulumi preview --diff`."""
    carrying = [c.name for c in graph.commands() if c.is_secret("stdin")]
    assert carrying, "no step carries a secret: the test would prove nothing"
    for command in graph.commands():
        assert not harness.contains_secret_marker(command.raw_inputs["triggers"]), command.name
        assert all(isinstance(t, str) and len(t) < 200 for t in command.inputs["triggers"]), command.name


def test_a_second_run_gives_identical_triggers_and_inputs() -> None:
    first, second = record(), record()
    assert first.triggers() == second.triggers()
    for a, b in zip(first.commands(), second.commands()):
        assert a.inputs["stdin"] == b.inputs["stdin"], a.name


LOCALITY: list[tuple[dict[str, Any], set[str]]] = [
    ({"elementVersion": "1.12.31", "elementSha256": "0" * 64}, {"element-web"}),
    ({"maxUploadSizeMb": 20}, {"synapse-config", "nginx-sites"}),
    ({"backupKeepDays": 30}, {"backup-schedule"}),
    ({"volumeSizeGb": 20}, {"volume-mount"}),  # grows the filesystem to the resized volume
    ({"synapseVersion": "1.163.1"}, {"synapse-install", "synapse-config"}),  # the upgrade restarts Synapse
    ({"turnRelayPorts": "50000-50099"}, {"base-firewall", "coturn-config"}),
    ({"sshAllowedCidrs": ["198.51.100.0/24"]}, {"base-firewall"}),
    ({"sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserOne a@b"]}, {"base-firewall"}),
    ({"federation": "allowlist", "federationAllowlist": ["matrix.org"]}, {"synapse-config"}),
    ({"federation": "off"}, {"synapse-config"}),
    ({"enableUrlPreviews": True}, {"synapse-config"}),
    ({"outboundIpAllowlist": ["10.8.0.0/24"]}, {"synapse-config"}),
    ({"acmeServer": "https://acme.example.net/directory"}, {"certificates-issue"}),
    ({"letsencryptEmail": "other@example.org"}, {"certificates-issue"}),
    # A new size is a new droplet (replace_on_changes): the volume guard is replaced with it.
    ({"dropletSize": "s-2vcpu-4gb"}, {"release-volume", "postgres-config", "synapse-config"}),
]


@pytest.mark.parametrize(("change", "expected"), LOCALITY, ids=[",".join(c) for c, _ in LOCALITY])
def test_a_changed_setting_changes_only_the_steps_that_use_it(
    graph: Recording, change: dict[str, Any], expected: set[str]
) -> None:
    # The self-check watches every other step, so it re-runs (verifies) after any change.
    assert changed_steps(graph, record(change)) == expected | {"selfcheck-verify"}


def test_new_cloudflare_ranges_change_only_the_firewall_and_nginx(graph: Recording) -> None:
    moved = record(mocks=CloudMocks(cloudflare_ipv4=["192.0.2.0/24"], cloudflare_ipv6=["2001:db8:cf::/48"]))
    assert changed_steps(graph, moved) == {"base-firewall", "nginx-sites", "selfcheck-verify"}


def test_droplet_replacement_reconnects_every_step_and_reruns_only_what_depends_on_the_droplet(graph: Recording) -> None:
    """A new droplet (here: another size, so another droplet id and address): every step connects to the
    new address; the guard is replaced (its delete released the volume on the old droplet first), and
    only the steps whose content names the droplet change their triggers."""
    moved = record({"dropletSize": "s-2vcpu-2gb"}, mocks=CloudMocks(droplet_ipv4="203.0.113.99"))
    assert {c.inputs["connection"]["host"] for c in moved.commands()} == {"203.0.113.99"}
    assert moved.named("release-volume").inputs["triggers"] != graph.named("release-volume").inputs["triggers"]
    assert changed_steps(graph, moved) == {
        "release-volume",  # the new droplet and attachment
        "postgres-config", "synapse-config",  # tuned to the new size's memory
        "coturn-config",  # coturn's external-ip is the droplet's address
        "selfcheck-verify",
    }


SECRETS = {
    "postgres": "secrets-postgres-password",
    "registration": "secrets-registration-shared-secret",
    "macaroon": "secrets-macaroon-secret",
    "form": "secrets-form-secret",
    "turn": "secrets-turn-shared-secret",
    "admin": "secrets-admin-password",
}


def secret_values(recording: Recording) -> dict[str, str]:
    values = {k: str(unwrap(recording.named(n).raw_outputs["result"])) for k, n in SECRETS.items()}
    seed = str(unwrap(recording.named("secrets-signing-key-seed").raw_outputs["base64"])).rstrip("=")
    values["signing key"] = seed
    values["certbot token"] = "cf-token-SECRET-0123456789abcdef"
    return values


def test_no_secret_in_a_plain_input_or_a_script(graph: Recording) -> None:
    secrets = secret_values(graph)
    for command in graph.commands():
        files, script = parse_bundle(command.inputs["stdin"])
        carries = {label for label, value in secrets.items() if any(value in f.content for f in files)}
        if carries:
            assert command.is_secret("stdin"), f"{command.name} carries {carries} in plain state"
            assert set(command.additional_secret_outputs) >= {"stdout", "stderr"}, command.name
        assert not any(value in script for value in secrets.values()), f"secret in {command.name}'s script"
        for key in ("create", "triggers", "environment"):
            text = repr(command.inputs.get(key))
            assert not any(value in text for value in secrets.values()), f"secret in {command.name}.{key}"


def test_secret_files_are_not_world_readable(graph: Recording) -> None:
    secrets = secret_values(graph)
    for command in graph.commands():
        for file in parse_bundle(command.inputs["stdin"])[0]:
            if any(value in file.content for value in secrets.values()):
                assert file.mode in ("0600", "0640"), f"{file.path} is {file.mode}"


def test_each_secret_reaches_the_server_in_some_step(graph: Recording) -> None:
    secrets = secret_values(graph)
    shipped = [f.content for c in graph.commands() for f in parse_bundle(c.inputs["stdin"])[0]]
    for label, value in secrets.items():
        assert any(value in content for content in shipped), f"{label} never reaches the server"
