"""Files written into the guest's root filesystem before it boots.

Paths inside the guest (documented for tests and the program's scripts):
  /etc/environment                      proxy vars, CLOUDFLARE_API_URL, REQUESTS_CA_BUNDLE (pam_env)
  /etc/systemd/system/certbot.service.d/e2e.conf   the same two for the packaged renewal timer
  /etc/e2e/requests-ca-bundle.pem       system CAs + pebble's TLS CA (ACME directory over https)
  /etc/e2e/pebble-tls-ca.pem            the CA of pebble's own TLS certificate
  /etc/e2e/pebble-root.pem              pebble's issuing root (verifies certificates it issued)
  /etc/apt/apt.conf.d/90e2e-proxy, /etc/pip.conf   registry access through the host's proxy
  /etc/resolv.conf                      the DNS stand-in on the host side (the zones' names, as published)
  /usr/local/share/ca-certificates/matrix-stack-e2e-edge.crt   the edge stand-in's CA, trusted like
                                        Cloudflare's public certificates (also in the system bundle)
  /usr/local/share/ca-certificates/matrix-stack-e2e-mail.crt   the mail relay's CA, trusted like a mail
                                        provider's public certificate (also in the system bundle)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import hostconfig

BUNDLE = "/etc/e2e/requests-ca-bundle.pem"


@dataclass(frozen=True)
class GuestSettings:
    """Everything the guest needs to know about its test surroundings."""

    hostname: str
    guest_address: str
    host_address: str
    proxy_url: str
    cloudflare_api_url: str
    domain: str
    authorized_keys: tuple[str, ...]
    pebble_tls_ca: bytes
    pebble_root: bytes
    edge_ca: bytes = b""
    mail_ca: bytes = b""  # the mail relay's CA (smtp.SmtpRelay)
    direct: tuple[str, ...] = ()  # more addresses reached without the proxy (another host's ACME, Cloudflare)


def write_file(root: Path, path: str, text: str | bytes, mode: int = 0o644) -> None:
    """Write `path` (absolute, inside the guest) under the unpacked root filesystem `root`."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    target.write_bytes(text)
    os.chmod(target, mode)


def no_proxy(s: GuestSettings) -> str:
    """Destinations that must not go through the registry proxy (ACME, Cloudflare, the guest itself)."""
    return ",".join(["localhost", "127.0.0.1", "::1", s.host_address, s.guest_address, *s.direct,
                     s.domain, f".{s.domain}"])


def write(root: Path, s: GuestSettings) -> None:
    """Write the per-host configuration into the unpacked root filesystem `root`."""
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    write_file(root, "/root/.ssh/authorized_keys",
           "".join(k.strip() + "\n" for k in s.authorized_keys), 0o600)

    write_file(root, "/etc/hostname", s.hostname + "\n")
    # A debootstrap'd rootfs has no /etc/hosts; a Debian droplet's has localhost in it.
    default_hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts = (root / "etc/hosts").read_text() if (root / "etc/hosts").exists() else default_hosts
    write_file(root, "/etc/hosts", hosts + f"127.0.1.1\t{s.hostname}\n")

    write_file(root, "/etc/apt/apt.conf.d/90e2e-proxy",
           f'Acquire::http::Proxy "{s.proxy_url}";\nAcquire::https::Proxy "{s.proxy_url}";\n'
           'Acquire::http::Pipeline-Depth "0";\n')
    pip = f"[global]\nproxy = {s.proxy_url}\ncert = /etc/ssl/certs/ca-certificates.crt\n"
    pip += f"index-url = {hostconfig.pip_index_url()}\n"
    extra = hostconfig.pip_extra_urls()
    if extra:
        pip += "extra-index-url = " + " ".join(extra) + "\n"
    write_file(root, "/etc/pip.conf", pip)

    write_file(root, "/etc/e2e/pebble-tls-ca.pem", s.pebble_tls_ca)
    write_file(root, "/etc/e2e/pebble-root.pem", s.pebble_root)
    system_cas = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    # Like Cloudflare's certificates and a mail provider's, the edge's and the mail relay's are publicly
    # trusted: in the system store, where curl, Synapse's federation client and its SMTP client look,
    # kept when update-ca-certificates runs.
    for name, ca in (("edge", s.edge_ca), ("mail", s.mail_ca)):
        if ca:
            write_file(root, f"/usr/local/share/ca-certificates/matrix-stack-e2e-{name}.crt", ca)
            system_cas = system_cas.rstrip(b"\n") + b"\n" + ca
            write_file(root, "/etc/ssl/certs/ca-certificates.crt", system_cas)
    write_file(root, BUNDLE, system_cas + b"\n" + s.pebble_tls_ca)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    write_file(root, "/etc/resolv.conf", f"nameserver {s.host_address}\noptions timeout:2 attempts:2\n")

    env = {
        "http_proxy": s.proxy_url, "https_proxy": s.proxy_url,
        "HTTP_PROXY": s.proxy_url, "HTTPS_PROXY": s.proxy_url,
        "no_proxy": no_proxy(s), "NO_PROXY": no_proxy(s),
        "CLOUDFLARE_API_URL": s.cloudflare_api_url, "REQUESTS_CA_BUNDLE": BUNDLE,
    }
    write_file(root, "/etc/environment", "".join(f"{k}={v}\n" for k, v in env.items()))
    write_file(root, "/etc/systemd/system/certbot.service.d/e2e.conf",
           "[Service]\n"
           f"Environment=CLOUDFLARE_API_URL={s.cloudflare_api_url}\n"
           f"Environment=REQUESTS_CA_BUNDLE={BUNDLE}\n")
