"""A DigitalOcean Managed PostgreSQL cluster, played by a second test host.

What it models (DigitalOcean's documentation, "Managed Databases: PostgreSQL"):
- the cluster listens on port 25060 and accepts TLS connections only; its certificate is for the
  cluster's host name and signed by the cluster's own CA (what `digitalocean.get_database_ca` returns),
  so clients connect with sslmode=verify-full and that CA;
- trusted sources: only the listed addresses may connect at all (here pg_hba.conf: one `hostssl` line
  per source, scram-sha-256, nothing else but the local superuser);
- `doadmin` is the admin user: LOGIN CREATEDB CREATEROLE but not a superuser; `defaultdb` is its
  database; `digitalocean.DatabaseUser` creates a plain LOGIN role with a password;
- connection limit: 25 per GiB of memory, 3 of them reserved for the superuser (the 1 GiB size here).

One difference on purpose: an empty trusted-sources list lets nobody in here (DigitalOcean then allows
every address). Passwords never appear on a command line: SQL goes to psql on stdin, and a role's
password is sent as a SCRAM-SHA-256 verifier computed here, so the server never sees the plaintext.

The guests reach each other over the machine like droplets in one VPC: `share_private_network` routes
each guest's own address to the other through the machine, which forwards between just those two
veths; no NAT, so the cluster sees the droplet's own address and its /32 trusted source applies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests import pki
from tests.e2e.testhost import TestHost
from tests.e2e.testhost._proc import run
from tests.e2e.testhost.network import Addresses

MANAGED_PORT = 25060
MAX_CONNECTIONS = 25  # the 1 GiB size: DigitalOcean allows 25 connections per GiB
SUPERUSER_RESERVED = 3
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def share_private_network(addr: Addresses, other: Addresses) -> None:
    """Let two guests reach each other's own address (a VPC's private network), routed by the machine.

    Each guest gets a /32 route to the other's address via its host-side address; the machine
    forwards only packets that arrive on these two veths (IPv4 forwarding is decided per receiving
    interface, so net.ipv4.ip_forward and every other interface stay as they are). Both go away with
    the hosts' namespaces and veths.
    """
    for this, that in ((addr, other), (other, addr)):
        Path(f"/proc/sys/net/ipv4/conf/{this.host_if}/forwarding").write_text("1\n")
        run(["ip", "-n", this.netns, "route", "replace", f"{that.guest}/32", "via", this.host_side], timeout=30)


def leave_private_network(addr: Addresses, other: Addresses) -> None:
    """Undo share_private_network for `addr`, whose guest lives on (the other one is destroyed)."""
    Path(f"/proc/sys/net/ipv4/conf/{addr.host_if}/forwarding").write_text("0\n")
    run(["ip", "-n", addr.netns, "route", "del", f"{other.guest}/32"], timeout=30, check=False)


def bare_host(index: int, identity_file: Path, name: str, volume_image: Path) -> TestHost:
    """A booted test host with nothing deployed (a blank volume), reachable with `identity_file`;
    destroy(keep_volume=False) removes it and its volume image."""
    host = TestHost(index, Path(f"{identity_file}.pub").read_text(), name, "example.test", volume_image,
                    identity_file=identity_file, volume_filesystem=None)
    host.boot()
    return host


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it); for an ASCII password SASLprep changes nothing."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def password_sql(password: str) -> str:
    """The PASSWORD clause: a verifier for ASCII passwords, else the literal (still only on stdin)."""
    return f"PASSWORD {literal(scram_verifier(password) if password.isascii() else password)}"


def hba_sources(allowed: list[str]) -> list[str]:
    """The trusted sources as pg_hba.conf addresses: an address becomes its /32 (/128), a CIDR stays."""
    return [str(ipaddress.ip_network(entry if "/" in entry else f"{entry}/{ipaddress.ip_address(entry).max_prefixlen}",
                                     strict=True)) for entry in allowed]


@dataclass
class ManagedCluster:
    """A second test host that plays a DigitalOcean Managed PostgreSQL cluster."""

    host: TestHost  # already booted by the caller (bare_host)
    hostname: str  # the cluster's private host name; the server certificate is for this name
    admin_password: str  # doadmin's
    ca_pem: str = ""  # filled by start(): the test CA certificate, what digitalocean.get_database_ca returns
    admin_user: str = "doadmin"
    major: str = ""  # filled by start(): the guest release's PostgreSQL major version ("17" on trixie)
    start_seconds: float = 0.0  # how long start() took
    phases: dict[str, float] = field(default_factory=dict)  # start()'s parts, seconds

    def __post_init__(self) -> None:
        if not _HOSTNAME.match(self.hostname):
            raise ValueError(f"not a host name: {self.hostname!r}")

    # -- guest helpers ----------------------------------------------------------------------------
    def _guest(self, cmd: str, stdin: bytes | None = None, timeout: float = 300) -> str:
        proc = self.host.ssh(cmd, stdin=stdin, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"managed cluster {self.host.address}: {cmd!r} exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
        return proc.stdout.decode().rstrip("\n")

    def _put(self, path: str, content: str, mode: str, owner: str = "root") -> None:
        """Write a file in the guest from stdin (never argv), with its mode and owner set before it appears."""
        quoted = shlex.quote(path)
        self._guest(f"umask 077 && cat > {quoted}.new && chown {owner}:{owner} {quoted}.new && "
                    f"chmod {mode} {quoted}.new && mv -f {quoted}.new {quoted}", stdin=content.encode())

    @property
    def config_dir(self) -> str:
        return f"/etc/postgresql/{self.major}/main"

    @property
    def service(self) -> str:
        return f"postgresql@{self.major}-main.service"

    # -- the cluster ------------------------------------------------------------------------------
    def start(self, allowed: list[str]) -> None:
        """Install the release's PostgreSQL and make it the managed cluster, trusting `allowed` only."""
        began = time.monotonic()
        sources = hba_sources(allowed)
        self.host.wait_first_boot_apt()
        self.phases["wait for first-boot apt"] = time.monotonic() - began
        self._guest("export DEBIAN_FRONTEND=noninteractive; apt-get -q update && "
                    "apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends postgresql "
                    "postgresql-client", timeout=900)
        self.phases["apt-get install"] = time.monotonic() - began - sum(self.phases.values())
        majors = self._guest("ls /usr/lib/postgresql").split()
        self.major = max((m for m in majors if m.isdigit()), key=int)
        if self._guest(f"test -d {self.config_dir} && echo yes || true").strip() != "yes":
            self._guest(f"pg_createcluster {self.major} main")

        ca_key = pki.private_key_pem(f"managed-db|{uuid.uuid4()}|ca")
        self.ca_pem = pki.self_signed_cert(f"managed-db|{self.hostname}|{uuid.uuid4()}", ca_key,
                                           {"common_name": f"{self.hostname} CA", "organization": "managed-db e2e"},
                                           True, ["cert_signing", "crl_signing", "digital_signature"], 24 * 3650)
        cert, key = pki.server_cert(f"managed-db|{uuid.uuid4()}", ca_key, self.ca_pem, [self.hostname])
        self._put(f"{self.config_dir}/managed-server.crt", cert, "0644")
        self._put(f"{self.config_dir}/managed-server.key", key, "0600", owner="postgres")
        self._put(f"{self.config_dir}/conf.d/50-managed.conf", (
            "# e2e: a DigitalOcean Managed PostgreSQL cluster (tests/e2e/managed_db.py)\n"
            "listen_addresses = '*'\n"
            f"port = {MANAGED_PORT}\n"
            "ssl = on\n"
            f"ssl_cert_file = '{self.config_dir}/managed-server.crt'\n"
            f"ssl_key_file = '{self.config_dir}/managed-server.key'\n"
            "ssl_min_protocol_version = 'TLSv1.2'\n"
            "password_encryption = 'scram-sha-256'\n"
            f"max_connections = {MAX_CONNECTIONS}\n"
            f"superuser_reserved_connections = {SUPERUSER_RESERVED}\n"
            "log_connections = on\n"), "0644", owner="postgres")
        self._write_hba(sources)
        self._guest(f"systemctl restart {self.service} && "
                    f"for _ in $(seq 60); do pg_isready -q -h /var/run/postgresql -p {MANAGED_PORT} && exit 0; "
                    "sleep 0.5; done; exit 1", timeout=120)
        self.sql(f"""
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(self.admin_user)}) AS admin_exists \\gset
\\if :admin_exists
ALTER ROLE {identifier(self.admin_user)} LOGIN CREATEDB CREATEROLE NOSUPERUSER {password_sql(self.admin_password)};
\\else
CREATE ROLE {identifier(self.admin_user)} LOGIN CREATEDB CREATEROLE NOSUPERUSER {password_sql(self.admin_password)};
\\endif
SELECT 'CREATE DATABASE defaultdb OWNER {identifier(self.admin_user)}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'defaultdb') \\gexec
""", database="postgres")
        self.start_seconds = time.monotonic() - began
        self.phases["configure, restart, roles"] = self.start_seconds - sum(self.phases.values())

    def _write_hba(self, sources: list[str]) -> None:
        lines = ["# e2e: the managed cluster's trusted sources (tests/e2e/managed_db.py); anything else is",
                 "# rejected: no line matches it.",
                 "local   all  postgres  peer"]
        lines += [f"hostssl all  all       {source:<20} scram-sha-256" for source in sources]
        self._put(f"{self.config_dir}/pg_hba.conf", "\n".join(lines) + "\n", "0640", owner="postgres")

    def create_user(self, name: str, password: str) -> None:
        """What DigitalOcean's API does for a digitalocean.DatabaseUser: a LOGIN role with the password
        (an existing role gets the new password)."""
        self.sql(f"""
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal(name)}) AS user_exists \\gset
\\if :user_exists
ALTER ROLE {identifier(name)} LOGIN {password_sql(password)};
\\else
CREATE ROLE {identifier(name)} LOGIN {password_sql(password)};
\\endif
""", database="postgres")

    def sql(self, statement: str, database: str = "defaultdb") -> str:
        """Run SQL as the guest's postgres superuser (stdin, local socket); psql's -At output."""
        cmd = (f"runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -h /var/run/postgresql -p {MANAGED_PORT} "
               f"-d {shlex.quote(database)}")
        proc = self.host.ssh(cmd, stdin=statement.encode(), timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"managed cluster {self.host.address}: psql on {database} exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
        return proc.stdout.decode().rstrip("\n")
