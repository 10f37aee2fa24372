"""The mail relay's own process (aiosmtpd): `python -m tests.e2e.testhost.smtp_server CONFIG.json`.

Started and read by `smtp.SmtpRelay`. A separate process so that a slow or stuck test process never
stalls a mail client (Synapse) mid-session, and so that it is killed like pebble: by its pid file.
It stops by itself when its parent is gone or its lifetime is over.

Like a provider's submission service: on the STARTTLS port nothing but EHLO/HELO, NOOP, QUIT and
STARTTLS is accepted before TLS (aiosmtpd's own check runs before a command is dispatched, where it
cannot be logged: this one is ours); on the implicit-TLS port the connection is TLS from the start.
Every command, its final reply and the login an AUTH tried (never a password) go to the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.smtp import ALLOWED_BEFORE_STARTTLS, SMTP, AuthResult, Envelope, LoginPassword, Session

WATCH_INTERVAL = 0.5
_sessions = itertools.count(1)


class Journal:
    """JSON lines, one per event, flushed at once: the test process reads them while sessions run."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    def write(self, **event: Any) -> None:
        self._file.write(json.dumps({"time": time.time(), **event}) + "\n")
        self._file.flush()


def _login(session: Session | None) -> str | None:
    """The login a session authenticated as, if it did."""
    if session is not None and session.authenticated and isinstance(session.auth_data, LoginPassword):
        return session.auth_data.login.decode(errors="replace")
    return None


def _shown(verb: str, arg: str | None) -> str:
    """A command as the journal keeps it: AUTH without its initial response (it holds the password)."""
    if verb == "AUTH" and arg:
        return f"AUTH {arg.split()[0].upper()}"
    return f"{verb} {arg}" if arg else verb


class Mailbox:
    """aiosmtpd handler: checks logins and keeps every accepted message as <seq>.eml + <seq>.json."""

    def __init__(self, directory: Path, username: str, password: str, journal: Journal) -> None:
        self.directory = directory
        self._username = username.encode()
        self._password = password.encode()
        self._journal = journal
        existing = [int(p.stem) for p in directory.glob("*.eml") if p.stem.isdigit()]
        self._seq = itertools.count(max(existing, default=0) + 1)

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """aiosmtpd authenticator: the one login the test chose; remembers what was tried."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if isinstance(server, RelaySMTP):
            server.tried_login = auth_data.login.decode(errors="replace")
        ok = hmac.compare_digest(auth_data.login, self._username) & hmac.compare_digest(auth_data.password, self._password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        seq = next(self._seq)
        meta = {"seq": seq, "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "login": _login(session),
                "port": server.transport.get_extra_info("sockname")[1] if server.transport else None,
                "peer": list(session.peer) if session.peer else None, "received": time.time()}
        content = envelope.original_content or b""
        (self.directory / f"{seq:06d}.json").write_text(json.dumps(meta))
        # The .eml appears last and whole (rename): its presence means the message is complete.
        partial = self.directory / f".{seq:06d}.eml.part"
        partial.write_bytes(content)
        partial.rename(self.directory / f"{seq:06d}.eml")
        self._journal.write(event="message", session=getattr(server, "session_id", None), **meta)
        return f"250 2.0.0 OK queued as {seq}"


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with our STARTTLS rule and a journal of each command and its final reply."""

    def __init__(self, handler: Mailbox, journal: Journal, *, implicit_tls: bool, **options: Any) -> None:
        with warnings.catch_warnings():
            # On the implicit-TLS port aiosmtpd sees no STARTTLS layer, so AUTH must be allowed "without
            # TLS" there; the connection is TLS regardless (and `secure` below says so).
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(handler, auth_required=True, auth_require_tls=not implicit_tls,
                             authenticator=handler.authenticate, **options)
        self.session_id = next(_sessions)
        self.tried_login: str | None = None
        self._journal = journal
        self._implicit_tls = implicit_tls
        self._reply = ""
        # aiosmtpd 1.4.6 dispatches through this table; wrapping it is the one hook that sees every command.
        self._smtp_methods = {verb: self._guarded(verb, method) for verb, method in self._smtp_methods.items()}

    @property
    def secure(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def _log(self, event: str, **fields: Any) -> None:
        fields.setdefault("tls", self.secure)
        self._journal.write(event=event, session=self.session_id, port=self._port(), login=_login(self.session),
                            **fields)

    def _port(self) -> int | None:
        transport = self._original_transport or self.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return int(sockname[1]) if sockname else None

    def _guarded(self, verb: str, method: Callable[[str | None], Awaitable[None]]) -> Callable[[str | None], Awaitable[None]]:
        async def guarded(arg: str | None) -> None:
            self._reply, self.tried_login = "", None
            error, tls = None, self.secure
            try:
                if self.secure or verb in ALLOWED_BEFORE_STARTTLS:
                    await method(arg)
                else:
                    await self.push("530 5.7.0 Must issue a STARTTLS command first")
            except BaseException as exc:
                error = type(exc).__name__
                raise
            finally:
                extra = {"tried_login": self.tried_login} if verb == "AUTH" else {}
                self._log("command", command=_shown(verb, arg), reply=self._reply, error=error, tls=tls, **extra)
        return guarded

    async def push(self, status: AnyStr) -> None:
        self._reply = status if isinstance(status, str) else status.decode(errors="replace")
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_done = self._original_transport is not None
        super().connection_made(transport)
        if starttls_done:
            self._log("starttls")
        else:
            peer = transport.get_extra_info("peername")
            self._log("connect", peer=list(peer) if peer else None)

    def connection_lost(self, error: Exception | None) -> None:
        with contextlib.suppress(Exception):
            self._log("close")
        super().connection_lost(error)


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(config: dict[str, Any]) -> None:
    """Listen on both ports, announce them in ready.json, run until told to stop or orphaned."""
    state = Path(config["state"])
    journal = Journal(state / "sessions.jsonl")
    mail_dir = state / "mail"
    mail_dir.mkdir(exist_ok=True)
    mailbox = Mailbox(mail_dir, config["username"], config["password"], journal)
    context = _tls_context(config["cert"], config["key"])
    loop = asyncio.get_running_loop()
    common = {"hostname": config["name"], "ident": "matrix-stack e2e mail relay"}

    def starttls() -> RelaySMTP:
        return RelaySMTP(mailbox, journal, implicit_tls=False, tls_context=context, **common)

    def implicit() -> RelaySMTP:
        return RelaySMTP(mailbox, journal, implicit_tls=True, **common)

    servers = [await loop.create_server(starttls, config["address"], config["starttls_port"]),
               await loop.create_server(implicit, config["address"], config["tls_port"], ssl=context)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    ready = state / "ready.json"
    ready.with_suffix(".part").write_text(json.dumps({"pid": os.getpid(), "starttls_port": ports[0], "tls_port": ports[1]}))
    ready.with_suffix(".part").rename(ready)
    journal.write(event="listening", ports=ports)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + float(config["lifetime"])
    parent = int(config["parent_pid"])
    while not stop.is_set():
        if os.getppid() != parent:
            journal.write(event="stopping", reason="parent gone")
            break
        if time.monotonic() > deadline:
            journal.write(event="stopping", reason="lifetime over")
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
    for server in servers:
        server.close()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aiosmtpd warns on every successful AUTH that its own Session.login_data is deprecated.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
