"""A plain (no Pulumi) service context, so each service's files can be rendered and validated."""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from components import paths
from components.cloud.database import DatabaseEndpoint
from components.cloud.media_bucket import MediaBucketEndpoint
from components.cloud.secrets import RtcSecrets, WorkerSecrets
from components.platform import PLATFORMS
from components.services import ServiceContext
from components.settings import load
from tests.pki import origin_pull_pair


def _host_image() -> str:
    """The droplet image of this machine's own Debian: the rendered files are checked by its tools
    (nginx with its stock nginx.conf, PostgreSQL, systemd), so they are rendered for that release.
    The other release is checked on its own test host by the end-to-end suite."""
    release = Path("/etc/os-release").read_text()
    codename = next((line.split("=", 1)[1].strip('"') for line in release.splitlines()
                     if line.startswith("VERSION_CODENAME=")), "")
    return next((f"{p.image_prefix}-x64" for p in PLATFORMS if p.codename == codename), "debian-12-x64")


HOST_IMAGE = _host_image()
BASE_CONFIG = {
    "dropletImage": HOST_IMAGE,
    "domain": "example.org",
    "sshAllowedCidrs": '["203.0.113.7/32", "2001:db8::/48"]',
    "letsencryptEmail": "ops@example.org",
    "certbotCloudflareToken": "cf-token-SECRET-0123456789abcdef",
}

# Recognisable fake secrets: tests look for them where they must not be.
FAKE_SECRETS = {
    "postgres_password": "pgSECRETpassword0123456789",
    "registration_shared_secret": "regSECRETshared0123456789",
    "macaroon_secret": "macSECRETmacaroon0123456789",
    "form_secret": "formSECRETform0123456789",
    "turn_shared_secret": "turnSECRETshared0123456789",
    "admin_password": "adminSECRETpassword0123",
    "signing_key": "ed25519 a_abcdef nXlTrL0cSZ2Xc9r0bFq0gkPq6lS0u3Gm8uZ2N3tIv1c\n",
}


REPEATABLE_UNIT_KEYS = ("SystemCallFilter",)  # systemd combines these; any other repeated key is a mistake


def parse_unit(text: str) -> configparser.ConfigParser:
    """A systemd unit file as sections of keys (case kept, no % interpolation: systemd has its own).
    A repeated key of REPEATABLE_UNIT_KEYS appears as KEY, KEY#2, ..."""
    seen: dict[str, int] = {}
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in REPEATABLE_UNIT_KEYS:
            seen[key] = seen.get(key, 0) + 1
            line = f"{key}#{seen[key]}={value}" if seen[key] > 1 else line
        lines.append(line)
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("\n".join(lines) + "\n")
    return parser


# A real origin-pull CA and client certificate (tests/pki.py), so nginx loads them as on the server.
ORIGIN_PULL_CA, ORIGIN_PULL_CLIENT = origin_pull_pair("template tests")


# database: managed: the cluster as the provider describes it (a password with the characters a libpq
# password file must escape).
MANAGED_ENDPOINT = DatabaseEndpoint(
    host="private-matrix-db-test.b.db.ondigitalocean.com", port=25060, user=paths.POSTGRES_USER,
    password="AVNS_user:pass\\word", admin_user="doadmin", admin_password="AVNS_adminPassword123",
    ca_certificate="-----BEGIN CERTIFICATE-----\nRkFLRSBDQQ==\n-----END CERTIFICATE-----\n",
)


# mediaStorage: spaces: a bucket as the provider describes it (a secret with the characters a
# shell-quoted env file must keep).
SPACES_ENDPOINT = MediaBucketEndpoint(
    bucket="matrix-example-org", region="nyc3", endpoint_url="https://nyc3.digitaloceanspaces.com",
    access_key="DO00TESTACCESSKEY000", secret_key="abc/def+ghi'jkl$mno",
    backup_bucket="matrix-example-org-backups", backup_access_key="DO00TESTBACKUPKEY000",
    backup_secret_key="BackupSecretKeyForTestsOnly/0123+456789",
    backup_encryption_key="QUVTLTI1Ni1HQ00ga2V5IGZvciB0ZXN0cyBvbmx5ISE=",  # base64 of 32 bytes
)


# synapseWorkers: fixed, recognisable values (tests look for them where they must and must not be).
REDIS_PASSWORD = "RedisPasswordForTestsOnly0123456789abcdefghij"
REPLICATION_SECRET = "ReplicationSecretForTestsOnly0123456789abcdefghijklmnopqrstuvwxyz"
WORKER_SECRETS = WorkerSecrets(redis_password=REDIS_PASSWORD, replication_secret=REPLICATION_SECRET)
RTC_SECRETS = RtcSecrets(livekit_secret="LivekitSecretForTestsOnly0123456789abcdefghijklmnopqrstuvwxyzABCD",
                         as_token="AsTokenForTestsOnly0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK",
                         hs_token="HsTokenForTestsOnly0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK")
