"""Synapse's rendered files, checked by Synapse itself (build/synapse-venv), systemd-analyze and shellcheck."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import paths, synapse_lock, worker_topology
from components.remote import StepSpec, bundle_text
from components.render import render
from components.services import synapse, synapse_workers
from tests.templates.conftest import FAKE_SECRETS, make_context, parse_unit, prelude_function
from tests.templates.sandbox import run_bundles_in_sandbox

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_PY = ROOT / "build" / "synapse-venv" / "bin" / "python"

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "managed-database": {"database": "managed", "databaseSize": "db-s-2vcpu-4gb"},
    "spaces-media": {"mediaStorage": "spaces", "mediaCacheDays": "3"},
    "allowlist-registration-previews": {
        "federation": "allowlist",
        "federationAllowlist": '["friends.example.net", "matrix.org"]',
        "enableRegistration": "true",
        "enableUrlPreviews": "true",
        "maxUploadSizeMb": "100",
        "dropletSize": "s-2vcpu-4gb",
    },
    "allowlist-without-matrix-org": {"federation": "allowlist", "federationAllowlist": '["friends.example.net"]'},
    "off-small-no-jemalloc": {
        "federation": "off",
        "maxUploadSizeMb": "10",
        "dropletSize": "s-1vcpu-512mb-10gb",
        "enableJemalloc": "false",
    },
    "big-droplet": {"dropletSize": "m-8vcpu-64gb", "turnSubdomain": "relay"},
    "private-peer": {"outboundIpAllowlist": '["198.18.5.1/32"]'},
    "retention-and-limits": {"localMediaRetentionDays": "365", "remoteMediaRetentionDays": "3",
                             "remoteRoomMaxStateEvents": "1", "staleDeviceDays": "180", "forgottenRoomPurgeDays": "30"},
    "nothing-purged-no-room-limit": {"remoteMediaRetentionDays": "0", "remoteRoomMaxStateEvents": "0",
                                     "forgottenRoomPurgeDays": "0"},
    "mail-starttls-login": {"smtpHost": "smtp.mail.example.net", "smtpUser": "matrix@example.org",
                            "smtpPassword": "relay 'pass\" word", "mailFrom": "Example Chat <chat@example.org>",
                            "mailNotificationMinutes": "3"},
    "mail-tls-no-notifications": {"smtpHost": "relay.example.net", "smtpPort": "465", "smtpTls": "tls",
                                  "mailNotifications": "false"},
}


def _files(step: StepSpec) -> dict[str, str]:
    return {f.path: str(f.content) for f in step.files}


def _steps(**config: Any) -> dict[str, StepSpec]:
    return {s.name: s for s in synapse.steps(make_context(**config))}


def _replace_line(text: str, key: str, value: str) -> str:
    """Swap the value of one top-level `key: "<json>"` line; every other byte stays as rendered."""
    pattern = re.compile(rf'^(\s*{re.escape(key)}: )".*"$', re.M)
    new, count = pattern.subn(lambda m: m.group(1) + json.dumps(value), text)
    assert count == 1, f"{key} must appear exactly once"
    return new


def _install_for_check(files: dict[str, str], tmp: Path) -> Path:
    """Write the config set under `tmp` so Synapse can load it here.

    Only the absolute paths that point at the server (log config, log file, media store, signing
    key, pid file) are redirected into `tmp`, by rewriting just those lines; everything else in
    homeserver.yaml and log.yaml is byte-identical to what the server gets. The signing key is the
    staged candidate file of the step, i.e. what the script copies to the volume.
    """
    text = files[paths.SYNAPSE_CONFIG]
    for key, target in {
        "log_config": tmp / "log.yaml",
        "media_store_path": tmp / "media_store",
        "signing_key_path": tmp / "signing.key",
        "pid_file": tmp / "homeserver.pid",
    }.items():
        text = _replace_line(text, key, str(target))
    (tmp / "homeserver.yaml").write_text(text)
    (tmp / "log.yaml").write_text(_replace_line(files[paths.SYNAPSE_LOG_CONFIG], "filename", str(tmp / "hs.log")))
    (tmp / "signing.key").write_text(files[synapse.SIGNING_KEY_STAGED])
    return tmp / "homeserver.yaml"


PROBE = r"""
import json, sys
from synapse.config.homeserver import HomeServerConfig
from synapse.config.server import DEFAULT_IP_RANGE_BLOCKLIST
c = HomeServerConfig.load_config("", ["-c", sys.argv[1]])
blocked = lambda s, ip: ip in s
probe_ips = ["10.1.2.3", "169.254.169.254", "127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "fd00::1", "1.1.1.1",
             "2606:4700:4700::1111"]
