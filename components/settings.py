"""The config contract: every stack setting typed, defaulted and validated before any resource exists.

The settings are declared once, in setting_table.py (name, type, default, check, description); this module
loads them: a bad value stops `pulumi up` before any resource is registered, with one line that names
the key, the bad value and what is allowed (setting_checks.py). Everything the rest of the program needs
that can be derived from the settings (hostnames, memory-based tuning) is derived here, once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components import rtc_memory, worker_topology
from components.platform import Platform, platform_of
from components.setting_checks import (
    DATABASE_SIZE_RE,
    MEMORY_RE,
    PROJECT,
    SPACES_REGIONS,
    VCPUS_RE,
    SettingsError,
    invalid,
)
from components.setting_table import SETTINGS
from components.synapse_lock import lock_path, locked_versions
from components.team import Invitation, TeamMember

__all__ = ["ALL_KEYS", "DEFAULTS", "PROJECT", "REQUIRED", "SECRET_KEYS", "ConfigSecrets", "Settings", "SettingsError",
           "Tuning",
           "invalid", "load", "memory_mb_of", "tuning_for", "vcpus_of"]

DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS if not s.required}
REQUIRED = tuple(s.key for s in SETTINGS if s.required)
SECRET_KEYS = tuple(s.key for s in SETTINGS if s.secret)
ALL_KEYS = tuple(s.key for s in SETTINGS)
_BY_KEY = {s.key: s for s in SETTINGS}

# DigitalOcean Managed PostgreSQL allows 25 connections per GiB of the node's memory, 3 of them
# reserved for its own maintenance (DigitalOcean's PostgreSQL limits and connection-pool docs: the
# 1 GiB size offers 22).
MANAGED_CONNECTIONS_PER_GIB = 25
MANAGED_RESERVED_CONNECTIONS = 3
# Connections the droplet's tools may hold next to Synapse's pool: the backup's pg_dump, the weekly
# VACUUM, the self-check's probe (and, once, the move of the data).
TOOL_CONNECTIONS = 3
SYNAPSE_POOL_MAX = 10  # Synapse's cp_max on the local database
SYNAPSE_POOL_MIN = 5


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
    match = MEMORY_RE.search(size_slug)
    if not match:
        raise invalid("dropletSize", size_slug, "a DigitalOcean size slug naming its memory, e.g. s-1vcpu-1gb")
    amount, unit = int(match.group(1)), match.group(2)
    return amount * 1024 if unit == "gb" else amount


def vcpus_of(size_slug: str) -> int:
    """vCPUs of a DigitalOcean size slug such as `s-2vcpu-4gb`; 0 when the slug does not name them."""
    match = VCPUS_RE.search(size_slug)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class ConfigSecrets:
    """The settings set with --secret, kept apart from Settings: they go into the program only as secret Outputs."""

    certbot_cloudflare_token: str
    smtp_password: str  # "" = none


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
    matrix_rtc: bool  # MatrixRTC: the LiveKit SFU and lk-jwt-service (components/services/rtc.py)
    livekit_version: str
    livekit_sha256: str
    livekit_download_url: str
    lk_jwt_service_version: str
    lk_jwt_service_sha256: str  # "" only with matrix_rtc off
    lk_jwt_service_download_url: str
    database: str  # "local" | "managed"
    database_size: str  # the managed cluster's size slug (used only when database is managed)
    media_storage: str  # "local" | "spaces"
    media_cache_days: int  # spaces: local copies unused this long are removed (they are in the bucket)
    spaces_region: str  # "" = region (used only when media_storage is spaces)
    media_bucket: str  # "" = derived from domain (used only when media_storage is spaces)
    backup_bucket: str  # "" = derived from the media bucket's name (used only when media_storage is spaces)
    synapse_workers: bool  # Synapse workers with Redis (components/worker_topology.py)
    admin_user: str
    users: tuple[TeamMember, ...]  # the team besides the admin (components/team.py)
    invitations: tuple[Invitation, ...]
    smtp_host: str  # "" = no mail
    smtp_port: int
    smtp_tls: str  # "starttls" | "tls"
    smtp_user: str  # "" = no login
    mail_from: str  # "" = Matrix <matrix@domain>
    mail_notifications: bool
    mail_notification_minutes: int
    alerts: bool  # DigitalOcean alert policies and the uptime check (components/cloud/alerts.py)
    alert_email: str  # "" = the DigitalOcean account's own e-mail
    alert_cpu_percent: int
    alert_memory_percent: int
    alert_disk_percent: int
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
    forgotten_room_purge_days: int  # 0 = never
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
    def sign_up_url(self) -> str:
        """Element's sign-up page; it asks for the registration token (it has no way to take one from a link)."""
        return f"{self.element_url}/#/register"

    @property
    def admin_user_id(self) -> str:
        return f"@{self.admin_user}:{self.domain}"

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host)

    @property
    def mail_sender(self) -> str:
        return self.mail_from or f"Matrix <matrix@{self.domain}>"

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
        match = DATABASE_SIZE_RE.match(self.database_size)
        assert match is not None  # _database_size
        return int(match.group(1)) * MANAGED_CONNECTIONS_PER_GIB - MANAGED_RESERVED_CONNECTIONS

    @property
    def synapse_processes(self) -> int:
        """Synapse processes, each with its own connection pool and caches: 1, or 1 + the workers."""
        return worker_topology.PROCESSES if self.synapse_workers else 1

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
    def livekit_tarball_url(self) -> str:
        return self.livekit_download_url.replace("{version}", self.livekit_version)

    @property
    def livekit_checksums_url(self) -> str:
        """LiveKit's goreleaser publishes checksums.txt beside the archives of a release."""
        return self.livekit_tarball_url.rsplit("/", 1)[0] + "/checksums.txt"

    @property
    def lk_jwt_service_url(self) -> str:
        return self.lk_jwt_service_download_url.replace("{version}", self.lk_jwt_service_version)

    @property
    def relay_port_range(self) -> str:
        return f"{self.turn_relay_ports[0]}-{self.turn_relay_ports[1]}"


