"""Build (once) and unpack a Debian minbase root filesystem (13 by default, or 12) for the test host.

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

from components.platform import PLATFORMS, platform_of

from . import hostconfig
from ._proc import run

# The guest's Debian release: what a droplet of the image runs (the e2e suite's default follows
# the program's default image; MATRIX_STACK_E2E_RELEASE=bookworm runs it on Debian 12).
DEFAULT_RELEASE = os.environ.get("MATRIX_STACK_E2E_RELEASE", "trixie")
if DEFAULT_RELEASE not in {p.codename for p in PLATFORMS}:
    raise ValueError(f"MATRIX_STACK_E2E_RELEASE={DEFAULT_RELEASE}: use one of {sorted(p.codename for p in PLATFORMS)}")
DEFAULT_PLATFORM = next(p for p in PLATFORMS if p.codename == DEFAULT_RELEASE)
DEFAULT_IMAGE = f"{DEFAULT_PLATFORM.image_prefix}-x64"  # the droplet image of the default test hosts
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


def release_of(image: str) -> str:
    """The Debian codename of a droplet image slug (debian-13-x64 -> trixie)."""
    platform = platform_of(image)
    if platform is None:
        raise ValueError(f"no test host release for the droplet image {image!r}")
    return platform.codename


def cache_key(release: str) -> str:
    """A short hash of what the image is made of: release, packages, sources, the host's CAs."""
    digest = hashlib.sha256()
    digest.update(repr((release, PACKAGES, IMAGE_PACKAGES, "locale-gen en_US.UTF-8",
                        hostconfig.debian_sources(release))).encode())
    for ca in _host_cas():
        digest.update(ca.name.encode() + ca.read_bytes())
    return digest.hexdigest()[:12]


def _guest_sources(release: str) -> str:
    stanzas = []
    for source in hostconfig.debian_sources(release):
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


def _configure_generic(root: Path, release: str) -> None:
    """What every guest shares: the host's apt sources and extra CAs, no machine id, no DNS."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(_guest_sources(release))
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


def _build(tarball: Path, release: str) -> None:
    build = CACHE_DIR / f"build-{tarball.stem}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(mode=0o755, parents=True)
    try:
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", release,
             str(build), hostconfig.debian_mirror(release)],
            timeout=1200,
        )
        _configure_generic(build, release)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(build), "--numeric-owner", "--xattrs", "-I", "zstd -T0 -3",
             "-cf", str(partial), "."], timeout=600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def cached_rootfs(release: str = DEFAULT_RELEASE) -> Path:
    """The cached image, built first if missing (one builder at a time across processes)."""
    ensure_host_tools()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debian-{release}-{cache_key(release)}.tar.zst"
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build(tarball, release)
    return tarball


def unpack(dest: Path, release: str = DEFAULT_RELEASE) -> None:
    """Unpack a fresh copy of the image into `dest`; its top dir must be 0755 or dbus/logind hang."""
    tarball = cached_rootfs(release)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(mode=0o755, parents=True)
    os.chmod(dest, 0o755)
    subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "-I", "zstd", "-xpf", str(tarball)],
        check=True, timeout=300, capture_output=True,
    )
    os.chmod(dest, 0o755)