l = c.server.listeners[0]
print(json.dumps({
    "server_name": c.server.server_name,
    "public_baseurl": c.server.public_baseurl,
    "max_upload_size": c.media.max_upload_size,
    "listeners": len(c.server.listeners),
    "bind": l.bind_addresses, "port": l.port, "tls": l.tls,
    "x_forwarded": l.http_options.x_forwarded,
    "resources": sorted(n for r in l.http_options.resources for n in r.names),
    "federates_with": {d: c.federation.is_domain_allowed_according_to_federation_whitelist(d)
                       for d in ["matrix.org", "friends.example.net", "evil.example.com"]},
    "turn_uris": c.voip.turn_uris, "turn_secret": c.voip.turn_shared_secret,
    "turn_lifetime_ms": c.voip.turn_user_lifetime,
    "registration": c.registration.enable_registration,
    "requires_token": c.registration.registration_requires_token,
    "previews": c.media.url_preview_enabled,
    "preview_blocks": {ip: blocked(c.media.url_preview_ip_range_blocklist, ip) for ip in probe_ips}
                      if c.media.url_preview_enabled else None,
    "blocks": {ip: blocked(c.server.ip_range_blocklist, ip) for ip in probe_ips},
    "federation_allows": {ip: ip in c.server.federation_ip_range_allowlist for ip in ["198.18.5.1", "198.18.5.2"]},
    "synapse_default_blocklist": DEFAULT_IP_RANGE_BLOCKLIST,
    "presence": c.server.presence_enabled,
    "autotuning": c.caches.cache_autotuning,
    "db": {k: v for k, v in c.database.databases[0].config["args"].items()},
    "db_engine": c.database.databases[0].config["name"],
    "key_servers": [k.server_name for k in c.key.key_servers],
    "signing_key_ids": [k.version for k in c.key.signing_key],
    "remote_media_lifetime_ms": c.media.media_retention_remote_media_lifetime_ms,
    "local_media_lifetime_ms": c.media.media_retention_local_media_lifetime_ms,
    "room_limit": [c.server.limit_remote_rooms.enabled, c.server.limit_remote_rooms.complexity,
                   c.server.limit_remote_rooms.admins_can_join, c.server.limit_remote_rooms.complexity_error],
    "stale_devices_ms": c.server.delete_stale_devices_after,
    "forgotten_room_ms": c.server.forgotten_room_retention_period,
    "password_policy": c.auth.password_policy if c.auth.password_policy_enabled else None,
    "profile_auth": c.server.require_auth_for_profile_requests,
    "report_stats": c.metrics.report_stats,
    "registration_shared_secret": c.registration.registration_shared_secret,
    "macaroon": c.key.macaroon_secret_key.decode() if isinstance(c.key.macaroon_secret_key, bytes)
                else c.key.macaroon_secret_key,
    "form_secret": c.key.form_secret,
    "email": {"host": c.email.email_smtp_host, "port": c.email.email_smtp_port, "force_tls": c.email.force_tls,
              "require_tls": c.email.require_transport_security, "tls": c.email.enable_smtp_tls,
              "user": c.email.email_smtp_user, "password": c.email.email_smtp_pass, "from": c.email.email_notif_from,
              "notifs": c.email.email_enable_notifs, "client": getattr(c.email, "email_riot_base_url", None),
              "delay_ms": getattr(c.email, "notif_delay_before_mail_ms", None),
              "for_new_users": getattr(c.email, "email_notif_for_new_users", None),
              "can_verify": c.email.can_verify_email, "invite_to": c.email.invite_client_location},
    "media_providers": [[p[0].__module__ + "." + p[0].__name__, p[1], p[2].store_local, p[2].store_remote,
                         p[2].store_synchronous] for p in c.media.media_storage_providers],
}))
"""


@pytest.fixture(scope="module")
def synapse_python() -> Path:
    # A missing validator is a failure, never a skip: tests/tools/install-deps.sh installs it.
    assert SYNAPSE_PY.exists(), f"{SYNAPSE_PY} missing: run tests/tools/install-deps.sh"
    return SYNAPSE_PY


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_homeserver_yaml_is_accepted_by_synapse(name: str, tmp_path: Path, synapse_python: Path) -> None:
    config = CONFIGS[name]
    ctx = make_context(**config)
    s = ctx.settings
    files = _files(_steps(**config)["synapse-config"])
    path = _install_for_check(files, tmp_path)

    check = subprocess.run(
        [str(synapse_python), "-m", "synapse.config", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and "Config parses OK!" in check.stdout, check.stderr
    probe = subprocess.run([str(synapse_python), "-c", PROBE, str(path)], capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)

    assert got["server_name"] == s.domain
    assert got["public_baseurl"] == f"https://{s.matrix_host}/"
    assert got["max_upload_size"] == s.max_upload_size_mb * 1024 * 1024
    assert (got["listeners"], got["bind"], got["port"], got["tls"], got["x_forwarded"]) == (1, ["127.0.0.1"], 8008, False, True)
    assert got["resources"] == ["client", "federation"]

    allowed = got["federates_with"]
    if s.federation == "open":
        assert all(allowed.values())
        assert got["key_servers"] == ["matrix.org"]
    elif s.federation == "off":
        assert not any(allowed.values())
        assert got["key_servers"] == []
    else:
        assert allowed == {d: d in s.federation_allowlist for d in allowed}
        assert got["key_servers"] == (["matrix.org"] if "matrix.org" in s.federation_allowlist else [])

    turn = s.turn_host
    assert got["turn_uris"] == [
        f"turn:{turn}:3478?transport=udp",
        f"turn:{turn}:3478?transport=tcp",
        f"turns:{turn}:5349?transport=tcp",
    ]
    assert got["turn_secret"] == FAKE_SECRETS["turn_shared_secret"]
    assert got["turn_lifetime_ms"] == 3600 * 1000

    assert got["registration"] is s.enable_registration
    assert got["requires_token"] is s.enable_registration  # open sign-up only with a token
    assert got["previews"] is s.enable_url_previews
    expected_block = {ip: not ip.startswith(("1.1.1.1", "2606:")) for ip in got["blocks"]}
    assert got["blocks"] == expected_block
    # outboundIpAllowlist: exactly those addresses become reachable despite the blocklist.
    assert got["federation_allows"] == {"198.18.5.1": "198.18.5.1/32" in s.outbound_ip_allowlist, "198.18.5.2": False}
    if s.enable_url_previews:
        assert got["preview_blocks"] == expected_block

    assert got["presence"] is s.tuning.presence_enabled
    if s.enable_jemalloc:
        assert got["autotuning"] == {
            "max_cache_memory_usage": s.tuning.synapse_cache_max_mb * 1024 * 1024,
            "target_cache_memory_usage": s.tuning.synapse_cache_target_mb * 1024 * 1024,
            "min_cache_ttl": 300_000,
        }
    else:
        assert got["autotuning"] is None  # autotuning reads jemalloc stats: pointless without it

    assert got["db_engine"] == "psycopg2"
    db = got["db"]
    if ctx.database is None:
        assert (db["user"], db["dbname"], db["host"], db["port"]) == (paths.POSTGRES_USER, paths.POSTGRES_DB, "127.0.0.1", 5432)
        assert db["password"] == FAKE_SECRETS["postgres_password"]
        assert "sslmode" not in db
    else:  # database: managed: the cluster's private host over TLS verified against its CA
        endpoint = ctx.database
        assert (db["user"], db["dbname"], db["host"], db["port"]) == (
            endpoint.user, paths.POSTGRES_DB, endpoint.host, endpoint.port)
        assert db["password"] == endpoint.password
        assert (db["sslmode"], db["sslrootcert"]) == ("verify-full", paths.MANAGED_DB_CA)
    assert (db["cp_min"], db["cp_max"], db["keepalives_idle"]) == (5, 10, 10)
    assert got["signing_key_ids"] == [FAKE_SECRETS["signing_key"].split()[1]]
    day_ms = 86400 * 1000
    assert got["remote_media_lifetime_ms"] == (s.remote_media_retention_days * day_ms or None)
    assert got["local_media_lifetime_ms"] == (s.local_media_retention_days * day_ms or None)
    assert got["stale_devices_ms"] == (s.stale_device_days * day_ms or None)
    assert got["forgotten_room_ms"] == (s.forgotten_room_purge_days * day_ms or None)
    enabled, complexity, admins, error = got["room_limit"]
    assert enabled is bool(s.remote_room_max_state_events) and admins is enabled
    if enabled:  # Synapse refuses a join when state events / 500 > complexity
        assert complexity * 500 == pytest.approx(s.remote_room_max_state_events)
        assert "remoteRoomMaxStateEvents" in error
    assert got["password_policy"] == {"enabled": True, "minimum_length": synapse.PASSWORD_MIN_LENGTH}
    assert got["profile_auth"] is True
    assert got["report_stats"] is False
    assert got["registration_shared_secret"] == FAKE_SECRETS["registration_shared_secret"]
    assert got["macaroon"] == FAKE_SECRETS["macaroon_secret"]
    assert got["form_secret"] == FAKE_SECRETS["form_secret"]
    mail = got["email"]
    if not s.mail_enabled:  # Synapse's defaults: it would try localhost:25, but nothing asks it to mail
        assert (mail["host"], mail["can_verify"], mail["notifs"]) == ("localhost", False, False)
    else:  # the relay over TLS, the login, the sender, links into Element; notifications as set
        assert (mail["host"], mail["port"], mail["tls"]) == (s.smtp_host, s.smtp_port, True)
        assert (mail["force_tls"], mail["require_tls"]) == (s.smtp_tls == "tls", s.smtp_tls == "starttls")
        assert (mail["user"], mail["password"]) == ((s.smtp_user, config["smtpPassword"]) if s.smtp_user else (None, None))
        assert mail["from"] == s.mail_sender and mail["can_verify"] is True and mail["invite_to"] == f"https://{s.chat_host}"
        assert mail["notifs"] is s.mail_notifications
        if s.mail_notifications:
            assert (mail["client"], mail["for_new_users"]) == (f"https://{s.chat_host}", True)
            assert mail["delay_ms"] == s.mail_notification_minutes * 60_000
    if ctx.media is None:
        assert got["media_providers"] == []
    else:  # mediaStorage: spaces: the provider as Synapse loaded it, with the config it parsed
        media = ctx.media
        ((module, parsed, *stores),) = got["media_providers"]
        assert module == "s3_storage_provider.S3StorageProviderBackend" and stores == [True, True, True]
        assert (parsed["bucket"], parsed["region_name"], parsed["endpoint_url"], parsed["prefix"]) == (
            media.bucket, media.region, media.endpoint_url, "media/")
        assert (parsed["access_key_id"], parsed["secret_access_key"]) == (media.access_key, media.secret_key)


def test_blocklist_covers_synapse_defaults(synapse_python: Path) -> None:
    """Setting ip_range_blacklist replaces Synapse's default list: ours must not be weaker."""
    out = subprocess.run(
        [
            str(synapse_python),
            "-c",
            "import json; from synapse.config.server import DEFAULT_IP_RANGE_BLOCKLIST as d; print(json.dumps(d))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = [ipaddress.ip_network(n) for n in synapse.IP_RANGE_BLOCKLIST]
    for default in json.loads(out.stdout):
        net = ipaddress.ip_network(default)
        assert any(net.version == o.version and net.subnet_of(o) for o in ours), default  # type: ignore[arg-type]


@pytest.mark.parametrize(("jemalloc", "database"), [(True, "local"), (False, "local"), (True, "managed")])
def test_systemd_unit(jemalloc: bool, database: str, tmp_path: Path, synapse_python: Path) -> None:
    files = _files(_steps(enableJemalloc=str(jemalloc).lower(), database=database)["synapse-config"])
    unit = parse_unit(files[synapse.UNIT_PATH])
    svc = unit["Service"]
    assert svc["User"] == svc["Group"] == paths.SYNAPSE_USER
    assert svc["ExecStart"] == (f"{paths.SYNAPSE_VENV}/bin/python -m synapse.app.homeserver --config-path={paths.SYNAPSE_CONFIG}")
    assert svc["Restart"] == "on-failure" and svc["NoNewPrivileges"] == "yes" and svc["PrivateTmp"] == "yes"
    assert ("LD_PRELOAD=libjemalloc.so.2" in svc.get("Environment", "")) is jemalloc
    for key in ("After", "Requires"):
        assert paths.MOUNT_UNIT in unit["Unit"][key].split()
        # database: managed: this droplet's PostgreSQL is off, and Synapse must not start it.
        assert ("postgresql.service" in unit["Unit"][key].split()) is (database == "local")
    # Everything Synapse writes is writable under ProtectSystem=strict.
    writable = svc["ReadWritePaths"].split()
    hs = yaml.safe_load(files[paths.SYNAPSE_CONFIG])
    log_file = yaml.safe_load(files[paths.SYNAPSE_LOG_CONFIG])["handlers"]["file"]["filename"]
    for path in (hs["media_store_path"], log_file):
        assert any(path.startswith(w + "/") for w in writable), path
    # ... but not its signing key: root's, Synapse only reads it (issue 26).
    assert not any(hs["signing_key_path"].startswith(w + "/") for w in writable)
    assert hs["signing_key_path"] == paths.SYNAPSE_SIGNING_KEY
    assert hs["pid_file"].startswith(f"/run/{svc['RuntimeDirectory']}/")
    # Synapse's own hardened override, less nothing but MemoryDenyWriteExecute (Python needs W+X).
    sandbox = (svc["CapabilityBoundingSet"], svc["PrivateUsers"], svc["ProtectProc"], svc["ProcSubset"])
    assert sandbox == ("", "yes", "invisible", "pid")
    assert (svc["SystemCallFilter"], svc["SystemCallFilter#2"]) == ("@system-service", "~@privileged @resources @obsolete")
    assert "MemoryDenyWriteExecute" not in svc

    # systemd's own checker. The units it depends on are stubbed next to it, and the venv path is
    # pointed at the test venv (it checks that ExecStart is executable); nothing else is changed.
    shutil.which("systemd-analyze") or pytest.fail("systemd-analyze is missing")
    text = files[synapse.UNIT_PATH].replace(f"{paths.SYNAPSE_VENV}/bin/python", str(synapse_python))
    (tmp_path / "matrix-synapse.service").write_text(text)
    (tmp_path / paths.MOUNT_UNIT).write_text(f"[Mount]\nWhat=/dev/vdb\nWhere={paths.DATA_MOUNT}\n")
    (tmp_path / "postgresql.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "matrix-synapse.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_files_modes_and_owners() -> None:
    files = {f.path: f for f in _steps()["synapse-config"].files}
    hs = files[paths.SYNAPSE_CONFIG]
    assert (hs.mode, hs.owner, hs.group) == ("0640", "root", paths.SYNAPSE_USER)
    key = files[synapse.SIGNING_KEY_STAGED]
    assert (key.mode, key.owner) == ("0600", "root")
    # The real key path is never written by the file mechanism: only the script places it, once.
    assert paths.SYNAPSE_SIGNING_KEY not in files
    for f in files.values():
        if any(secret.strip() in str(f.content) for secret in FAKE_SECRETS.values()):
            assert f.mode in ("0600", "0640"), f.path


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scripts_hold_no_secret(name: str) -> None:
    for step in _steps(**CONFIGS[name]).values():
        for secret in FAKE_SECRETS.values():
            assert secret.strip() not in step.script, step.name


def test_versions_and_packages() -> None:
    steps = _steps(synapseVersion="1.163.1", enableJemalloc="false")
    assert steps["synapse-install"].versions["synapse"] == "1.163.1"
    # The config step re-runs (and restarts Synapse) when the version changes.
    assert steps["synapse-config"].versions == steps["synapse-install"].versions
    install = steps["synapse-install"].script
    assert "version=1.163.1" in install
    # The version's own lock is what the step pushes (its pins, not another version's).
    (lock,) = steps["synapse-install"].files
    assert lock.path == synapse.LOCK_FILE and synapse_lock.pins(str(lock.content))["matrix-synapse"] == "1.163.1"
    assert "libjemalloc2" not in install
    assert "libjemalloc2" in _steps()["synapse-install"].script


def test_a_new_lock_for_the_same_version_reinstalls_and_restarts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A lock regenerated for the running version (a dependency fixed) changes both steps, so the
    packages are re-installed and Synapse is restarted onto them, never left running the old code."""
    before = _steps()
    version = before["synapse-install"].versions["synapse"]
    bumped = tmp_path / "lock.txt"
    python = make_context().settings.platform.python
    bumped.write_text(synapse_lock.lock_path(version, python).read_text() + "# a dependency fixed\n")
    monkeypatch.setattr(synapse, "lock_path", lambda *_, **__: bumped)
    after = _steps()
    for name in ("synapse-install", "synapse-config"):
        assert after[name].versions != before[name].versions, name
    (lock,) = after["synapse-install"].files
    assert str(lock.content) == bumped.read_text()


# --- the config script's behaviour, run here with stand-ins for systemctl, runuser, curl --------

STUBS = {
    "systemctl": 'echo "systemctl $*" >> "$STUB_LOG"; [ "$1" != is-active ] || [ "${STUB_ACTIVE:-1}" = 1 ]',
    "runuser": 'shift 3; exec "$@"',  # runuser -u USER -- CMD...: run CMD as ourselves
    "curl": '[ "${STUB_HEALTHY:-1}" = 1 ] && echo OK',
    "journalctl": 'echo "journal: last lines"',
    "chown": "true",
    "sleep": "true",
}


def _run_config_script(
    tmp: Path,
    synapse_python: Path,
    *,
    existing_key: str | None,
    changed: bool,
    old_key: str | None = None,
    plant_link_to: Path | None = None,
    healthy: bool = True,
    active: bool = True,
    break_config: bool = False,
    config_overrides: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the real config.sh template against a redirected config, followed by ms_step_done as in its
    bundle; returns the result and the calls. With synapseWorkers in `config_overrides`, the workers'
    files are placed in tmp/workers as the step places them in /etc/matrix-synapse/workers."""
    ctx = make_context(**(config_overrides or {}))
    files = _files({s.name: s for s in synapse.steps(ctx)}["synapse-config"])
    config = _install_for_check(files, tmp)
    worker_dir = tmp / "workers"
    worker_dir.mkdir(exist_ok=True)
    script_values = synapse_workers.script_values(ctx)
    for worker in script_values["workers"]:
        name = worker["name"]
        log_config = worker_dir / f"{name}.log.yaml"
        log_config.write_text(_replace_line(files[f"{synapse_workers.WORKER_CONFIG_DIR}/{name}.log.yaml"],
                                            "filename", str(tmp / f"{name}.log")))
        (worker_dir / f"{name}.yaml").write_text(_replace_line(
            files[f"{synapse_workers.WORKER_CONFIG_DIR}/{name}.yaml"], "worker_log_config", str(log_config)))
    key = tmp / "signing.key"
    key.unlink()
    if existing_key is not None:
        key.write_text(existing_key)
    old = tmp / "synapse-data" / "signing.key"
    old.parent.mkdir(exist_ok=True)
    if old_key is not None:
        old.write_text(old_key)
    if plant_link_to is not None:
        key.symlink_to(plant_link_to)
    if break_config:
        config.write_text(config.read_text().replace('max_upload_size: "50M"', 'max_upload_size: "lots"'))
    staged = tmp / "signing.key.generated"
    staged.write_text(files[synapse.SIGNING_KEY_STAGED])
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bindir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bindir / name).chmod(0o755)
    script = render(
        "synapse/config.sh.j2",
        user="nobody",
        venv=str(synapse_python.parent.parent),
        config=str(config),
        signing_key=str(key),
        old_signing_key=str(old),
        signing_key_staged=str(staged),
        unit_name="matrix-synapse.service",
        health_url="http://127.0.0.1:1/health",
        health_timeout=3,
        # The workers' paths point into tmp, so the script's start and clean-up look only there.
        workers=script_values["workers"],
        worker_config_dir=str(worker_dir),
        worker_unit_file=str(tmp / "matrix-synapse-worker@.service"),
        redis_conf=str(tmp / "redis-matrix-stack.conf"),
        redis_main_conf=str(tmp / "redis.conf"),
        redis_unit="redis-server.service",
    )
    # ms_validated's restore of rejected files is tested with the real prelude (test_prelude.py).
    prelude = ('ms_log() { printf "[log] %s\\n" "$*" >&2; }\nms_changed() { [ "$MS_TEST_CHANGED" = 1 ]; }\n'
               'ms_validated() { "$@"; }\nms_step_done() { echo "step done" >> "$STUB_LOG"; }\n' + prelude_function("ms_enable"))
    log = tmp / "calls.log"
    log.write_text("")
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "MS_TEST_CHANGED": "1" if changed else "0",
        "STUB_HEALTHY": "1" if healthy else "0",
        "STUB_ACTIVE": "1" if active else "0",
    }
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + prelude + script + "\nms_step_done\n"], capture_output=True, text=True,
        env=env, check=False
    )
    return result, log.read_text()


