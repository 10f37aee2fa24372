"""Synapse from PyPI in a venv: packages, system user, data on the volume, config, systemd unit.

`synapse-install` creates the user and the venv (a package-created owner must exist before the
files of `synapse-config` are written). `synapse-config` writes homeserver.yaml, the log config
and the unit, places the signing key only if the volume has none, validates the config with
Synapse itself, and restarts only when something changed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from components import paths
from components.cloud.media_bucket import MEDIA_PREFIX
from components.remote import RemoteFile, StepSpec
from components.services import ServiceContext, rendered, rtc, synapse_workers
from components.services.media import CA_BUNDLE
from components.settings import Settings
from components.synapse_lock import lock_path

SYNAPSE_HOME = "/var/lib/matrix-synapse"  # the system user's home; data lives on the volume
PID_FILE = "/run/matrix-synapse/homeserver.pid"  # systemd RuntimeDirectory
UNIT_PATH = "/etc/systemd/system/matrix-synapse.service"
SIGNING_KEY_STAGED = f"{paths.SYNAPSE_CONFIG_DIR}/signing.key.generated"
LOG_FILE = f"{paths.SYNAPSE_LOG_DIR}/homeserver.log"
LOCK_FILE = "/opt/synapse/requirements.lock"  # the version's dependency lock, with hashes
JEMALLOC_SONAME = "libjemalloc.so.2"  # resolved by ld.so's search path, so no arch-specific path
HEALTH_TIMEOUT_S = 90
PASSWORD_MIN_LENGTH = 12  # the generated admin password is longer (components/cloud/secrets.py)
STATE_EVENTS_PER_COMPLEXITY = 500  # Synapse: complexity v1 = current state events / 500

# Addresses Synapse must never connect to on a user's behalf (URL previews, federation, push,
# identity servers). A superset of Synapse's own DEFAULT_IP_RANGE_BLOCKLIST (a test checks this)
# plus the special-purpose ranges coturn's denied-peer-ip list also refuses.
IP_RANGE_BLOCKLIST: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "127.0.0.0/8",  # loopback
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT
    "192.0.0.0/24",  # IETF protocol assignments
    "169.254.0.0/16",  # link-local (cloud metadata service)
    "192.88.99.0/24",  # former 6to4 relay
    "198.18.0.0/15",  # benchmarking
    "192.0.2.0/24",  # documentation
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped
    "64:ff9b::/96",  # NAT64: would reach any IPv4 address, private ones included
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # former site-local
    "ff00::/8",  # multicast
)


def _trusted_key_servers(settings: Settings) -> list[str]:
    """matrix.org as notary only where Synapse may talk to it at all.

    With an allowlist (or federation off) Synapse refuses outbound federation requests to any
    server not listed, the notary included, so listing matrix.org there would only cause
    failed key look-ups; keys are then fetched from the allowed servers themselves.
    """
    if settings.federation == "open" or "matrix.org" in settings.federation_allowlist:
        return ["matrix.org"]
    return []


def _database_values(ctx: ServiceContext) -> dict[str, Any]:
    """PostgreSQL on the droplet over loopback, or the managed cluster over verified TLS."""
    s = ctx.settings
    common = {"db_name": paths.POSTGRES_DB, "db_pool_min": s.synapse_pool_min, "db_pool_max": s.synapse_pool_max}
    if ctx.database is None:
        return {**common, "db_user": paths.POSTGRES_USER, "db_password": ctx.postgres_password,
                "db_host": "127.0.0.1", "db_port": 5432, "db_ca_file": ""}
    endpoint = ctx.database
    return {**common, "db_user": endpoint.user, "db_password": endpoint.password, "db_host": endpoint.host,
            "db_port": endpoint.port, "db_ca_file": paths.MANAGED_DB_CA}


def _media_storage_values(ctx: ServiceContext) -> dict[str, Any]:
    """mediaStorage: spaces: synapse-s3-storage-provider's settings; none with local media."""
    media = ctx.media
    if media is None:
        return {"s3_bucket": ""}
    return {"s3_bucket": media.bucket, "s3_region": media.region, "s3_endpoint_url": media.endpoint_url,
            "s3_access_key": media.access_key, "s3_secret_key": media.secret_key, "s3_prefix": MEDIA_PREFIX}


