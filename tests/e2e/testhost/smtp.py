"""A mail provider's submission relay for a test host: where Synapse on the "droplet" sends its mail.

The relay (smtp_server.py, aiosmtpd in a process of its own) listens on the host side of a test
host's network (198.18.0.0/15) or on loopback, nowhere else: 587 with STARTTLS required before AUTH
and MAIL, 465 with implicit TLS; AUTH PLAIN and LOGIN with the one login the test chose; a
certificate for a DNS name (smtp.mail.test) from a CA made here, which the guest trusts the way a
real provider's public certificate is trusted. Files in `state`:
  ca.pem, cert.pem, key.pem    the CA (trust it to verify the relay) and the relay's certificate
  mail/<seq>.eml, <seq>.json   each accepted message as received, and its envelope
  sessions.jsonl               every connection, command and final reply (refused AUTH too; no passwords)
  smtp.log, smtp.pid           the process's stderr, and its pid for cleanup after a crash
"""

from __future__ import annotations

import email
import email.policy
import functools
import ipaddress
import json
import os
import secrets
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests import pki

from ._proc import pids_matching, stop_popen, terminate, wait_until

SERVER_MODULE = "tests.e2e.testhost.smtp_server"
REPO_ROOT = Path(__file__).resolve().parents[3]
STARTTLS_PORT = 587
TLS_PORT = 465
DEFAULT_NAME = "smtp.mail.test"
DEFAULT_USERNAME = "matrix@mail.test"
# A backstop only: the relay also stops when its parent (the test process) is gone.
LIFETIME = 12 * 3600.0
START_TIMEOUT = 15.0
TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def check_address(address: str) -> None:
    """Refuse to listen anywhere but a test network's host side or loopback (no real traffic)."""
    ip = ipaddress.ip_address(address)
    if not (ip.is_loopback or ip in TEST_NETWORK):
        raise ValueError(f"the mail relay listens only on loopback or in {TEST_NETWORK}, not on {address}")


@dataclass(frozen=True)
class Message:
    """One accepted message: its envelope and the parsed message (email.policy.default)."""

    seq: int
    path: Path
    mail_from: str
    rcpt_tos: tuple[str, ...]
    login: str | None  # the AUTH login it was sent with
    port: int
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def body(self, subtype: str = "plain") -> str:
        """The text/<subtype> part ("plain" or "html"), decoded; "" if there is none."""
        part = self.message.get_body(preferencelist=(subtype,))
        return str(part.get_content()) if part is not None else ""


@dataclass(frozen=True)
class Command:
    command: str  # "AUTH PLAIN" (never its credentials), "MAIL FROM:<a@b>", ...
    reply: str  # the final reply line, e.g. "535 5.7.8 Authentication credentials invalid"
    tls: bool  # whether the connection was encrypted when the command came
    tried_login: str | None = None  # for AUTH: the login the client tried

    @property
    def code(self) -> int:
        return int(self.reply[:3]) if self.reply[:3].isdigit() else 0


@dataclass(frozen=True)
class Session:
    """One client connection as the journal saw it."""

    id: int
    port: int | None
    peer: str | None
    commands: tuple[Command, ...]
    login: str | None  # the login it authenticated as, if any
    starttls: bool
    closed: bool

    @property
    def refused_auth(self) -> list[Command]:
        return [c for c in self.commands if c.command.startswith("AUTH") and c.code != 235]