OLD_KEY = "ed25519 a_old000 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"


def test_config_script_places_missing_signing_key(tmp_path: Path, synapse_python: Path) -> None:
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=None, changed=False)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "signing.key"
    assert key.read_text() == FAKE_SECRETS["signing_key"]
    assert key.stat().st_mode & 0o777 == 0o640  # root's, readable by Synapse's group
    # A new key is a new identity: Synapse must restart even though no file changed.
    assert "systemctl restart matrix-synapse.service" in calls and "systemctl enable" in calls


def test_config_script_keeps_existing_signing_key(tmp_path: Path, synapse_python: Path) -> None:
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "signing.key").read_text() == OLD_KEY
    assert "WARNING: keeping the existing signing key" in result.stderr
    output = result.stderr + result.stdout
    assert FAKE_SECRETS["signing_key"].split()[2] not in output and "AAAAAAAA" not in output
    # Nothing changed and Synapse runs: enabled, not restarted, no daemon-reload; the step is done.
    assert "systemctl enable" in calls and "restart" not in calls and "daemon-reload" not in calls
    assert calls.endswith("step done\n")


def test_config_script_moves_the_key_out_of_synapses_directory_once(tmp_path: Path, synapse_python: Path) -> None:
    """A volume from before keeps the key in Synapse's own directory: it is read (as Synapse), checked and
    moved to root's directory, the old copy removed; the generated key is not used."""
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=None, changed=False, old_key=OLD_KEY)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "signing.key").read_text() == OLD_KEY
    assert not (tmp_path / "synapse-data" / "signing.key").exists()
    assert "moved Synapse's signing key" in result.stderr and "restart" in calls


