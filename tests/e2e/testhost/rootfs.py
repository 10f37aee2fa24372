"""Build (once) and unpack a Debian 12 minbase root filesystem for the test host.

debootstrap takes over a minute; the result is cached as a .tar.zst so later boots unpack it in
seconds. The cache key covers everything that goes into the image, so a change rebuilds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import hostconfig
from ._proc import run

RELEASE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "openssh-server", "dbus", "iproute2", "python3",
    "python3-venv", "ca-certificates", "curl", "sudo",
)
# As on DigitalOcean's Debian images: cloud-init (reads the droplet's user data at first boot) and
# unattended-upgrades. Installed with apt after debootstrap, whose resolver cannot follow their
# dependencies.
IMAGE_PACKAGES = ("cloud-init", "unattended-upgrades", "locales")
HOST_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "zstd": "zstd"}
CACHE_DIR = Path("/var/cache/matrix-stack-e2e")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


def ensure_host_tools(extra: dict[str, str] | None = None) -> None:
    """Install the host tools that are missing; --no-install-recommends keeps the host's nsswitch intact."""
    wanted = {**HOST_TOOLS, **(extra or {})}
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(install, timeout=600, check=False, env=env).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=300, env=env)
        run(install, timeout=600, env=env)


def _host_cas() -> list[Path]:
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def cache_key() -> str:
    """A short hash of what the image is made of: release, packages, sources, the host's CAs."""
    digest = hashlib.sha256()
    digest.update(repr((RELEASE, PACKAGES, IMAGE_PACKAGES, "locale-gen en_US.UTF-8",
                        hostconfig.debian_sources(RELEASE))).encode())
    for ca in _host_cas():
        digest.update(ca.name.encode() + ca.read_bytes())
    return digest.hexdigest()[:12]


def _guest_sources() -> str:
    stanzas = []
    for source in hostconfig.debian_sources(RELEASE):
        stanzas.append(
            f"Types: deb\nURIs: {source.uri}\nSuites: {' '.join(source.suites)}\n"
            f"Components: {' '.join(source.components) or 'main'}\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    return "\n".join(stanzas)


def _install_image_packages(root: Path) -> None:
    """apt inside the new root (services are not started: policy-rc.d), then its lists are dropped."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["chroot", str(root), "apt-get", "-q", "update"], timeout=600, env=env)
        run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *IMAGE_PACKAGES],
            timeout=1200, env=env)
    finally:
        policy.unlink(missing_ok=True)
    # A droplet's image has the en_US.UTF-8 locale that cloud-init's locale module sets.
    (root / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
    run(["chroot", str(root), "locale-gen"], timeout=300, env=env)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def _configure_generic(root: Path) -> None:
    """What every guest shares: the host's apt sources and extra CAs, no machine id, no DNS."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(_guest_sources())
    _install_image_packages(root)
    dest = root / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    for ca in _host_cas():
        shutil.copy(ca, dest / ca.name)
    run(["chroot", str(root), "update-ca-certificates"], timeout=120)
    (root / "etc/machine-id").write_text("")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    # No name server is reachable from the guest: fail lookups fast instead of timing out.
    (root / "etc/resolv.conf").write_text("# no DNS in the e2e test host\noptions timeout:1 attempts:1\n")
    run(["chroot", str(root), "apt-get", "clean"], timeout=60)


def _build(tarball: Path) -> None:
    build = CACHE_DIR / f"build-{tarball.stem}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(mode=0o755, parents=True)
    try:
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", RELEASE,
             str(build), hostconfig.debian_mirror(RELEASE)],
            timeout=1200,
        )
        _configure_generic(build)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(build), "--numeric-owner", "--xattrs", "-I", "zstd -T0 -3",
             "-cf", str(partial), "."], timeout=600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def cached_rootfs() -> Path:
    """The cached image, built first if missing (one builder at a time across processes)."""
    ensure_host_tools()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debian-{RELEASE}-{cache_key()}.tar.zst"
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build(tarball)
    return tarball


def unpack(dest: Path) -> None:
    """Unpack a fresh copy of the image into `dest`; its top dir must be 0755 or dbus/logind hang."""
    tarball = cached_rootfs()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(mode=0o755, parents=True)
    os.chmod(dest, 0o755)
    subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "-I", "zstd", "-xpf", str(tarball)],
        check=True, timeout=300, capture_output=True,
    )
    os.chmod(dest, 0o755)
