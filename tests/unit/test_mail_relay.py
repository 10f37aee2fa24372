"""The e2e mail relay on loopback (no test host, no root): it must behave like a mail provider's submission
service, or a deployment test that "sends mail" would pass against a relay that accepts anything.

STARTTLS before AUTH and MAIL on the submission port, implicit TLS on the other, only the chosen login,
a certificate that verifies against the relay's CA and nothing else, every message kept as a .eml, and a
journal that shows refused attempts. The ports are free ones picked by the kernel (587 and 465 need root).
"""

from __future__ import annotations

import base64
import contextlib
import json
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e.testhost._proc import wait_until
from tests.e2e.testhost.smtp import REPO_ROOT, SmtpRelay

USER, PASSWORD = "matrix@mail.test", "correct horse battery staple"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpRelay]:
    server = SmtpRelay("127.0.0.1", tmp_path / "relay", username=USER, password=PASSWORD, starttls_port=0, tls_port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _message(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Matrix <noreply@example.test>", to, subject
    msg.set_content(f"body of {subject}")
    return msg


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_then_auth_then_send_stores_the_message(relay: SmtpRelay, mechanism: str) -> None:
    with relay.client() as smtp:
        smtp.starttls(context=relay.tls_context())
        smtp.ehlo()
        smtp.user, smtp.password = USER, PASSWORD
        code, _ = smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
        assert code == 235
        smtp.send_message(_message("Alice <alice@example.test>", f"reset via {mechanism}"))
    got = relay.wait_for("ALICE@example.test", timeout=5)
    assert got.subject == f"reset via {mechanism}"
    assert got.body().strip() == f"body of reset via {mechanism}"
    assert (got.mail_from, got.rcpt_tos, got.login, got.port) == ("noreply@example.test", ("alice@example.test",),
                                                                   USER, relay.starttls_port)
    assert got.path.parent == relay.mail_dir and got.path.suffix == ".eml"
    (session,) = relay.sessions()
    assert session.starttls and session.login == USER
    assert [c.command for c in session.commands][:2] == ["EHLO [127.0.0.1]", "STARTTLS"]


def test_auth_and_mail_before_starttls_are_refused(relay: SmtpRelay) -> None:
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    with relay.client() as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 530
        assert smtp.docmd("AUTH", "LOGIN")[0] == 530
        assert smtp.docmd("MAIL", "FROM:<noreply@example.test>")[0] == 530
        assert smtp.docmd("RCPT", "TO:<alice@example.test>")[0] == 530
    assert relay.messages() == []
    (session,) = relay.sessions()
    assert not session.starttls and session.login is None
    assert [(c.command, c.code, c.tls) for c in session.refused_auth] == [("AUTH PLAIN", 530, False),
                                                                           ("AUTH LOGIN", 530, False)]
    assert PASSWORD not in relay.journal_file.read_text() and plain not in relay.journal_file.read_text()


def test_a_wrong_password_or_user_is_refused_and_mail_needs_auth(relay: SmtpRelay) -> None:
    with relay.client() as smtp:
        smtp.starttls(context=relay.tls_context())
        smtp.ehlo()
        for user, password in ((USER, "wrong"), ("someone@mail.test", PASSWORD)):
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                smtp.login(user, password)
            assert refused.value.smtp_code == 535
        assert smtp.docmd("MAIL", "FROM:<noreply@example.test>")[0] == 530
    assert relay.messages() == []
    (session,) = relay.sessions()
    assert session.login is None
    # smtplib tries PLAIN, then LOGIN, for each login
    assert [(c.command, c.code, c.tried_login) for c in session.refused_auth] == [
        ("AUTH PLAIN", 535, USER), ("AUTH LOGIN", 535, USER),
        ("AUTH PLAIN", 535, "someone@mail.test"), ("AUTH LOGIN", 535, "someone@mail.test")]


def test_implicit_tls_port(relay: SmtpRelay) -> None:
    with relay.tls_client() as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and "PLAIN" in smtp.esmtp_features["auth"]
        smtp.login(USER, PASSWORD)
        smtp.send_message(_message("bob@example.test", "over implicit TLS"))
    got = relay.wait_for("bob@example.test", timeout=5)
    assert (got.subject, got.port, got.login) == ("over implicit TLS", relay.tls_port, USER)
    (session,) = relay.sessions()
    assert all(c.tls for c in session.commands)


def test_the_certificate_verifies_against_the_relay_ca_only(relay: SmtpRelay) -> None:
    cert = x509.load_pem_x509_certificate((relay.state / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [relay.name] and not names.get_values_for_type(x509.IPAddress)
    with relay.tls_client(context=relay.tls_context()) as smtp:
        assert smtp.noop()[0] == 250
    system_only = ssl.create_default_context()  # this machine's trust store, without the relay's CA
    with relay.client() as smtp, pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        smtp.starttls(context=system_only)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        relay.tls_client(context=system_only)
    # The relay's CA, but another name than the certificate's: refused too.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"), \
            smtplib.SMTP_SSL(relay.address, relay.tls_port, context=relay.tls_context(), timeout=10):
        pass


def test_wait_for_skips_older_messages_and_times_out(relay: SmtpRelay) -> None:
    relay.send("noreply@example.test", "carol@example.test", "first", "one")
    mark = relay.last_seq()
    assert relay.wait_for("carol@example.test", timeout=5).subject == "first"
    with pytest.raises(TimeoutError):
        relay.wait_for("carol@example.test", timeout=0.5, after=mark)
    relay.send("noreply@example.test", "carol@example.test", "second", "two")
    assert relay.wait_for("carol@example.test", timeout=5, after=mark).subject == "second"


def test_a_restarted_relay_keeps_its_ca_and_ports(relay: SmtpRelay) -> None:
    """The guest trusts the CA it was given at boot: a relay stopped and started (the self-check's
    unreachable-relay test) must still verify against it, on the same ports."""
    ca, ports = relay.ca_file.read_bytes(), (relay.starttls_port, relay.tls_port)
    relay.stop()
    relay.start()
    assert relay.ca_file.read_bytes() == ca and (relay.starttls_port, relay.tls_port) == ports
    with relay.client() as smtp:
        smtp.starttls(context=relay.tls_context())
        smtp.login(USER, PASSWORD)
        smtp.send_message(_message("dave@example.test", "after restart"))
    assert relay.wait_for("dave@example.test", timeout=5).subject == "after restart"


@pytest.mark.parametrize("address", ["0.0.0.0", "10.0.0.1", "192.0.2.1", "::"])
def test_it_listens_only_on_loopback_or_the_test_network(address: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only on loopback"):
        SmtpRelay(address, tmp_path)
    SmtpRelay("198.19.255.1", tmp_path)  # the test networks' range (not started)


@contextlib.contextmanager
def _started_in_child(state: Path, *, linger: float) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A test process of its own that starts a relay (and never stops it), then lingers: it and the relay's pid."""
    script = ("import sys, time; from pathlib import Path; from tests.e2e.testhost.smtp import SmtpRelay; "
              "SmtpRelay('127.0.0.1', Path(sys.argv[1]), starttls_port=0, tls_port=0).start(); "
              "print('started', flush=True); time.sleep(float(sys.argv[2]))")
    with subprocess.Popen([sys.executable, "-c", script, str(state), str(linger)], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"started\n"
            yield child, int((state / "smtp.pid").read_text())
        finally:
            child.kill()


def test_it_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    with _started_in_child(tmp_path, linger=0) as (child, pid):
        child.wait(timeout=10)
        try:
            wait_until("the orphaned relay to exit", lambda: not _alive(pid), timeout=5, interval=0.1)
        finally:
            SmtpRelay.kill_leftovers(tmp_path)  # if it failed to
    assert json.loads((tmp_path / "sessions.jsonl").read_text().splitlines()[-1])["reason"] == "parent gone"


def test_it_stops_after_its_lifetime(tmp_path: Path) -> None:
    relay = SmtpRelay("127.0.0.1", tmp_path, starttls_port=0, tls_port=0, lifetime=0.5)
    relay.start()
    try:
        wait_until("the relay to reach its lifetime", lambda: not relay.running, timeout=5, interval=0.1)
    finally:
        relay.stop()
    assert relay.events()[-1]["reason"] == "lifetime over"


def test_cleanup_kills_a_crashed_runs_relay_by_its_pid_file(tmp_path: Path) -> None:
    with _started_in_child(tmp_path, linger=60) as (_, pid):
        assert _alive(pid)
        SmtpRelay.kill_leftovers(tmp_path / "elsewhere")  # another host's state: not this one
        assert _alive(pid)
        started = time.monotonic()
        SmtpRelay.kill_leftovers(tmp_path)
        assert not _alive(pid) and time.monotonic() - started < 5
        assert not (tmp_path / "smtp.pid").exists()