class RelayClient(smtplib.SMTP):
    """smtplib.SMTP that reaches the relay's name at its address, as the guest's DNS answers, so
    STARTTLS verifies the certificate against that name."""

    def __init__(self, address: str, name: str, port: int, timeout: float = 10) -> None:
        self._address = address
        super().__init__(name, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's connection hook (private, stable since Python 3.3): connect to the address, keep the name.
        sock: socket.socket = super()._get_socket(self._address, port, timeout)  # type: ignore[misc]
        return sock


class RelayTLSClient(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL (implicit TLS) reaching the relay's name at its address."""

    def __init__(self, address: str, name: str, port: int, context: ssl.SSLContext, timeout: float = 10) -> None:
        self._address = address
        super().__init__(name, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's connection hook (private, stable since Python 3.3): connect to the address, keep the name.
        sock: socket.socket = super()._get_socket(self._address, port, timeout)  # type: ignore[misc]
        return sock


def make_tls(state: Path, name: str) -> Path:
    """A fresh CA and a certificate for `name` signed by it (tests/pki.py, as the edge's); returns the CA file."""
    identity = f"smtp relay {state.resolve()} {time.time_ns()}"
    ca_key = pki.private_key_pem(f"{identity} CA")
    ca = pki.self_signed_cert(f"{identity} CA", ca_key, {"common_name": "matrix-stack e2e mail relay CA"}, True,
                              ["cert_signing", "crl_signing", "digital_signature"], 24 * 365)
    cert, key = pki.server_cert(identity, ca_key, ca, [name])
    (state / "ca.pem").write_text(ca)
    (state / "cert.pem").write_text(cert)
    key_file = state / "key.pem"
    key_file.touch(mode=0o600)
    key_file.write_text(key)
    return state / "ca.pem"


def _is_ours(config: Path, argv: list[str]) -> bool:
    return argv[1:4] == ["-m", SERVER_MODULE, str(config)]


class SmtpRelay:
    """The relay for one test host: `start()` it, send mail to it, read what arrived, `stop()` it."""

    def __init__(self, address: str, state: Path, *, name: str = DEFAULT_NAME, username: str = DEFAULT_USERNAME,
                 password: str | None = None, starttls_port: int = STARTTLS_PORT, tls_port: int = TLS_PORT,
                 lifetime: float = LIFETIME) -> None:
        check_address(address)
        self.address = address
        self.state = state
        self.name = name  # the DNS name its certificate is for
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.starttls_port = starttls_port  # 0 picks a free port; the real one is known after start()
        self.tls_port = tls_port
        self.lifetime = lifetime
        self.ca_file = state / "ca.pem"
        self.mail_dir = state / "mail"
        self.journal_file = state / "sessions.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Make the certificates, start the process and wait (bounded) until both ports listen."""
        self.state.mkdir(parents=True, exist_ok=True)
        ready = self.state / "ready.json"
        ready.unlink(missing_ok=True)
        if not all((self.state / f).exists() for f in ("ca.pem", "cert.pem", "key.pem")):
            make_tls(self.state, self.name)  # once: a restarted relay stays trusted by the guest that took its CA
        config = self.state / "config.json"
        config.touch(mode=0o600)  # it holds the password
        config.write_text(json.dumps({
            "state": str(self.state), "address": self.address, "name": self.name,
            "username": self.username, "password": self.password,
            "starttls_port": self.starttls_port, "tls_port": self.tls_port,
            "cert": str(self.state / "cert.pem"), "key": str(self.state / "key.pem"),
            "parent_pid": os.getpid(), "lifetime": self.lifetime,
        }))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
        with open(self.state / "smtp.log", "ab") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", SERVER_MODULE, str(config)], cwd=REPO_ROOT,
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
        (self.state / "smtp.pid").write_text(str(self._proc.pid))
        try:
            wait_until(f"mail relay on {self.address}", functools.partial(self._ready, ready), START_TIMEOUT,
                       interval=0.02)
        except BaseException:
            self.stop()
            raise
        ports = json.loads(ready.read_text())
        self.starttls_port, self.tls_port = int(ports["starttls_port"]), int(ports["tls_port"])

    def _ready(self, ready: Path) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            tail = (self.state / "smtp.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the mail relay exited {self._proc.returncode}: {tail}")
        return ready.exists()

    def stop(self) -> None:
        if self._proc is not None:
            stop_popen(self._proc, grace=5)
            self._proc = None
        (self.state / "smtp.pid").unlink(missing_ok=True)

    @staticmethod
    def kill_leftovers(state: Path) -> None:
        """Kill the relay of a crashed run, by the pid file it left and its exact argv."""
        pid_file = state / "smtp.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text() or 0)
            if pid in pids_matching(functools.partial(_is_ours, state / "config.json")):
                terminate(pid, grace=5)
            pid_file.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- what arrived ---------------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """Every accepted message so far, oldest first."""
        found = []
        for path in sorted(self.mail_dir.glob("*.eml")) if self.mail_dir.is_dir() else []:
            meta = json.loads(path.with_suffix(".json").read_text())
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(Message(seq=int(meta["seq"]), path=path, mail_from=meta["mail_from"],
                                 rcpt_tos=tuple(meta["rcpt_tos"]), login=meta["login"], port=int(meta["port"]),
                                 message=parsed))
        return found

    def last_seq(self) -> int:
        """The newest message's number: pass it to wait_for(after=) to wait for a newer one."""
        messages = self.messages()
        return messages[-1].seq if messages else 0

    def wait_for(self, recipient: str, timeout: float = 60, *, after: int = 0) -> Message:
        """The first message newer than `after` with `recipient` among its envelope recipients (the
        address case-insensitively); polls, and fails after `timeout` seconds."""
        wanted = recipient.lower()
        found: list[Message] = []

        def arrived() -> bool:
            found[:] = [m for m in self.messages() if m.seq > after and wanted in (r.lower() for r in m.rcpt_tos)]
            return bool(found)

        wait_until(f"mail to {recipient} at the relay {self.name}", arrived, timeout, interval=0.2)
        return found[0]

    def events(self) -> list[dict[str, Any]]:
        """The raw journal, one dict per event."""
        if not self.journal_file.exists():
            return []
        return [json.loads(line) for line in self.journal_file.read_text().splitlines() if line.strip()]

    def sessions(self) -> list[Session]:
        """Every connection so far, with its commands and replies, oldest first."""
        raw: dict[int, dict[str, Any]] = {}
        for event in self.events():
            sid = event.get("session")
            if sid is None:
                continue
            entry = raw.setdefault(sid, {"port": event.get("port"), "peer": None, "commands": [], "login": None,
                                         "starttls": False, "closed": False})
            kind = event["event"]
            if kind == "connect":
                peer = event.get("peer")
                entry["peer"] = peer[0] if peer else None
            elif kind == "command":
                entry["commands"].append(Command(event["command"], event["reply"], event["tls"],
                                                 event.get("tried_login")))
            elif kind == "starttls":
                entry["starttls"] = True
            elif kind == "close":
                entry["closed"] = True
            entry["login"] = entry["login"] or event.get("login")
        return [Session(id=sid, port=e["port"], peer=e["peer"], commands=tuple(e["commands"]), login=e["login"],
                        starttls=e["starttls"], closed=e["closed"]) for sid, e in sorted(raw.items())]

    # -- clients ----------------------------------------------------------------------------------
    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts only the relay's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, timeout: float = 10) -> RelayClient:
        """A plain connection to the STARTTLS port (call starttls(context=...) on it)."""
        return RelayClient(self.address, self.name, self.starttls_port, timeout)

    def tls_client(self, context: ssl.SSLContext | None = None, timeout: float = 10) -> RelayTLSClient:
        """An implicit-TLS connection to the TLS port, verified with `context` (default: the relay's CA)."""
        return RelayTLSClient(self.address, self.name, self.tls_port, context or self.tls_context(), timeout)

    def send(self, mail_from: str, to: str, subject: str, body: str) -> None:
        """Submit one message as a mail client would: STARTTLS, AUTH, send."""
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = mail_from, to, subject
        msg.set_content(body)
        with self.client() as smtp:
            smtp.starttls(context=self.tls_context())
            smtp.login(self.username, self.password)
            smtp.send_message(msg)