def _email_values(ctx: ServiceContext) -> dict[str, Any] | None:
    """Synapse's `email` section with smtpHost (None without): the relay, always over TLS (the certificate
    checked against smtpHost), the sender, links to Element, and missed-message mail. The relay's password is
    smtp_pass, beside it."""
    s = ctx.settings
    if not s.mail_enabled:
        return None
    return {
        "smtp_host": s.smtp_host,
        "smtp_port": s.smtp_port,
        "force_tls": s.smtp_tls == "tls",
        "require_transport_security": s.smtp_tls == "starttls",
        "smtp_user": s.smtp_user,
        "notif_from": s.mail_sender,
        "client_base_url": s.element_url,
        "invite_client_location": s.element_url,
        "enable_notifs": s.mail_notifications,
        "notif_delay_before_mail": f"{s.mail_notification_minutes}m",
    }


def homeserver_values(ctx: ServiceContext) -> dict[str, Any]:
    """Everything homeserver.yaml.j2 needs (secrets may be Outputs)."""
    s = ctx.settings
    allowlist: list[str] | None = None  # None: federation open, no whitelist key at all
    if s.federation == "allowlist":
        allowlist = list(s.federation_allowlist)
    elif s.federation == "off":
        allowlist = []  # an empty whitelist denies every remote server, inbound and outbound
    return {
        "server_name": s.domain,
        "public_baseurl": f"{s.homeserver_url}/",
        "pid_file": PID_FILE,
        "bind_address": paths.SYNAPSE_LISTEN[0],
        "port": paths.SYNAPSE_LISTEN[1],
        **_database_values(ctx),
        "log_config": paths.SYNAPSE_LOG_CONFIG,
        "media_store_path": paths.SYNAPSE_MEDIA_STORE,
        "signing_key_path": paths.SYNAPSE_SIGNING_KEY,
        "max_upload_size": f"{s.max_upload_size_mb}M",
        **_media_storage_values(ctx),
        **synapse_workers.homeserver_values(ctx),
        "enable_registration": s.enable_registration,
        "url_previews": s.enable_url_previews,
        "ip_range_blocklist": list(IP_RANGE_BLOCKLIST),
        "ip_range_allowlist": list(s.outbound_ip_allowlist),
        "federation_allowlist": allowlist,
        "trusted_key_servers": _trusted_key_servers(s),
        "turn_uris": [
            f"turn:{s.turn_host}:3478?transport=udp",
            f"turn:{s.turn_host}:3478?transport=tcp",
            f"turns:{s.turn_host}:5349?transport=tcp",
        ],
        "local_media_lifetime_days": s.local_media_retention_days,
        "remote_media_lifetime_days": s.remote_media_retention_days,
        "remote_room_max_complexity": s.remote_room_max_state_events / STATE_EVENTS_PER_COMPLEXITY,
        "remote_room_error": (
            f"This room is too big for {s.domain} (more than {s.remote_room_max_state_events} state events): "
            "the server's admin can raise remoteRoomMaxStateEvents"
        ),
        "stale_device_days": s.stale_device_days,
        "forgotten_room_purge_days": s.forgotten_room_purge_days,
        "password_min_length": PASSWORD_MIN_LENGTH,
        "email": _email_values(ctx),
        # Top level: the template's values may be Outputs only there (services.rendered).
        "smtp_pass": ctx.smtp_password if s.mail_enabled and s.smtp_user else "",
        "presence_enabled": s.tuning.presence_enabled,
        # cache_autotuning reads jemalloc's statistics; without jemalloc it would do nothing.
        "cache_autotuning": s.enable_jemalloc,
        "cache_max": f"{s.tuning.synapse_cache_max_mb}M",
        "cache_target": f"{s.tuning.synapse_cache_target_mb}M",
        "registration_shared_secret": ctx.registration_shared_secret,
        "macaroon_secret": ctx.macaroon_secret,
        "form_secret": ctx.form_secret,
        "turn_shared_secret": ctx.turn_shared_secret,
        # matrixRtc: the LiveKit backend Synapse advertises, and lk-jwt-service's registration.
        "rtc_transports": rtc.transports(ctx),
        "rtc_registration": rtc.REGISTRATION,
    }


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    script_values = {
        "user": paths.SYNAPSE_USER,
        "home": SYNAPSE_HOME,
        "venv": paths.SYNAPSE_VENV,
        "version": s.synapse_version,
        "jemalloc": s.enable_jemalloc,
        "jemalloc_soname": JEMALLOC_SONAME,
        "data_mount": paths.DATA_MOUNT,
        "data_dir": paths.SYNAPSE_DATA,
        "media_store": paths.SYNAPSE_MEDIA_STORE,
        "log_dir": paths.SYNAPSE_LOG_DIR,
        "config": paths.SYNAPSE_CONFIG,
        "signing_key": paths.SYNAPSE_SIGNING_KEY,
        "old_signing_key": paths.SYNAPSE_OLD_SIGNING_KEY,
        "signing_key_staged": SIGNING_KEY_STAGED,
        "unit_name": paths.SYNAPSE_UNIT,
        "backup_command": paths.BACKUP_COMMAND,
        "s3": s.media_on_spaces,
        "media_marker": paths.MEDIA_SPACES_MARKER,
        "spaces_command": paths.SPACES_COMMAND,
        "lock": LOCK_FILE,
        "health_url": f"http://{paths.SYNAPSE_LISTEN[0]}:{paths.SYNAPSE_LISTEN[1]}/health",
        "health_timeout": HEALTH_TIMEOUT_S,
        **synapse_workers.script_values(ctx),
    }
    unit_values = dict(
        main_unit=paths.SYNAPSE_UNIT,
        worker_config_dir=synapse_workers.WORKER_CONFIG_DIR,
        user=paths.SYNAPSE_USER,
        home=SYNAPSE_HOME,
        venv=paths.SYNAPSE_VENV,
        config=paths.SYNAPSE_CONFIG,
        mount_unit=paths.MOUNT_UNIT,
        data_dir=paths.SYNAPSE_DATA,
        log_dir=paths.SYNAPSE_LOG_DIR,
        jemalloc_soname=JEMALLOC_SONAME if s.enable_jemalloc else "",
        # database: managed: the droplet's PostgreSQL is off, Synapse must not pull it in.
        local_database=ctx.database is None,
        # mediaStorage: spaces: boto3 verifies the bucket against the droplet's trust store.
        aws_ca_bundle=CA_BUNDLE if s.media_on_spaces else "",
    )
    unit = rendered("synapse/matrix-synapse.service.j2", worker=False, **unit_values)
    worker_unit = rendered("synapse/matrix-synapse.service.j2", worker=True, **unit_values)
    group = paths.SYNAPSE_USER
    lock = lock_path(s.synapse_version, s.platform.python, s3=s.media_on_spaces,
                     redis=synapse_workers.enabled(ctx)).read_text()
    # A new lock for the same version (a dependency fixed) re-installs and restarts, as a new version does.
    versions = {"synapse": s.synapse_version, "lock": hashlib.sha256(lock.encode()).hexdigest()[:16]}
    return [
        StepSpec(
            name="synapse-install",
            script=str(rendered("synapse/install.sh.j2", **script_values)),
            files=[RemoteFile(LOCK_FILE, lock, mode="0644")],
            versions=versions,
        ),
        *synapse_workers.redis_steps(ctx),
        StepSpec(
            name="synapse-config",
            script=str(rendered("synapse/config.sh.j2", **script_values)),
            files=[
                RemoteFile(
                    paths.SYNAPSE_CONFIG,
                    rendered("synapse/homeserver.yaml.j2", **homeserver_values(ctx)),
                    mode="0640",
                    owner="root",
                    group=group,
                ),
                RemoteFile(
                    paths.SYNAPSE_LOG_CONFIG,
                    rendered("synapse/log.yaml.j2", log_file=LOG_FILE),
                    mode="0644",
                ),
                RemoteFile(SIGNING_KEY_STAGED, ctx.signing_key, mode="0600"),
                RemoteFile(UNIT_PATH, unit, mode="0644"),
                *synapse_workers.worker_files(ctx, worker_unit),
                *([rtc.registration(ctx)] if s.matrix_rtc else []),
            ],
            versions=versions,
        ),
    ]