@pytest.mark.parametrize("planted", ["link", "not a key"])
def test_config_script_refuses_what_is_not_a_signing_key(tmp_path: Path, synapse_python: Path, planted: str) -> None:
    """A link at the key's path is refused, and so is an old key that is not an ed25519 key line (what a
    compromised Synapse could leave there): nothing is placed, Synapse is not restarted."""
    secret = tmp_path / "root-secret"
    secret.write_text("dns_cloudflare_api_token = 0123456789abcdef0123456789\n")
    if planted == "link":
        result, calls = _run_config_script(tmp_path, synapse_python, existing_key=None, changed=False,
                                           old_key=None, plant_link_to=secret)
        assert "is not a regular file" in result.stderr
    else:
        result, calls = _run_config_script(tmp_path, synapse_python, existing_key=None, changed=False,
                                           old_key=secret.read_text())
        assert "is not a Synapse signing key" in result.stderr
        assert not (tmp_path / "signing.key").exists()
    assert result.returncode != 0 and "restart" not in calls
    assert "0123456789abcdef" not in result.stderr + result.stdout


def test_config_script_restarts_only_when_changed(tmp_path: Path, synapse_python: Path) -> None:
    key = FAKE_SECRETS["signing_key"]
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=key, changed=True)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert calls.index("daemon-reload") < calls.index("restart")
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=key, changed=False, active=False)
    assert result.returncode == 0, result.stderr
    assert "systemctl start matrix-synapse.service" in calls and "restart" not in calls


