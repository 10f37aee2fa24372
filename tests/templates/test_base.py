"""Base step: root's keys and a host firewall that mirrors the cloud firewall rule for rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


def _apt_config(tmp_path: Path, files: dict[str, str]) -> dict[str, str]:
    """What apt itself reads from the step's apt.conf.d files (its own parser), as key -> value."""
    for path in (base.AUTO_UPGRADES, base.UPGRADES_REBOOT):
        (tmp_path / Path(path).name).write_text(files[path])
    conf = tmp_path / "apt.conf"
    conf.write_text("".join(f'#include "{tmp_path / Path(p).name}";\n' for p in (base.AUTO_UPGRADES, base.UPGRADES_REBOOT)))
    dumped = subprocess.run(["apt-config", "-c", str(conf), "dump", "--format", "%f=%v%n"], capture_output=True,
                            text=True, env={"APT_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
    assert dumped.returncode == 0, dumped.stderr
    return dict(line.split("=", 1) for line in dumped.stdout.splitlines() if "=" in line)


def test_unattended_upgrades_run_daily_and_reboot_only_in_the_window_set(tmp_path: Path) -> None:
    """Issue 26: the daily run is the step's file (not written only when missing), and a kernel or libc
    update reboots the droplet at automaticRebootTime (UTC), or never when it is not set."""
    never = _apt_config(tmp_path, files_of({}))
    assert never["APT::Periodic::Update-Package-Lists"] == "1" and never["APT::Periodic::Unattended-Upgrade"] == "1"
    assert never["Unattended-Upgrade::Automatic-Reboot"] == "false"
    assert "Unattended-Upgrade::Automatic-Reboot-Time" not in never
    window = _apt_config(tmp_path, files_of({"automaticRebootTime": "04:30"}))
    assert window["Unattended-Upgrade::Automatic-Reboot"] == "true"
    assert window["Unattended-Upgrade::Automatic-Reboot-Time"] == "04:30"
    assert window["Unattended-Upgrade::Automatic-Reboot-WithUsers"] == "true"
    (packages,) = [s for s in base.steps(make_context()) if s.name == "base-packages"]
    assert {f.path: (f.mode, f.owner) for f in packages.files} == {base.AUTO_UPGRADES: ("0644", "root"),
                                                                    base.UPGRADES_REBOOT: ("0644", "root")}
    # Debian's own 50unattended-upgrades sorts before it, so these values win.
    assert Path(base.UPGRADES_REBOOT).name > "50unattended-upgrades"