def _locked_synapse_version(version: str, platform: Platform) -> None:
    """A version whose dependency lock for the image's Python is in the repository (components/synapse_lock.py)."""
    if not lock_path(version, platform.python).is_file():
        known = ", ".join(locked_versions(platform.python)) or "none"
        raise invalid("synapseVersion", version, f"a version with a dependency lock for Python {platform.python} "
                      f"in templates/synapse/locks/ (have: {known}); create it with: "
                      f"python -m components.synapse_lock {version}")


def field_name(key: str) -> str:
    """The Settings field of a setting: its key in snake_case (sshAllowedCidrs -> ssh_allowed_cidrs)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def _decode(key: str, raw: str) -> Any:
    """A value as Pulumi config stores it: text; lists, numbers and booleans as JSON. A list may also be one
    string of comma-separated items, which is what `pulumi new` stores for the settings it asks for."""
    kind = _BY_KEY[key].kind
    if kind == "string":
        return raw
    if kind in ("array", "objects") and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise invalid(key, raw, "valid JSON (a list, number or true/false)") from None


def load(raw: Mapping[str, str | None], stack: str = "dev") -> tuple[Settings, ConfigSecrets]:
    """Validate raw config strings; returns the settings and, kept apart, the secret ones."""
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
                    f"{'--secret ' if key in SECRET_KEYS else ''}{key} <value>; see docs/settings.md)"
                )
            # Defaults go through the same validator: normalised alike, and a bad edit cannot slip in.
            values[key] = _BY_KEY[key].check(key, DEFAULTS[key])
        else:
            values[key] = _BY_KEY[key].check(key, _decode(key, text))
    secrets = ConfigSecrets(certbot_cloudflare_token=values["certbotCloudflareToken"],
                            smtp_password=values["smtpPassword"])
    return _cross_checked(values, stack), secrets


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
    if v["matrixRtc"]:
        _check_rtc(v)
    _check_team_and_mail(v)
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,30}$", stack):
        raise invalid("<stack name>", stack, "a stack name of lower-case letters, digits and dashes (<= 31)")
    settings = Settings(
        stack=stack,
        tuning=tuning_for(memory_mb_of(v["dropletSize"]), worker_topology.PROCESSES if v["synapseWorkers"] else 1),
        # Every setting but the secret ones (kept apart by load), as the field of its snake_case name.
        **{field_name(key): value for key, value in v.items() if key not in SECRET_KEYS},
    )
    if settings.media_on_spaces and settings.spaces_backup_bucket_name == settings.spaces_bucket_name:
        raise invalid("backupBucket", v["backupBucket"], "a bucket name other than the media bucket's: the backups "
                      "need a bucket (and a key) of their own that Synapse cannot reach")
    return settings


def _check_team_and_mail(v: dict[str, Any]) -> None:
    """The team, invitations and mail settings that only make sense together."""
    admin = next((m for m in v["users"] if m.localpart == v["adminUser"]), None)
    if admin:
        raise invalid("users", admin.localpart, f"people besides the admin account ({v['adminUser']}, adminUser): "
                      "remove it from users")
    if v["invitations"] and not v["enableRegistration"]:
        raise invalid("invitations", [i.name for i in v["invitations"]], "invitations only with sign-up open to "
                      "token holders (fix: pulumi config set enableRegistration true)")
    if not v["smtpHost"]:
        stray = next((k for k in ("smtpUser", "smtpPassword", "mailFrom") if v[k]), None)
        if stray:
            raise invalid(stray, v[stray] if stray != "smtpPassword" else "[secret]", "set with smtpHost only "
                          "(fix: pulumi config set smtpHost <your relay>, or remove it)")
        return
    if bool(v["smtpUser"]) != bool(v["smtpPassword"]):
        missing = "smtpPassword" if v["smtpUser"] else "smtpUser"
        raise invalid(missing, "", "smtpUser and smtpPassword go together (fix: pulumi config set "
                      f"{'--secret ' if missing == 'smtpPassword' else ''}{missing} <value>)")
    wrong = {465: "starttls", 587: "tls"}.get(v["smtpPort"])
    if v["smtpTls"] == wrong:
        right = "tls" if wrong == "starttls" else "starttls"
        raise invalid("smtpTls", wrong, f"{right} on port {v['smtpPort']} (fix: pulumi config set smtpTls {right})")


def _check_workers(v: dict[str, Any], platform: Platform) -> None:
    """synapseWorkers needs a droplet the processes fit on, and a lock with Synapse's redis extra."""
    size = v["dropletSize"]
    if vcpus_of(size) < worker_topology.MIN_VCPUS or memory_mb_of(size) < worker_topology.MIN_MEMORY_MB:
        raise invalid("synapseWorkers", True, f"a dropletSize of at least {worker_topology.MIN_VCPUS} vCPUs and "
                      f"{worker_topology.MIN_MEMORY_MB // 1024} GB for {worker_topology.PROCESSES} Synapse processes and Redis, "
                      f"e.g. s-2vcpu-4gb ({size} is smaller; or set synapseWorkers false)")
    if not lock_path(v["synapseVersion"], platform.python, s3=v["mediaStorage"] == "spaces", redis=True).is_file():
        raise invalid("synapseWorkers", True, f"a synapseVersion whose lock includes Synapse's redis extra; "
                      f"{v['synapseVersion']} has none (python -m components.synapse_lock {v['synapseVersion']})")


def _check_rtc(v: dict[str, Any]) -> None:
    """matrixRtc needs the token service's pin, and a droplet with room for the SFU beside the rest."""
    if not v["lkJwtServiceSha256"]:
        raise invalid("lkJwtServiceSha256", "", f"the sha256 of lk-jwt-service_linux_amd64 {v['lkJwtServiceVersion']} "
                      "from its GitHub release page, required with matrixRtc (fix: pulumi config set "
                      "lkJwtServiceSha256 <sha256>, or matrixRtc false)")
    needed = rtc_memory.needed_mb(v["synapseWorkers"])
    size = v["dropletSize"]
    if memory_mb_of(size) < needed:
        raise invalid("matrixRtc", True, f"a dropletSize with at least {needed} MB of memory for the SFU and the token "
                      f"service beside the rest ({size} has {memory_mb_of(size)}; docs/calls.md, Memory), or "
                      "matrixRtc false")


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


def from_pulumi_config() -> tuple[Settings, ConfigSecrets]:
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
    settings, secrets = load(raw, pulumi.get_stack())
    check_spaces_provider_credentials(settings, CONFIG.get(), os.environ)
    return settings, secrets
