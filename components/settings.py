"""The config contract: every stack setting typed, defaulted and validated in one place.

A bad value must stop `pulumi up` before any resource is registered, with one line that names
the key, the bad value and what is allowed. Everything the rest of the program needs that can be
derived from the settings (hostnames, memory-based tuning) is derived here, once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from components import workers
from components.platform import DEFAULT_IMAGE, PLATFORMS, Platform, platform_of
from components.synapse_lock import lock_path, locked_versions

PROJECT = "matrix-stack"

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
ELEMENT_GITHUB_URL = (
    "https://github.com/element-hq/element-web/releases/download/v{version}/element-v{version}.tar.gz"
)

# The single source of defaults. Pulumi.yaml repeats them for `pulumi config` users; a test keeps
# the two equal.
DEFAULTS: dict[str, Any] = {
    "region": "nyc3",
    "dropletSize": "s-1vcpu-1gb",
    "dropletImage": DEFAULT_IMAGE,
    "volumeSizeGb": 10,
    "matrixSubdomain": "matrix",
    "chatSubdomain": "chat",
    "turnSubdomain": "turn",
    "acmeServer": LETSENCRYPT_PRODUCTION,
    "synapseVersion": "1.163.2",
    # Element Web 1.12.30 (2026-09-29), the newest final release found: a copy of element-web's
    # releases page taken 2026-10-10 (v1.12.30 final, v1.12.31 only as rc.1) and deployments
    # pinning ghcr.io/element-hq/element-web:v1.12.30 by digest; v1.12.28 is confirmed by Element's
    # own element-hq/ess-helm #1582. Integrity comes from Element's release signature (sha256 optional).
    "elementVersion": "1.12.30",
    "elementSha256": "",
    "elementDownloadUrl": ELEMENT_GITHUB_URL,
    # Empty: Element's own release key, pinned in templates/element/ (see services/element.py).
    "elementSigningKey": "",
    "elementSigningFingerprint": "",
    "maxUploadSizeMb": 50,
    "enableRegistration": False,
    "federation": "open",
    "federationAllowlist": [],
    "turnRelayPorts": "49152-49251",
    # coturn on a droplet of its own (README "A TURN droplet"): TURN exposes its host's address, as
    # Cloudflare does not proxy it, so this keeps the main droplet's address out of every call.
    "turnDroplet": False,
    "turnDropletSize": "s-1vcpu-512mb-10gb",
    # Synapse's database: "local" (PostgreSQL on the droplet, data on the volume) or "managed" (a
    # DigitalOcean Managed PostgreSQL cluster of databaseSize; README "Managed PostgreSQL").
    "database": "local",
    "databaseSize": "db-s-1vcpu-1gb",
    # Synapse's media: "local" (on the volume) or "spaces" (a DigitalOcean Spaces bucket the stack
    # creates, through synapse-s3-storage-provider; the daily backup is copied there too; README
    # "Media and backups on Spaces"). Local copies unused for mediaCacheDays are removed.
    "mediaStorage": "local",
    "mediaCacheDays": 14,
    # Empty: the droplet's region (it must have Spaces), else a Spaces region.
    "spacesRegion": "",
    # Empty: matrix-<domain with dashes>; bucket names are global, so a taken one needs a new name.
    "mediaBucket": "",
    # Empty: <media bucket>-backups (cut to 63). The backups' own bucket (mediaStorage: spaces): versioned,
    # with its own key that Synapse never holds; a Spaces key's grant is a whole bucket, never a prefix.
    "backupBucket": "",
    # Synapse as a main process plus workers (sync, client/federation, media, federation sender) with
    # Redis, routed by nginx (components/workers.py; README "Synapse workers"). Needs a droplet of at
    # least 2 vCPUs and 4 GB.
    "synapseWorkers": False,
    "adminUser": "admin",
    "sshPublicKeys": [],
    "enableUrlPreviews": False,
    "enableJemalloc": True,
    "backupKeepDays": 7,
    # Unattended-upgrades installs security updates every day; a new kernel or libc takes effect only at a
    # reboot. "HH:MM" (UTC): the droplet reboots at that time when an update needs it. Empty: never (the
    # program warns, and the self-check says when a reboot is pending).
    "automaticRebootTime": "",
    # Empty: the stack creates its own data volume. A name: adopt that kept volume (README
    # "Adopting a kept volume"); components/cloud/adoption.py looks it up and checks it.
    "adoptVolume": "",
    # Empty: the Cloudflare zone is found by looking `domain` up, then each parent name
    # (components/cloud/zone.py); set it to pin the zone, e.g. example.com for domain chat.example.com.
    "cloudflareZone": "",
    # The user's website on `domain` serves /.well-known/matrix/server and /client itself (docs/cloudflare.md),
    # so the stack adds no delegation redirect there; needed when Cloudflare does not proxy that website.
    "wellKnownOnWebsite": False,
    # CIDRs Synapse may reach although its blocklist covers them (private and reserved ranges): a
    # homeserver, push gateway or identity server on the operator's own network. Empty: none.
    "outboundIpAllowlist": [],
    # Disk guardrails for years on a small volume (README "Disk space"). 0 = kept forever: local
    # media are the users' own files, the only copy there is.
    "localMediaRetentionDays": 0,
    # Remote media are copies of other servers' files, fetched again on demand.
    "remoteMediaRetentionDays": 14,
    # Joining a remote room with more current state events than this is refused (Synapse's
    # limit_remote_rooms: complexity = state events / 500); the admin may still join. 0 = no limit.
    "remoteRoomMaxStateEvents": 500,
    # Devices unused for this many days are logged out and deleted by Synapse. 0 = never.
    "staleDeviceDays": 0,
}

REQUIRED = ("domain", "sshAllowedCidrs", "letsencryptEmail", "certbotCloudflareToken")
SECRET_KEYS = ("certbotCloudflareToken",)
ALL_KEYS = REQUIRED + tuple(DEFAULTS)

# The oldest Element Web that works with the Synapse we install: 1.11.70 is the first to fetch media
# through the authenticated endpoints Synapse serves new media from (element-web #27558), 1.11.109
# the first to read and join room version 12 rooms, Synapse's default (element-web #30452, #30526).
ELEMENT_MIN_VERSION = (1, 11, 109)
MAX_UPLOAD_MB_CLOUDFLARE = 100  # Cloudflare Free/Pro refuse larger request bodies with 413.
RELAY_PORT_MIN, RELAY_PORT_MAX = 49152, 65535
RELAY_RANGE_MAX_WIDTH = 2000  # ufw/firewall rules stay readable; coturn needs ~4 ports per call.

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+[a-z][a-z0-9-]{{0,62}}(?<!-)$")
_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:rc\d+)?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
_PUBLIC_KEY_BLOCK = ("-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----")
_LOCALPART_RE = re.compile(r"^[a-z0-9._=/-]{1,64}$")
_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) "
    r"[A-Za-z0-9+/]+={0,3}( .*)?$"
)
# DigitalOcean volume names: lower-case letters, digits and dashes, a letter first, at most 64.
_VOLUME_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_MEMORY_RE = re.compile(r"-(\d+)(gb|mb)(?:-|$)")
_VCPUS_RE = re.compile(r"-(\d+)vcpu-")
_DATABASE_SIZE_RE = re.compile(r"^db-[a-z0-9-]*?(\d+)gb$")
# DigitalOcean Managed PostgreSQL allows 25 connections per GiB of the node's memory, 3 of them
# reserved for its own maintenance (DigitalOcean's PostgreSQL limits and connection-pool docs: the
# 1 GiB size offers 22).
MANAGED_CONNECTIONS_PER_GIB = 25
# Regions with Spaces Standard Storage (DigitalOcean's Spaces availability page, March 2026).
SPACES_REGIONS = ("nyc3", "ams3", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1")
# S3 bucket names: 3-63 lower-case letters, digits and dashes, a letter or digit at both ends.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MANAGED_RESERVED_CONNECTIONS = 3
# Connections the droplet's tools may hold next to Synapse's pool: the backup's pg_dump, the weekly
# VACUUM, the self-check's probe (and, once, the move of the data).
TOOL_CONNECTIONS = 3
SYNAPSE_POOL_MAX = 10  # Synapse's cp_max on the local database
SYNAPSE_POOL_MIN = 5


class SettingsError(ValueError):
    """A config value is invalid; the message is the one line the user sees."""


def invalid(key: str, value: Any, allowed: str) -> SettingsError:
    """The one-line error for a bad value of `key`: what is allowed and how to fix it."""
    shown = value if isinstance(value, (int, bool)) else repr(value)
    return SettingsError(
        f"config {PROJECT}:{key}={shown} is invalid: {allowed} "
        f"(fix: pulumi config set {key} <value>)"
    )


@dataclass(frozen=True)
class Tuning:
    """Memory-derived sizes, so a 1 GB droplet is not tuned like a 16 GB one."""

    memory_mb: int
    pg_shared_buffers_mb: int
    pg_effective_cache_size_mb: int
    pg_work_mem_mb: int
    pg_maintenance_work_mem_mb: int
    pg_max_connections: int
    synapse_cache_max_mb: int
    synapse_cache_target_mb: int
    presence_enabled: bool


def tuning_for(memory_mb: int, synapse_processes: int = 1) -> Tuning:
    """pgtune-style Postgres sizes and Synapse cache autotuning (RAM/8 max, RAM/16 target, shared
    evenly by the Synapse processes: with workers each process has its own caches)."""
    cache_budget_mb = memory_mb // synapse_processes
    return Tuning(
        memory_mb=memory_mb,
        pg_shared_buffers_mb=max(32, memory_mb // 8),
        pg_effective_cache_size_mb=max(64, memory_mb // 2),
        pg_work_mem_mb=max(2, memory_mb // 256),
        pg_maintenance_work_mem_mb=max(16, memory_mb // 16),
        pg_max_connections=50 if memory_mb <= 2048 else 100,
        synapse_cache_max_mb=min(2048, max(64, cache_budget_mb // 8)),
        synapse_cache_target_mb=min(1024, max(32, cache_budget_mb // 16)),
        presence_enabled=memory_mb >= 2048,
    )


def memory_mb_of(size_slug: str) -> int:
    """Memory of a DigitalOcean size slug such as `s-1vcpu-1gb` or `s-1vcpu-512mb-10gb`."""
    match = _MEMORY_RE.search(size_slug)
    if not match:
        raise invalid("dropletSize", size_slug, "a DigitalOcean size slug naming its memory, e.g. s-1vcpu-1gb")
    amount, unit = int(match.group(1)), match.group(2)
    return amount * 1024 if unit == "gb" else amount


def vcpus_of(size_slug: str) -> int:
    """vCPUs of a DigitalOcean size slug such as `s-2vcpu-4gb`; 0 when the slug does not name them."""
    match = _VCPUS_RE.search(size_slug)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class Settings:
    """Validated stack settings plus the values derived from them."""

    stack: str
    domain: str
    ssh_allowed_cidrs: tuple[str, ...]
    letsencrypt_email: str
    region: str
    droplet_size: str
    droplet_image: str
    volume_size_gb: int
    matrix_subdomain: str
    chat_subdomain: str
    turn_subdomain: str
    acme_server: str
    synapse_version: str
    element_version: str
    element_sha256: str  # "" = not checked (the release signature always is)
    element_download_url: str
    element_signing_key: str  # "" = Element's pinned release key
    element_signing_fingerprint: str  # "" = Element's pinned release key fingerprint
    max_upload_size_mb: int
    enable_registration: bool
    federation: str
    federation_allowlist: tuple[str, ...]
    turn_relay_ports: tuple[int, int]
    turn_droplet: bool  # coturn on its own droplet; the main droplet opens no TURN port
    turn_droplet_size: str
    database: str  # "local" | "managed"
    database_size: str  # the managed cluster's size slug (used only when database is managed)
    media_storage: str  # "local" | "spaces"
    media_cache_days: int  # spaces: local copies unused this long are removed (they are in the bucket)
    spaces_region: str  # "" = region (used only when media_storage is spaces)
    media_bucket: str  # "" = derived from domain (used only when media_storage is spaces)
    backup_bucket: str  # "" = derived from the media bucket's name (used only when media_storage is spaces)
    synapse_workers: bool  # Synapse workers with Redis (components/workers.py)
    admin_user: str
    ssh_public_keys: tuple[str, ...]
    enable_url_previews: bool
    enable_jemalloc: bool
    backup_keep_days: int
    automatic_reboot_time: str  # "" = never; "HH:MM" UTC
    adopt_volume: str  # "" = the stack creates its own volume
    cloudflare_zone: str  # "" = looked up from domain upwards
    well_known_on_website: bool  # the website on domain serves the well-known files (no delegation redirect)
    outbound_ip_allowlist: tuple[str, ...]
    local_media_retention_days: int  # 0 = forever
    remote_media_retention_days: int  # 0 = forever
    remote_room_max_state_events: int  # 0 = no limit
    stale_device_days: int  # 0 = never
    tuning: Tuning

    @property
    def platform(self) -> Platform:
        """The Debian release of dropletImage: its Python (the Synapse lock) and its PostgreSQL."""
        platform = platform_of(self.droplet_image)
        assert platform is not None  # validated in load()
        return platform

    @property
    def matrix_host(self) -> str:
        return f"{self.matrix_subdomain}.{self.domain}"

    @property
    def chat_host(self) -> str:
        return f"{self.chat_subdomain}.{self.domain}"

    @property
    def turn_host(self) -> str:
        return f"{self.turn_subdomain}.{self.domain}"

    @property
    def hostnames(self) -> tuple[str, ...]:
        """Every name the certificate covers; the apex first (certbot names the lineage by it)."""
        return (self.domain, self.matrix_host, self.chat_host, self.turn_host)

    @property
    def zone_candidates(self) -> tuple[str, ...]:
        """Where the Cloudflare zone may be: the pinned one, or domain and each parent (two labels at least)."""
        if self.cloudflare_zone:
            return (self.cloudflare_zone,)
        labels = self.domain.split(".")
        return tuple(".".join(labels[i:]) for i in range(len(labels) - 1))

    @property
    def homeserver_url(self) -> str:
        return f"https://{self.matrix_host}"

    @property
    def element_url(self) -> str:
        return f"https://{self.chat_host}"

    @property
    def admin_user_id(self) -> str:
        return f"@{self.admin_user}:{self.domain}"

    @property
    def resource_prefix(self) -> str:
        """Prefix for cloud resource names: unique per stack and domain, DNS-safe."""
        return f"matrix-{self.stack}-{self.domain.replace('.', '-')}"[:48].rstrip("-")

    @property
    def volume_name(self) -> str:
        """DigitalOcean volume name (the adopted one's, if any); the device appears as
        /dev/disk/by-id/scsi-0DO_Volume_<name>."""
        return self.adopt_volume or f"{self.resource_prefix}-data"[:64]

    @property
    def volume_device(self) -> str:
        return f"/dev/disk/by-id/scsi-0DO_Volume_{self.volume_name}"

    @property
    def element_tarball_url(self) -> str:
        return self.element_download_url.replace("{version}", self.element_version)

    @property
    def element_signature_url(self) -> str:
        """The detached signature sits next to the tarball, as on Element's release pages."""
        return f"{self.element_tarball_url}.asc"

    @property
    def managed_database(self) -> bool:
        return self.database == "managed"

    @property
    def database_connection_limit(self) -> int:
        """Connections the managed cluster grants its users: 25 per GiB, less the 3 it reserves."""
        match = _DATABASE_SIZE_RE.match(self.database_size)
        assert match is not None  # _database_size
        return int(match.group(1)) * MANAGED_CONNECTIONS_PER_GIB - MANAGED_RESERVED_CONNECTIONS

    @property
    def synapse_processes(self) -> int:
        """Synapse processes, each with its own connection pool and caches: 1, or 1 + the workers."""
        return workers.PROCESSES if self.synapse_workers else 1

    @property
    def synapse_pool_max(self) -> int:
        """Each Synapse process's connection pool (cp_max): what the database grants, less what the
        tools hold, shared by the processes.

        Local: 10 per process (PostgreSQL on the droplet allows tuning.pg_max_connections: 50, or 100
        from 4 GB, where workers need at most 5 x 10). Managed: min(10, (25 x GiB - 3 - 3) // processes);
        19 on the smallest size, 3 per process with the 5 processes of synapseWorkers.
        """
        if not self.managed_database:
            return SYNAPSE_POOL_MAX
        return min(SYNAPSE_POOL_MAX, (self.database_connection_limit - TOOL_CONNECTIONS) // self.synapse_processes)

    @property
    def synapse_pool_min(self) -> int:
        """cp_min: 5, never above cp_max."""
        return min(SYNAPSE_POOL_MIN, self.synapse_pool_max)

    @property
    def media_on_spaces(self) -> bool:
        return self.media_storage == "spaces"

    @property
    def spaces_bucket_region(self) -> str:
        return self.spaces_region or self.region

    @property
    def spaces_bucket_name(self) -> str:
        """mediaBucket, or matrix-<domain with dashes>, cut to 63 characters without a dash at the end."""
        if self.media_bucket:
            return self.media_bucket
        return ("matrix-" + self.domain.replace(".", "-"))[:63].rstrip("-")

    @property
    def spaces_backup_bucket_name(self) -> str:
        """backupBucket, or the media bucket's name with -backups, cut to 63 characters without a dash at
        the end (a name of 55 or more characters loses its end: set backupBucket then)."""
        if self.backup_bucket:
            return self.backup_bucket
        return (self.spaces_bucket_name[:55] + "-backups").rstrip("-")

    @property
    def relay_port_range(self) -> str:
        return f"{self.turn_relay_ports[0]}-{self.turn_relay_ports[1]}"


# ---------------------------------------------------------------------------------------------
# Per-key validators: each returns the normalised value or raises a one-line SettingsError.


def _domain(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200 or not _DOMAIN_RE.match(value):
        raise invalid(key, value, "a lower-case DNS name such as example.com (no scheme, no trailing dot)")
    return value


def _subdomain(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _SUBDOMAIN_RE.match(value):
        raise invalid(key, value, "one lower-case DNS label such as matrix (letters, digits, inner dashes)")
    return value


def _email(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL_RE.match(value):
        raise invalid(key, value, "an e-mail address such as ops@example.com")
    return value


def _slug(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _SLUG_RE.match(value):
        raise invalid(key, value, "a DigitalOcean slug such as nyc3 or s-1vcpu-1gb (lower-case, digits, dashes)")
    return value


def _droplet_size(key: str, value: Any) -> str:
    slug = _slug(key, value)
    if not _MEMORY_RE.search(slug):
        raise invalid(key, value, "a DigitalOcean size slug naming its memory, e.g. s-1vcpu-512mb-10gb")
    return slug


def _database(key: str, value: Any) -> str:
    if value not in ("local", "managed"):
        raise invalid(key, value, "local (PostgreSQL on the droplet) or managed (a DigitalOcean Managed PostgreSQL cluster)")
    return str(value)


def _media_storage(key: str, value: Any) -> str:
    if value not in ("local", "spaces"):
        raise invalid(key, value, "local (media on the data volume) or spaces (a DigitalOcean Spaces bucket)")
    return str(value)


def _optional_spaces_region(key: str, value: Any) -> str:
    if value != "" and value not in SPACES_REGIONS:
        raise invalid(key, value, f"a region with Spaces ({', '.join(SPACES_REGIONS)}), or empty for the droplet's region")
    return str(value)


def _optional_bucket(key: str, value: Any) -> str:
    if value != "" and not (isinstance(value, str) and _BUCKET_RE.match(value)):
        raise invalid(key, value, "a bucket name of 3-63 lower-case letters, digits and dashes (a letter or digit at "
                      "both ends), or empty for matrix-<domain>")
    return str(value)


def _database_size(key: str, value: Any) -> str:
    slug = _slug(key, value)
    match = _DATABASE_SIZE_RE.match(slug)
    if not match or int(match.group(1)) < 1:
        raise invalid(key, value, "a DigitalOcean database size slug ending in its memory, e.g. db-s-1vcpu-1gb")
    return slug


def _debian_image(key: str, value: Any) -> str:
    slug = _slug(key, value)
    if platform_of(slug) is None:
        wanted = " or ".join(f"{p.image_prefix}-x64" for p in reversed(PLATFORMS))
        raise invalid(key, slug, f"a Debian image the server layer targets: {wanted}")
    return slug


def _optional_volume_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not (value == "" or _VOLUME_NAME_RE.match(value)):
        raise invalid(key, value, "a DigitalOcean volume name (lower-case letters, digits, dashes, a letter "
                      "first, at most 64), e.g. the dataVolume output of the destroyed stack, or empty")
    return value


def _version(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _VERSION_RE.match(value):
        raise invalid(key, value, "a release version such as 1.2.3 (digits and dots, no leading v)")
    return value


def _locked_synapse_version(version: str, platform: Platform) -> None:
    """A version whose dependency lock for the image's Python is in the repository (components/synapse_lock.py)."""
    if not lock_path(version, platform.python).is_file():
        known = ", ".join(locked_versions(platform.python)) or "none"
        raise invalid("synapseVersion", version, f"a version with a dependency lock for Python {platform.python} "
                      f"in templates/synapse/locks/ (have: {known}); create it with: "
                      f"python -m components.synapse_lock {version}")


def _element_version(key: str, value: Any) -> str:
    version = _version(key, value)
    if tuple(int(part) for part in re.findall(r"\d+", version)[:3]) < ELEMENT_MIN_VERSION:
        oldest = ".".join(map(str, ELEMENT_MIN_VERSION))
        raise invalid(key, version, f"Element Web {oldest} or newer (older releases cannot show this Synapse's "
                    "authenticated media or join room version 12 rooms)")
    return version


def _optional_sha256(key: str, value: Any) -> str:
    if not isinstance(value, str) or not (value == "" or _SHA256_RE.match(value)):
        raise invalid(key, value, "64 lower-case hex characters (sha256sum of the release tarball), or empty")
    return value


def _optional_fingerprint(key: str, value: Any) -> str:
    """An OpenPGP v4 fingerprint as gpg prints it, spaces allowed; normalised to 40 upper-case hex."""
    normalised = value.replace(" ", "").upper() if isinstance(value, str) else None
    if normalised is None or not (normalised == "" or _FINGERPRINT_RE.match(normalised)):
        raise invalid(key, value, "the signing key's 40-hex-digit fingerprint as gpg --fingerprint prints it, or empty")
    return normalised


def _optional_public_key(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(key, value, "an ASCII-armored OpenPGP public key block, or empty")
    text = value.strip()
    begin, end = _PUBLIC_KEY_BLOCK
    if text and not (text.startswith(begin) and text.endswith(end) and "PRIVATE KEY" not in text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise invalid(key, shown, f"an ASCII-armored public key block from {begin} to {end}, or empty "
                    "(pulumi config set elementSigningKey -- \"$(cat key.asc)\")")
    return text + "\n" if text else ""


def _optional_domain(key: str, value: Any) -> str:
    return "" if value == "" else _domain(key, value)


def _acme_server(key: str, value: Any) -> str:
    url = _https_url(key, value)
    if url == LETSENCRYPT_STAGING:
        raise invalid(key, url, "a CA that Cloudflare trusts: the stack sets Full (strict) SSL for its names, "
                      "and Cloudflare answers 526 to a staging certificate; use the default (Let's Encrypt "
                      "production) and put test stacks under a subdomain (cloudflareZone)")
    return url


def _https_url(key: str, value: Any) -> str:
    """An https URL: what the droplet fetches from there (certificates, Element) must come over TLS that it
    verifies, never over plain HTTP where anyone on the path can answer."""
    if not isinstance(value, str) or not re.match(r"^https://[^\s'\"\\/]+(/[^\s'\"\\]*)?$", value):
        raise invalid(key, value, "an https:// URL without spaces or quotes (plain http is refused)")
    return value


def _download_url(key: str, value: Any) -> str:
    url = _https_url(key, value)
    if "{version}" not in url:
        raise invalid(key, url, "an https:// URL containing the placeholder {version}")
    return url


def _int_range(low: int, high: int, why: str = "") -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(key, value, f"a whole number from {low} to {high}{why}")
        return value

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(key, value, "true or false")
    return value


def _federation(key: str, value: Any) -> str:
    if value not in ("open", "allowlist", "off"):
        raise invalid(key, value, "one of open, allowlist, off")
    return str(value)


def _string_list(item: Callable[[str, Any], str]) -> Callable[[str, Any], tuple[str, ...]]:
    def check(key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise invalid(key, value, "a list, e.g. pulumi config set --path 'key[0]' <value>")
        return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))

    return check


def _cidr(key: str, value: Any) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True) if isinstance(value, str) else None
    except ValueError:
        net = None
    if net is None or "/" not in str(value):
        raise invalid(key, value, "a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (host bits zero)")
    return str(net)


# Never allowed past Synapse's blocklist: everything (a default route), this droplet itself (loopback,
# where Synapse's unproxied port and PostgreSQL listen) and link-local (the metadata service), in
# either IP version or written as an IPv4-mapped IPv6 range.
_NEVER_OUTBOUND = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8", "::1/128", "fe80::/10", "::/128",
    "::ffff:127.0.0.0/104", "::ffff:169.254.0.0/112", "::ffff:0.0.0.0/104"))


def _outbound_cidr(key: str, value: Any) -> str:
    cidr = _cidr(key, value)
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == 0 or any(net.overlaps(never) for never in _NEVER_OUTBOUND if never.version == net.version):
        raise invalid(key, value, "a CIDR of another server's network, not 0.0.0.0/0 or ::/0 and not overlapping "
                      "loopback (127.0.0.0/8, ::1) or link-local (169.254.0.0/16, fe80::/10: the metadata service)")
    return cidr


def _optional_time_of_day(key: str, value: Any) -> str:
    if not isinstance(value, str) or not (value == "" or re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", value)):
        raise invalid(key, value, "a time of day HH:MM (UTC, 24 hours) such as 04:00, or empty for never")
    return value


def _ssh_key(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _SSH_KEY_RE.match(value.strip()):
        raise invalid(key, value, "an OpenSSH public key line such as 'ssh-ed25519 AAAA... me@laptop'")
    return value.strip()


def _localpart(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _LOCALPART_RE.match(value):
        raise invalid(key, value, "a Matrix user name: lower-case letters, digits and ._=-/ only")
    return value


def _relay_ports(key: str, value: Any) -> tuple[int, int]:
    match = re.match(r"^(\d{5})-(\d{5})$", value) if isinstance(value, str) else None
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (match and RELAY_PORT_MIN <= low < high <= RELAY_PORT_MAX and high - low < RELAY_RANGE_MAX_WIDTH):
        raise invalid(
            key,
            value,
            f"a port range LOW-HIGH inside {RELAY_PORT_MIN}-{RELAY_PORT_MAX}, "
            f"LOW < HIGH, at most {RELAY_RANGE_MAX_WIDTH} ports",
        )
    return low, high


def _required_secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) < 20 or any(c.isspace() for c in value):
        raise invalid(key, "[secret]", "a Cloudflare API token with Zone:DNS:Edit (set it with --secret)")
    return value


VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "domain": _domain,
    "sshAllowedCidrs": _string_list(_cidr),
    "letsencryptEmail": _email,
    "certbotCloudflareToken": _required_secret,
    "region": _slug,
    "dropletSize": _slug,
    "dropletImage": _debian_image,
    "volumeSizeGb": _int_range(1, 16384),
    "matrixSubdomain": _subdomain,
    "chatSubdomain": _subdomain,
    "turnSubdomain": _subdomain,
    "acmeServer": _acme_server,
    "synapseVersion": _version,
    "elementVersion": _element_version,
    "elementSha256": _optional_sha256,
    "elementDownloadUrl": _download_url,
    "elementSigningKey": _optional_public_key,
    "elementSigningFingerprint": _optional_fingerprint,
    "maxUploadSizeMb": _int_range(1, MAX_UPLOAD_MB_CLOUDFLARE, " (Cloudflare Free/Pro cap uploads at 100 MB)"),
    "enableRegistration": _bool,
    "federation": _federation,
    "federationAllowlist": _string_list(_domain),
    "turnRelayPorts": _relay_ports,
    "turnDroplet": _bool,
    "turnDropletSize": _droplet_size,
    "database": _database,
    "databaseSize": _database_size,
    "mediaStorage": _media_storage,
    "mediaCacheDays": _int_range(1, 3650),
    "spacesRegion": _optional_spaces_region,
    "mediaBucket": _optional_bucket,
    "backupBucket": _optional_bucket,
    "synapseWorkers": _bool,
    "adminUser": _localpart,
    "sshPublicKeys": _string_list(_ssh_key),
    "enableUrlPreviews": _bool,
    "enableJemalloc": _bool,
    "backupKeepDays": _int_range(1, 365),
    "automaticRebootTime": _optional_time_of_day,
    "adoptVolume": _optional_volume_name,
    "cloudflareZone": _optional_domain,
    "wellKnownOnWebsite": _bool,
    "outboundIpAllowlist": _string_list(_outbound_cidr),
    "localMediaRetentionDays": _int_range(0, 36500, " (0: kept forever)"),
    "remoteMediaRetentionDays": _int_range(0, 3650, " (0: kept forever)"),
    "remoteRoomMaxStateEvents": _int_range(0, 10_000_000, " (0: no limit)"),
    "staleDeviceDays": _int_range(0, 36500, " (0: never deleted)"),
}

# Types as Pulumi config stores them; lists and booleans arrive as JSON text.
_JSON_KEYS = {k for k, v in DEFAULTS.items() if isinstance(v, (list, bool, int))} | {"sshAllowedCidrs"}


def _decode(key: str, raw: str) -> Any:
    if key not in _JSON_KEYS:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise invalid(key, raw, "valid JSON (a list, number or true/false)") from None


def load(raw: Mapping[str, str | None], stack: str = "dev") -> tuple[Settings, str]:
    """Validate raw config strings; returns the settings and the certbot token (kept apart: secret)."""
    unknown = sorted(set(raw) - set(ALL_KEYS))
    if unknown:
        raise SettingsError(
            f"config {PROJECT}:{unknown[0]} is not a known setting; known: {', '.join(sorted(ALL_KEYS))} "
            f"(fix: pulumi config rm {unknown[0]})"
        )
    values: dict[str, Any] = {}
    for key in ALL_KEYS:
        text = raw.get(key)
        if text is None or text == "":
            if key in REQUIRED:
                raise SettingsError(
                    f"config {PROJECT}:{key} is required (fix: pulumi config set "
                    f"{'--secret ' if key in SECRET_KEYS else ''}{key} <value>; see README)"
                )
            # Defaults go through the same validator: normalised alike, and a bad edit cannot slip in.
            values[key] = VALIDATORS[key](key, DEFAULTS[key])
        else:
            values[key] = VALIDATORS[key](key, _decode(key, text))
    return _cross_checked(values, stack), values["certbotCloudflareToken"]


def _cross_checked(v: dict[str, Any], stack: str) -> Settings:
    if not v["sshAllowedCidrs"]:
        raise invalid("sshAllowedCidrs", [], "at least one CIDR (the address `pulumi up` runs from)")
    subs = [v["matrixSubdomain"], v["chatSubdomain"], v["turnSubdomain"]]
    if len(set(subs)) != 3:
        raise invalid("turnSubdomain", v["turnSubdomain"], "matrixSubdomain, chatSubdomain and turnSubdomain must differ")
    if v["federation"] == "allowlist" and not v["federationAllowlist"]:
        raise invalid("federationAllowlist", [], "at least one server name when federation=allowlist")
    if v["federation"] != "allowlist" and v["federationAllowlist"]:
        raise invalid(
            "federationAllowlist",
            list(v["federationAllowlist"]),
            "empty unless federation=allowlist (set federation to allowlist, or remove the list)",
        )
    if bool(v["elementSigningKey"]) != bool(v["elementSigningFingerprint"]):
        missing = "elementSigningFingerprint" if v["elementSigningKey"] else "elementSigningKey"
        raise invalid(
            missing,
            "",
            "elementSigningKey and elementSigningFingerprint go together: set both (a mirror's own key "
            "and its fingerprint) or neither (Element's pinned release key)",
        )
    zone = v["cloudflareZone"]
    if zone and v["domain"] != zone and not v["domain"].endswith("." + zone):
        raise invalid("cloudflareZone", zone, f"the zone that holds domain {v['domain']}: {v['domain']} itself "
                      "or a parent of it")
    platform = platform_of(v["dropletImage"])
    assert platform is not None  # _debian_image
    _locked_synapse_version(v["synapseVersion"], platform)
    if v["mediaStorage"] == "spaces" and not lock_path(v["synapseVersion"], platform.python, s3=True).is_file():
        raise invalid("mediaStorage", "spaces", f"a synapseVersion whose lock includes the S3 storage provider; "
                      f"{v['synapseVersion']} has none (python -m components.synapse_lock {v['synapseVersion']})")
    if v["mediaStorage"] == "spaces" and not v["spacesRegion"] and v["region"] not in SPACES_REGIONS:
        raise invalid("spacesRegion", "", f"a region with Spaces for the media bucket: region {v['region']} has none "
                      f"({', '.join(SPACES_REGIONS)} do)")
    if v["synapseWorkers"]:
        _check_workers(v, platform)
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,30}$", stack):
        raise invalid("<stack name>", stack, "a stack name of lower-case letters, digits and dashes (<= 31)")
    settings = Settings(
        stack=stack,
        domain=v["domain"],
        ssh_allowed_cidrs=v["sshAllowedCidrs"],
        letsencrypt_email=v["letsencryptEmail"],
        region=v["region"],
        droplet_size=v["dropletSize"],
        droplet_image=v["dropletImage"],
        volume_size_gb=v["volumeSizeGb"],
        matrix_subdomain=v["matrixSubdomain"],
        chat_subdomain=v["chatSubdomain"],
        turn_subdomain=v["turnSubdomain"],
        acme_server=v["acmeServer"],
        synapse_version=v["synapseVersion"],
        element_version=v["elementVersion"],
        element_sha256=v["elementSha256"],
        element_download_url=v["elementDownloadUrl"],
        element_signing_key=v["elementSigningKey"],
        element_signing_fingerprint=v["elementSigningFingerprint"],
        max_upload_size_mb=v["maxUploadSizeMb"],
        enable_registration=v["enableRegistration"],
        federation=v["federation"],
        federation_allowlist=v["federationAllowlist"],
        turn_relay_ports=v["turnRelayPorts"],
        turn_droplet=v["turnDroplet"],
        turn_droplet_size=v["turnDropletSize"],
        database=v["database"],
        database_size=v["databaseSize"],
        media_storage=v["mediaStorage"],
        media_cache_days=v["mediaCacheDays"],
        spaces_region=v["spacesRegion"],
        media_bucket=v["mediaBucket"],
        backup_bucket=v["backupBucket"],
        synapse_workers=v["synapseWorkers"],
        admin_user=v["adminUser"],
        ssh_public_keys=v["sshPublicKeys"],
        enable_url_previews=v["enableUrlPreviews"],
        enable_jemalloc=v["enableJemalloc"],
        backup_keep_days=v["backupKeepDays"],
        automatic_reboot_time=v["automaticRebootTime"],
        adopt_volume=v["adoptVolume"],
        cloudflare_zone=v["cloudflareZone"],
        well_known_on_website=v["wellKnownOnWebsite"],
        outbound_ip_allowlist=v["outboundIpAllowlist"],
        local_media_retention_days=v["localMediaRetentionDays"],
        remote_media_retention_days=v["remoteMediaRetentionDays"],
        remote_room_max_state_events=v["remoteRoomMaxStateEvents"],
        stale_device_days=v["staleDeviceDays"],
        tuning=tuning_for(memory_mb_of(v["dropletSize"]),
                          workers.PROCESSES if v["synapseWorkers"] else 1),
    )
    if settings.media_on_spaces and settings.spaces_backup_bucket_name == settings.spaces_bucket_name:
        raise invalid("backupBucket", v["backupBucket"], "a bucket name other than the media bucket's: the backups "
                      "need a bucket (and a key) of their own that Synapse cannot reach")
    return settings


def _check_workers(v: dict[str, Any], platform: Platform) -> None:
    """synapseWorkers needs a droplet the processes fit on, and a lock with Synapse's redis extra."""
    size = v["dropletSize"]
    if vcpus_of(size) < workers.MIN_VCPUS or memory_mb_of(size) < workers.MIN_MEMORY_MB:
        raise invalid("synapseWorkers", True, f"a dropletSize of at least {workers.MIN_VCPUS} vCPUs and "
                      f"{workers.MIN_MEMORY_MB // 1024} GB for {workers.PROCESSES} Synapse processes and Redis, "
                      f"e.g. s-2vcpu-4gb ({size} is smaller; or set synapseWorkers false)")
    if not lock_path(v["synapseVersion"], platform.python, s3=v["mediaStorage"] == "spaces", redis=True).is_file():
        raise invalid("synapseWorkers", True, f"a synapseVersion whose lock includes Synapse's redis extra; "
                      f"{v['synapseVersion']} has none (python -m components.synapse_lock {v['synapseVersion']})")


def warnings(settings: Settings) -> list[str]:
    """Settings that are valid but leave a door open: said in the `pulumi up` log on every run."""
    found = []
    open_to_all = [c for c in settings.ssh_allowed_cidrs if ipaddress.ip_network(c).prefixlen == 0]
    if open_to_all:
        found.append(f"sshAllowedCidrs: {', '.join(open_to_all)} lets the whole internet try port 22 (root, keys "
                     "only): list the addresses you deploy from instead")
    if not settings.automatic_reboot_time:
        found.append("automaticRebootTime is not set: security updates install every day, but a new kernel or "
                     "libc runs only after a reboot, which nothing plans (the self-check says when one is "
                     "pending); set a time such as 04:00 (UTC) to reboot then when an update needs it")
    return found


# The DigitalOcean provider creates buckets through the Spaces API: it needs a Spaces key of the
# account's own beside the API token, as provider config or environment (its README).
SPACES_PROVIDER_CREDENTIALS = (("digitalocean:spacesAccessId", "SPACES_ACCESS_KEY_ID"),
                               ("digitalocean:spacesSecretKey", "SPACES_SECRET_ACCESS_KEY"))


def check_spaces_provider_credentials(settings: Settings, config: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """mediaStorage: spaces without the provider's Spaces key would fail at the bucket, after other
    resources exist: refuse first, naming both ways to give it."""
    if not settings.media_on_spaces:
        return
    missing = [key for key, variable in SPACES_PROVIDER_CREDENTIALS if not config.get(key) and not environ.get(variable)]
    if missing:
        raise SettingsError(
            f"config {PROJECT}:mediaStorage=spaces needs the DigitalOcean provider's Spaces key to create the bucket; "
            f"{' and '.join(missing)} not set (fix: pulumi config set digitalocean:spacesAccessId <id>; pulumi config "
            "set --secret digitalocean:spacesSecretKey <secret>; or export SPACES_ACCESS_KEY_ID and "
            "SPACES_SECRET_ACCESS_KEY)"
        )


def from_pulumi_config() -> tuple[Settings, str]:
    """Read the stack's config (namespace `matrix-stack`) and validate it."""
    import pulumi
    from pulumi.runtime.config import CONFIG, is_config_secret

    prefix = f"{PROJECT}:"
    raw: dict[str, str | None] = {k[len(prefix):]: v for k, v in CONFIG.get().items() if k.startswith(prefix)}
    for key in SECRET_KEYS:
        if raw.get(key) and not is_config_secret(prefix + key):
            raise SettingsError(
                f"config {PROJECT}:{key} is stored in plain text: it must be a secret "
                f"(fix: pulumi config set --secret {key} <value>)"
            )
    settings, token = load(raw, pulumi.get_stack())
    check_spaces_provider_credentials(settings, CONFIG.get(), os.environ)
    return settings, token
