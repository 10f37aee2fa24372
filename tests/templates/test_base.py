"""Base step: root's keys and a host firewall that mirrors the cloud firewall rule for rule."""

from __future__ import annotations

from components.cloud.firewall import inbound_rules
from components.services import base
from tests.templates.conftest import make_context


def files_of(config: dict[str, str]) -> dict[str, str]:
    return {f.path: str(f.content) for spec in base.steps(make_context(**config)) for f in spec.files}


def ufw_lines(config: dict[str, str]) -> set[tuple[str, str, str]]:
    text = files_of(config)["/etc/matrix-stack/ufw.rules"]
    return {tuple(line.split()) for line in text.splitlines() if line and not line.startswith("#")}  # type: ignore[misc]


def test_ufw_rules_mirror_the_cloud_firewall() -> None:
    ctx = make_context()
    expected = set()
    for rule in inbound_rules(ctx.settings, [*ctx.cloudflare_ipv4, *ctx.cloudflare_ipv6]):  # type: ignore[misc]
        for source in rule.sources:  # type: ignore[union-attr]
            source = "any" if source in ("0.0.0.0/0", "::/0") else source
            expected.add((rule.protocol, rule.ports.replace("-", ":"), source))
    assert ufw_lines({}) == expected
    assert ("udp", "49152:49251", "any") in expected
    assert ("tcp", "443", "173.245.48.0/20") in expected
    assert not any(port == "443" and src == "any" for _, port, src in expected)


def test_ufw_rules_follow_relay_range_and_ssh_cidrs() -> None:
    lines = ufw_lines({"turnRelayPorts": "50000-50010", "sshAllowedCidrs": '["198.51.100.0/24"]'})
    assert ("udp", "50000:50010", "any") in lines
    assert {src for _, port, src in lines if port == "22"} == {"198.51.100.0/24"}


def test_authorized_keys_hold_the_deploy_key_and_the_users_keys() -> None:
    user_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserOne a@b"
    keys = files_of({"sshPublicKeys": f'["{user_key}"]'})["/root/.ssh/authorized_keys"]
    lines = [line for line in keys.splitlines() if line and not line.startswith("#")]
    assert lines == [str(make_context().deploy_public_key), user_key]