def test_config_script_starts_every_worker_and_checks_its_health(tmp_path: Path, synapse_python: Path) -> None:
    """synapseWorkers: each worker's file is validated with the shared one, each worker is enabled and
    started, and the step reaches its end (so a re-run with nothing changed restarts nothing)."""
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=True, active=False,
                                       config_overrides={"synapseWorkers": "true", "dropletSize": "s-2vcpu-4gb"})
    assert result.returncode == 0, result.stderr
    for worker in worker_topology.WORKERS:
        unit = f"matrix-synapse-worker@{worker.name}.service"
        assert f"systemctl enable --quiet {unit}" in calls and f"systemctl start {unit}" in calls
    assert "Synapse workers are running" in result.stderr and calls.endswith("step done\n")


def test_config_script_without_workers_removes_them_and_stops_redis(tmp_path: Path, synapse_python: Path) -> None:
    """synapseWorkers switched off: what the workers left is stopped and removed, Redis is stopped and
    its include taken out of redis.conf, and the step still reaches its end."""
    worker_dir = tmp_path / "workers"
    worker_dir.mkdir()
    for name in ("sync1", "media1"):
        (worker_dir / f"{name}.yaml").write_text(f"worker_name: {name}\n")
        (worker_dir / f"{name}.log.yaml").write_text("version: 1\n")
    (tmp_path / "matrix-synapse-worker@.service").write_text("[Service]\n")
    (tmp_path / "redis-matrix-stack.conf").write_text("requirepass x\n")
    kept = "bind 127.0.0.1 -::1\nport 6379\n"
    (tmp_path / "redis.conf").write_text(
        kept + f"\n# matrix-stack (synapseWorkers)\ninclude {tmp_path}/redis-matrix-stack.conf\n")
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=False)
    assert result.returncode == 0, result.stderr
    for name in ("sync1", "media1"):
        assert f"systemctl disable --now --quiet matrix-synapse-worker@{name}.service" in calls
    assert list(worker_dir.iterdir()) == [] and not (tmp_path / "matrix-synapse-worker@.service").exists()
    assert "systemctl disable --now --quiet redis-server.service" in calls
    assert not (tmp_path / "redis-matrix-stack.conf").exists() and (tmp_path / "redis.conf").read_text() == kept + "\n"
    assert calls.endswith("step done\n")