# A token service pin for contexts with matrixRtc (the stack ships none: setting_table.py).
LK_JWT_SERVICE_TEST_PIN = "ab" * 32


def user_password(localpart: str) -> str:
    """A listed account's fake generated password: recognisable, and different per account."""
    return f"InitialPasswordOf{localpart.replace('.', '').replace('-', '')}ForTests0"


def invitation_token(name: str) -> str:
    return f"InvitationToken{name.replace('-', '')}ForTests"


def make_context(**config: Any) -> ServiceContext:
    """A context for `config` overrides (raw strings, as `pulumi config` stores them)."""
    settings, config_secrets = load({**BASE_CONFIG, **{k: str(v) for k, v in config.items()}}, stack="test")
    return ServiceContext(
        settings=settings,
        deploy_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyForTestsOnly0000000000000000 deploy",
        droplet_ipv4="203.0.113.10",
        droplet_ipv6="2001:db8::10",
        cloudflare_ipv4=["173.245.48.0/20", "103.21.244.0/22"],
        cloudflare_ipv6=["2400:cb00::/32"],
        certbot_token=config_secrets.certbot_cloudflare_token,
        user_passwords={m.localpart: user_password(m.localpart) for m in settings.users},
        invitation_tokens={i.name: invitation_token(i.name) for i in settings.invitations},
        smtp_password=config_secrets.smtp_password,
        origin_pull_ca=ORIGIN_PULL_CA,
        origin_pull_client=ORIGIN_PULL_CLIENT,
        website_on_server_name=False,
        role="main",
        database=MANAGED_ENDPOINT if settings.managed_database else None,
        media=SPACES_ENDPOINT if settings.media_on_spaces else None,
        worker_secrets=WORKER_SECRETS if settings.synapse_workers else None,
        rtc_secrets=RTC_SECRETS if settings.matrix_rtc else None,
        **cast(dict[str, Any], FAKE_SECRETS),
    )


@pytest.fixture
def context_factory() -> Callable[..., ServiceContext]:
    return make_context


@pytest.fixture
def context() -> ServiceContext:
    return make_context()


def with_settings(ctx: ServiceContext, **changes: Any) -> ServiceContext:
    return dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, **changes))


def verify_timer_units(tmp: Path, files: dict[str, Any], command: str, service: str, timer: str, wanted: str) -> None:
    """systemd-analyze verify on a service + timer pair as rendered, the command (`command`) placed
    in `tmp` so ExecStart points at an executable, and the unit it waits for (`wanted`) stubbed."""
    placed = tmp / Path(command).name
    placed.write_text(str(files[command].content))
    placed.chmod(0o755)
    (tmp / service).write_text(str(files[f"/etc/systemd/system/{service}"].content).replace(command, str(placed)))
    (tmp / timer).write_text(str(files[f"/etc/systemd/system/{timer}"].content))
    (tmp / wanted).write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp / timer), str(tmp / service)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def free_tcp_port() -> int:
    """A loopback TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_postgres(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


@contextlib.contextmanager
def postgres_server(port: int, files: dict[str, str] | None = None) -> Iterator[tuple[Path, Path]]:
    """A throwaway cluster of this machine's PostgreSQL (the rendered platform's), with `files` written
    into its data directory, listening on a socket directory only: yields (data dir, socket dir)."""
    binaries = Path(f"/usr/lib/postgresql/{make_context().settings.platform.postgres_major}/bin")
    base = Path(tempfile.mkdtemp(prefix="matrix-stack-pg-", dir="/var/tmp"))  # postgres must traverse it
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres")
    shutil.chown(sock, "postgres")
    assert as_postgres(str(binaries / "initdb"), "-D", str(data), "--locale=C.UTF-8", "-E", "UTF8").returncode == 0
    for name, text in (files or {}).items():
        (data / name).parent.mkdir(exist_ok=True)
        (data / name).write_text(text)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\ninclude_dir = 'conf.d'\nunix_socket_directories = '{sock}'\nport = {port}\n")
    (data / "conf.d").mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", "postgres:postgres", str(data)], check=True)
    started = as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start")
    assert started.returncode == 0, (base / "log").read_text()
    try:
        yield data, sock
    finally:
        as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def prelude_function(name: str) -> str:
    """One function of the real step prelude, for tests that stand in for the rest of it."""
    text = (Path(__file__).resolve().parents[2] / "templates/remote/prelude.sh").read_text()
    start = text.index(f"\n{name}() {{\n") + 1
    return text[start:text.index("\n}\n", start) + 3]
