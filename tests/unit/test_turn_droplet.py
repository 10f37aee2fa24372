"""`turnDroplet`: coturn on a droplet of its own, as recorded under mocks.

Off (the default) the graph is exactly the single-droplet one; on, a second droplet with its own host
key, a firewall that opens only TURN and SSH, turn. pointing at it, and its own steps, while the main
droplet stops opening TURN ports and switches its coturn off. Switching back converges to the graph
of a stack that never had it.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.settings import DEFAULTS, SettingsError, load
from tests.harness import DEFAULT_CONFIG, CloudMocks, Recording, changed_steps, parse_bundle, record, unwrap

TURN_IPV4 = CloudMocks().turn_ipv4
MAIN_IPV4 = CloudMocks().droplet_ipv4
TURN_PORT_RULES = {("tcp", "3478"), ("udp", "3478"), ("tcp", "5349"), ("udp", "5349"),
                   ("udp", DEFAULTS["turnRelayPorts"])}


@pytest.fixture(scope="module")
def turn_graph() -> Recording:
    return record({"turnDroplet": True})


def resources(recording: Recording) -> dict[tuple[str, str], Any]:
    """Every resource the program registered, with its inputs (registration order varies)."""
    return {(r.type, r.name): r.inputs for r in recording.registrations if r.type != "pulumi:pulumi:Stack"}


def droplets(recording: Recording) -> dict[str, Any]:
    return {r.name: r for r in recording.of_type("digitalocean:index/droplet:Droplet")}


def firewalls(recording: Recording) -> dict[str, Any]:
    return {r.inputs["name"]: r for r in recording.of_type("digitalocean:index/firewall:Firewall")}


def ports(firewall: Any) -> set[tuple[str, str]]:
    return {(r["protocol"], r["portRange"]) for r in firewall.inputs["inboundRules"]}


def turn_record(recording: Recording) -> dict[str, Any]:
    (record_,) = [r.inputs for r in recording.of_type("cloudflare:index/dnsRecord:DnsRecord")
                  if r.inputs["name"] == "turn.example.org"]
    return record_


def test_off_by_default_and_its_size_is_ignored_while_off(graph: Recording) -> None:
    assert set(droplets(graph)) == {"host-droplet"}
    resized = record({"turnDropletSize": "s-1vcpu-1gb"})
    assert resources(resized) == resources(graph)
    assert changed_steps(graph, resized) == set()


@pytest.mark.parametrize(("key", "value"), [("turnDroplet", "yes"), ("turnDropletSize", "tiny"),
                                            ("turnDropletSize", "S-1VCPU-512MB")])
def test_bad_values_are_one_line_errors_naming_the_setting(key: str, value: str) -> None:
    raw = {k: v if isinstance(v, str) else str(v) for k, v in DEFAULT_CONFIG.items()}
    raw["sshAllowedCidrs"] = '["203.0.113.7/32"]'
    with pytest.raises(SettingsError) as error:
        load({**raw, key: value if key == "turnDropletSize" else f'"{value}"'})
    message = str(error.value)
    assert key in message and "\n" not in message


def test_the_turn_droplet_is_small_same_image_ipv4_only_with_its_own_pinned_host_key(turn_graph: Recording) -> None:
    found = droplets(turn_graph)
    main, turn = found["host-droplet"], found["host-turn-droplet"]
    assert turn.inputs["size"] == DEFAULTS["turnDropletSize"]
    assert turn.inputs["image"] == main.inputs["image"] and turn.inputs["region"] == main.inputs["region"]
    assert turn.inputs["ipv6"] is False and turn.inputs["name"] == f"{main.inputs['name']}-turn"
    assert turn.inputs["sshKeys"] == main.inputs["sshKeys"]
    assert turn.is_secret("userData")
    assert yaml.safe_load(turn.inputs["userData"])["ssh_keys"]["ed25519_public"] == "ssh-ed25519 AAAAfakeTurnKey"
    for command in turn_graph.commands():
        connection = command.inputs["connection"]
        on_turn = command.name.startswith("turn-")
        assert connection["host"] == (TURN_IPV4 if on_turn else MAIN_IPV4), command.name
        assert connection["hostKey"] == ("ssh-ed25519 AAAAfakeTurnKey" if on_turn else "ssh-ed25519 AAAAfakeHostKey")
    (project,) = turn_graph.of_type("digitalocean:index/project:Project")
    assert f"do:droplet:{turn.id}" in project.inputs["resources"]
    assert turn_graph.stack_outputs["turnDropletIpv4"] == (TURN_IPV4, False)


def test_turn_ports_open_on_the_turn_droplet_only_and_turn_points_at_it(turn_graph: Recording, graph: Recording) -> None:
    before = firewalls(graph)["matrix-test-example-org-fw"]
    main = firewalls(turn_graph)["matrix-test-example-org-fw"]
    turn = firewalls(turn_graph)["matrix-test-example-org-turn-fw"]
    assert ports(main) == ports(before) - TURN_PORT_RULES
    # 80 for the CA's HTTP-01 check of turn. (the TURN droplet holds no DNS token: issue 26).
    assert ports(turn) == TURN_PORT_RULES | {("tcp", "22"), ("tcp", "80")}
    ssh = [r for r in turn.inputs["inboundRules"] if r["portRange"] == "22"]
    assert ssh[0]["sourceAddresses"] == DEFAULT_CONFIG["sshAllowedCidrs"]
    http = [r for r in turn.inputs["inboundRules"] if r["portRange"] == "80"]
    assert http[0]["sourceAddresses"] == ["0.0.0.0/0", "::/0"]
    assert turn.inputs["dropletIds"] == [int(droplets(turn_graph)["host-turn-droplet"].id)]
    assert turn_record(turn_graph)["content"] == TURN_IPV4 and turn_record(turn_graph)["proxied"] is False
    assert turn_record(graph)["content"] == MAIN_IPV4


def bundle(recording: Recording, step: str) -> tuple[dict[str, str], str]:
    files, script = parse_bundle(str(recording.named(step).inputs["stdin"]))
    return {f.path: f.content for f in files}, script


def test_the_turn_droplet_gets_base_certificate_coturn_and_a_check_after_the_main_certificate(
        turn_graph: Recording) -> None:
    names = [c.name for c in turn_graph.commands() if c.name.startswith("turn-")]
    assert names == ["turn-base-packages", "turn-base-firewall", "turn-certificates-install",
                     "turn-certificates-issue", "turn-coturn-install", "turn-coturn-config", "turn-selfcheck-verify"]
    first = turn_graph.named("turn-base-packages")
    assert turn_graph.named("certificates-issue").urn in first.dependencies
    # Its certificate covers turn. alone; coturn relays on the TURN droplet's address.
    files, issue = bundle(turn_graph, "turn-certificates-issue")
    assert "-d turn.example.org" in issue and "-d matrix.example.org" not in issue
    # No Cloudflare token on the TURN droplet: not in any of its steps (its certificate is HTTP-01's).
    token = DEFAULT_CONFIG["certbotCloudflareToken"]
    for command in turn_graph.commands():
        if command.name.startswith("turn-"):
            assert token not in str(unwrap(command.raw_inputs["stdin"])), command.name
    assert "/etc/letsencrypt/cloudflare.ini" not in files
    files, _ = bundle(turn_graph, "turn-coturn-config")
    conf = files["/etc/turnserver.conf"]
    assert f"relay-ip={TURN_IPV4}" in conf and f"external-ip={TURN_IPV4}" in conf and MAIN_IPV4 not in conf
    files, _ = bundle(turn_graph, "turn-base-firewall")
    rules = {tuple(line.split()[:2]) for line in files["/etc/matrix-stack/ufw.rules"].splitlines()
             if not line.startswith("#")}
    assert rules == {("tcp", "22"), ("tcp", "80"), ("tcp", "3478"), ("udp", "3478"), ("tcp", "5349"), ("udp", "5349"),
                     ("udp", DEFAULTS["turnRelayPorts"].replace("-", ":"))}


def test_the_main_droplet_switches_its_coturn_off_and_closes_turn_in_ufw(turn_graph: Recording) -> None:
    names = {c.name for c in turn_graph.commands()}
    assert "coturn-off" in names and not {"coturn-install", "coturn-config"} & names
    files, _ = bundle(turn_graph, "base-firewall")
    ports_open = {line.split()[1] for line in files["/etc/matrix-stack/ufw.rules"].splitlines()
                  if not line.startswith("#")}
    assert ports_open == {"22", "80", "443"}
    # The same secret reaches coturn on the TURN droplet and Synapse on the main one.
    turn_conf, _ = bundle(turn_graph, "turn-coturn-config")
    synapse_files, _ = bundle(turn_graph, "synapse-config")
    secret = str(unwrap(turn_graph.named("secrets-turn-shared-secret").raw_outputs["result"]))
    assert f"static-auth-secret={secret}" in turn_conf["/etc/turnserver.conf"]
    assert any(secret in content for content in synapse_files.values())


def test_switching_on_and_off_touches_only_what_changes(graph: Recording, turn_graph: Recording) -> None:
    turn_steps = {c.name for c in turn_graph.commands() if c.name.startswith("turn-")}
    assert changed_steps(graph, turn_graph) == turn_steps | {
        "base-firewall", "coturn-install", "coturn-config", "coturn-off", "selfcheck-verify",
        "health-schedule"}  # which asks the TURN droplet's coturn over the network
    back = record({"turnDroplet": False})
    assert changed_steps(turn_graph, back) == changed_steps(graph, turn_graph)
    assert changed_steps(graph, back) == set()
    assert [r.inputs for r in back.of_type("digitalocean:index/firewall:Firewall")] == \
        [r.inputs for r in graph.of_type("digitalocean:index/firewall:Firewall")]


def test_a_new_turn_size_replaces_only_the_turn_droplet(turn_graph: Recording) -> None:
    bigger = record({"turnDroplet": True, "turnDropletSize": "s-1vcpu-1gb"})
    assert droplets(bigger)["host-turn-droplet"].id != droplets(turn_graph)["host-turn-droplet"].id
    assert droplets(bigger)["host-droplet"].id == droplets(turn_graph)["host-droplet"].id
    assert "size" in droplets(bigger)["host-turn-droplet"].replace_on_changes
    assert changed_steps(turn_graph, bigger) == set()  # the same address here: nothing else changes


def test_the_turn_droplets_host_key_is_pinned_by_name_and_inputs(turn_graph: Recording) -> None:
    """A renamed or changed key would be a new key, so new user data: a new TURN droplet (secret identity,
    as tests/unit/test_secret_identity.py pins the others)."""
    (key,) = [r for r in turn_graph.of_type("tls:index/privateKey:PrivateKey") if r.name == "host-turn-host-key"]
    assert key.inputs["algorithm"] == "ED25519"
    assert key.inputs == turn_graph.named("host-host-key").inputs  # made exactly like the main droplet's
    assert key.parent == turn_graph.named("host").urn