def test_config_script_validates_before_restart(tmp_path: Path, synapse_python: Path) -> None:
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=True, break_config=True)
    assert result.returncode != 0 and "rejects" in result.stderr
    assert "restart" not in calls and "start" not in calls


def test_config_script_checks_the_config_only_when_the_step_changed(tmp_path: Path, synapse_python: Path) -> None:
    """A re-run with nothing changed does not start Python to check a config it checked when it wrote it (1.7 s
    of a re-run on one CPU): a config Synapse would reject goes unnoticed then, and is refused once changed."""
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=False, break_config=True)
    assert result.returncode == 0 and "rejects" not in result.stderr, result.stderr
    assert calls.endswith("step done\n")


def test_config_script_fails_when_unhealthy(tmp_path: Path, synapse_python: Path) -> None:
    result, calls = _run_config_script(tmp_path, synapse_python, existing_key=OLD_KEY, changed=True, healthy=False)
    assert result.returncode != 0
    assert "journal: last lines" in result.stdout + result.stderr and "did not answer" in result.stderr
    assert "systemctl restart" in calls  # it did restart, then waited for /health in vain


def test_the_config_step_puts_back_the_previous_config_when_synapse_rejects_a_new_one(
    tmp_path: Path, synapse_python: Path
) -> None:
    """The real synapse-config bundle (prelude, files, script) in a sandbox with the real Synapse's config check:
    a first config is accepted; a second one Synapse rejects fails the step, the first is back in place, and
    Synapse is not restarted. (The e2e host proves the same on the real server, test_lifecycle.py.)"""
    (step,) = [s for s in synapse.steps(make_context()) if s.name == "synapse-config"]
    contents = [str(f.content) for f in step.files]
    broken = [c.replace('max_upload_size: "50M"', 'max_upload_size: "lots"') if f.path == paths.SYNAPSE_CONFIG
              else c for f, c in zip(step.files, contents)]
    assert broken != contents
    for i, texts in enumerate((contents, broken), 1):
        (tmp_path / f"b{i}.sh").write_text(bundle_text(step, texts, private_output=True))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in STUBS.items():
        if name != "chown":  # the sandbox's /etc knows matrix-synapse: the real chown runs
            (bindir / name).write_text(f"#!/bin/bash\n{body}\n")
            (bindir / name).chmod(0o755)
    setup = ("useradd --system --no-create-home matrix-synapse\n"  # /etc is the sandbox's overlay
             f"mkdir -p /opt/synapse && ln -s {shlex.quote(str(synapse_python.parent.parent))} /opt/synapse/venv")
    proc = run_bundles_in_sandbox(tmp_path, setup, [tmp_path / "b1.sh", tmp_path / "b2.sh"], paths.SYNAPSE_CONFIG,
                                  tmpfs=["/opt", "/srv", "/var/log", "/run"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {i: (tmp_path / f"out.{i}").read_text() for i in (1, 2)}
    assert (tmp_path / "rc.1").read_text().strip() == "0", out[1][-3000:]
    assert (tmp_path / "rc.2").read_text().strip() != "0"
    assert "Synapse rejects" in out[2] and "the previous config is back in place" in out[2], out[2][-3000:]
    first = (tmp_path / "kept.1").read_text()
    assert first == contents[[f.path for f in step.files].index(paths.SYNAPSE_CONFIG)]
    assert (tmp_path / "kept.2").read_text() == first
    second_run = (tmp_path / "calls").read_text().split("--- bundle 2", 1)[1]
    assert "restart" not in second_run, second_run
