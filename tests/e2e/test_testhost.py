"""Smoke test of the local e2e test host: boot, SSH, registries via proxy, volume, reboot, certbot.

Needs root and takes about a minute with a cached rootfs (first run builds it: ~80 s more).
Run: sudo python -m pytest -m e2e tests/e2e/test_testhost.py -v
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.testhost import TestHost, machine, network, volume

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the e2e test host needs root"),
]

INDEX = 7
DOMAIN = "example.test"


def _ok(host: TestHost, cmd: str, timeout: float = 600) -> str:
    proc = host.ssh(cmd, timeout=timeout)
    assert proc.returncode == 0, f"{cmd!r} -> {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "deploy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def host(keypair: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    image = tmp_path_factory.mktemp("volume") / "vol.img"
    # A blank volume (created without a filesystem): this test writes raw sectors to it.
    th = TestHost(INDEX, Path(f"{keypair}.pub").read_text(), "smoke", DOMAIN, image,
                  identity_file=keypair, outsider=True, volume_filesystem=None)
    try:
        th.boot()
        yield th
    finally:
        th.destroy(keep_volume=False)


def test_ssh_and_systemd(host: TestHost) -> None:
    assert _ok(host, "systemctl is-system-running").strip() in ("running", "degraded")
    assert _ok(host, "id -u").strip() == "0"


def _first_boot_apt_done(host: TestHost) -> None:
    """Wait (bounded) for the droplet model's first-boot apt activity, which holds apt's locks."""
    host.wait_first_boot_apt(timeout=180)


def test_apt_through_proxy(host: TestHost) -> None:
    _first_boot_apt_done(host)
    _ok(host, "apt-get update -q", timeout=300)


def test_pip_through_proxy(host: TestHost) -> None:
    _ok(host, "python3 -m venv /tmp/venv && cd /tmp && /tmp/venv/bin/pip download --no-deps six",
        timeout=300)


def test_proxy_refuses_other_hosts(host: TestHost) -> None:
    out = host.ssh("curl -sS -m 10 -o /dev/null -w '%{http_code}' https://example.com/", timeout=60)
    assert out.returncode != 0
    assert host.proxy is not None and "example.com:443" in host.proxy.denied


MARKER = "matrix-stack-e2e-volume-marker"


def test_volume_device(host: TestHost) -> None:
    dev = host.volume_guest_path
    _ok(host, f"test -b {dev}")
    assert _ok(host, f"blockdev --getsize64 {dev}").strip() == str(volume.DEFAULT_SIZE)
    _ok(host, f"printf {MARKER} | dd of={dev} bs=512 seek=8 conv=fsync status=none")


def test_outsider_reaches_guest(host: TestHost) -> None:
    probe = (f"import socket; s = socket.create_connection(('{host.address}', 22), timeout=5); "
             "print(s.getsockname()[0])")
    out = host.outsider_run(["python3", "-c", probe])
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == host.outsider_address


def test_certbot_dns_cloudflare(host: TestHost, tmp_path: Path) -> None:
    _first_boot_apt_done(host)
    _ok(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
              "certbot python3-certbot-dns-cloudflare", timeout=600)
    _ok(host, "install -m 600 /dev/null /root/cloudflare.ini && "
              "echo 'dns_cloudflare_api_token = dummy-token' > /root/cloudflare.ini")
    _ok(host, "certbot certonly --dns-cloudflare --dns-cloudflare-credentials /root/cloudflare.ini "
              f"--dns-cloudflare-propagation-seconds 2 --server {host.acme_directory} "
              f"-d {DOMAIN} -d matrix.{DOMAIN} --agree-tos -m ops@{DOMAIN} --non-interactive "
              "--no-random-sleep-on-renew", timeout=300)
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_text(_ok(host, f"cat /etc/letsencrypt/live/{DOMAIN}/fullchain.pem"))
    leaf = tmp_path / "cert.pem"
    leaf.write_text(_ok(host, f"cat /etc/letsencrypt/live/{DOMAIN}/cert.pem"))
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(host.client_ca_file),
                             "-untrusted", str(fullchain), str(leaf)],
                            capture_output=True, check=False)
    assert verify.returncode == 0, verify.stderr.decode()
    sans = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(leaf)],
                          capture_output=True, check=True).stdout.decode()
    assert f"DNS:{DOMAIN}" in sans and f"DNS:matrix.{DOMAIN}" in sans
    assert host.cloudflare is not None and not host.cloudflare.records  # cleaned up after use
    env = _ok(host, "systemctl show -p Environment certbot.service")
    assert host.cloudflare_api_url in env and "REQUESTS_CA_BUNDLE" in env


def test_reboot_comes_back(host: TestHost) -> None:
    assert host.machine is not None
    boots = host.machine.boots
    host.reboot()
    assert host.machine.boots == boots + 1
    _ok(host, f"test -b {host.volume_guest_path} && test -d /etc/letsencrypt/live/{DOMAIN}")


def _assert_nothing_left(host: TestHost) -> None:
    assert not volume.devices_for(host.volume_image)
    assert not network.netns_exists(network.Addresses(INDEX).netns)
    assert not network.netns_exists(network.Addresses(INDEX).outsider_netns)
    assert INDEX not in network.leftovers()
    assert not machine.leftover_pids(network.Addresses(INDEX).netns)
    assert not Path(f"/sys/class/net/{network.Addresses(INDEX).host_if}").exists()
    assert not host.root.exists()


def test_teardown_leaves_nothing(host: TestHost) -> None:
    host.destroy(keep_volume=True)
    assert host.volume_image.exists()
    _assert_nothing_left(host)


def test_fresh_host_sees_volume_data(host: TestHost, keypair: Path) -> None:
    with TestHost(INDEX, Path(f"{keypair}.pub").read_text(), "smoke", DOMAIN, host.volume_image,
                  identity_file=keypair) as fresh:
        assert _ok(fresh, f"dd if={fresh.volume_guest_path} bs=512 skip=8 count=1 status=none "
                          f"| head -c {len(MARKER)}") == MARKER
        assert fresh.ssh(f"test -d /etc/letsencrypt/live/{DOMAIN}").returncode != 0  # fresh rootfs
    _assert_nothing_left(fresh)
