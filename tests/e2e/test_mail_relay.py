"""The deployed droplet's mail provider: the test host's relay, as Synapse on the droplet would reach it.

The droplet finds the relay by its public name (the DNS stand-in answers it) and trusts its certificate
through the system trust store, as it trusts a real provider's; nothing test-specific is needed in a
client. These run on the shared deployment, so the trust is checked after the program provisioned the
droplet (its package installs may regenerate the system bundle). The relay's own protocol rules are
checked fast, on loopback: tests/unit/test_mail_relay.py.
"""

from __future__ import annotations

import secrets
import shlex

import pytest

from components import paths
from tests.e2e.deployment import Deployment
from tests.e2e.testhost.smtp import STARTTLS_PORT, TLS_PORT, SmtpRelay

pytestmark = pytest.mark.e2e

# Synapse's own SMTP code (synapse.handlers.send_email._sendmail: Twisted's ESMTP client, TLS options from
# optionsForClientTLS, i.e. the system trust store), with the options a provider needs: login and TLS required.
SYNAPSE_SENDMAIL = """
import sys
from twisted.internet import defer, task
from synapse.handlers.send_email import _sendmail

host, port, user, password, to, subject, force_tls = sys.argv[1:]
# As Synapse builds it (email's as_string()): "\\n" line ends, which Twisted's client turns into CRLF.
message = (f"From: Matrix <noreply@example.test>\\nTo: {to}\\nSubject: {subject}\\n\\n"
           "sent by Synapse's mailer\\n").encode()

async def send(reactor):
    await _sendmail(reactor, host, int(port), "noreply@example.test", to, message, username=user.encode(),
                    password=password.encode(), require_auth=True, require_tls=True, force_tls=force_tls == "1")

task.react(lambda reactor: defer.ensureDeferred(send(reactor)))
"""

# The guest's own Python with its default TLS context (the system trust store), as any mail client there.
PYTHON_SENDMAIL = """
import smtplib, ssl, sys
host, port, user, password, to, subject = sys.argv[1:]
context = ssl.create_default_context()
if port == "465":
    smtp = smtplib.SMTP_SSL(host, int(port), context=context, timeout=20)
else:
    smtp = smtplib.SMTP(host, int(port), timeout=20)
    smtp.starttls(context=context)
smtp.login(user, password)
smtp.sendmail("noreply@example.test", [to], f"To: {to}\\r\\nSubject: {subject}\\r\\n\\r\\nfrom the guest\\r\\n")
smtp.quit()
"""


@pytest.fixture(scope="module")
def relay(deployment: Deployment) -> SmtpRelay:
    relay = deployment.host.mail_relay
    assert relay is not None and relay.running
    return relay


def _guest(deployment: Deployment, command: str, stdin: str | None = None) -> tuple[int, str]:
    proc = deployment.host.ssh(command, stdin=stdin.encode() if stdin is not None else None, timeout=120)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


def test_the_relay_is_on_the_host_side_at_the_providers_ports(deployment: Deployment, relay: SmtpRelay) -> None:
    assert (relay.address, relay.starttls_port, relay.tls_port) == (deployment.host.host_side_address, STARTTLS_PORT,
                                                                     TLS_PORT)
    mark = relay.last_seq()
    relay.send("noreply@example.test", "ops@example.test", "over the test network", "hello")
    assert relay.wait_for("ops@example.test", timeout=10, after=mark).subject == "over the test network"
    with relay.tls_client() as smtp:
        assert smtp.noop()[0] == 250


def test_the_droplet_resolves_the_relay_by_its_public_name(deployment: Deployment, relay: SmtpRelay) -> None:
    code, out = _guest(deployment, f"getent ahostsv4 {relay.name}")
    assert code == 0, out
    assert {line.split()[0] for line in out.splitlines()} == {relay.address}


@pytest.mark.parametrize("port", [STARTTLS_PORT, TLS_PORT])
def test_the_droplet_verifies_the_relay_with_its_system_trust_store(deployment: Deployment, relay: SmtpRelay,
                                                                     port: int) -> None:
    starttls = "-starttls smtp" if port == STARTTLS_PORT else ""
    s_client = (f"openssl s_client -connect {relay.name}:{port} {starttls} -servername {relay.name} "
                f"-verify_hostname {relay.name} -verify_return_error -brief")
    code, out = _guest(deployment, f"{s_client} </dev/null")
    assert code == 0 and "Verification: OK" in out, out
    # Without the system store nothing vouches for it: the pass above is the system store's doing.
    code, out = _guest(deployment, f"{s_client} -no-CAfile -no-CApath -no-CAstore </dev/null")
    assert code != 0 and "unable to get local issuer certificate" in out, out
    code, out = _guest(deployment, "cat /usr/local/share/ca-certificates/matrix-stack-e2e-mail.crt")
    assert code == 0 and out == relay.ca_file.read_text()  # kept when update-ca-certificates rebuilds the bundle


@pytest.mark.parametrize("port", [STARTTLS_PORT, TLS_PORT])
def test_the_droplets_python_sends_through_the_relay(deployment: Deployment, relay: SmtpRelay, port: int) -> None:
    to, subject = f"python-{port}@example.test", f"guest python {secrets.token_hex(4)}"
    mark = relay.last_seq()
    args = shlex.join([relay.name, str(port), relay.username, relay.password, to, subject])
    code, out = _guest(deployment, f"python3 - {args}", stdin=PYTHON_SENDMAIL)
    assert code == 0, out
    got = relay.wait_for(to, timeout=30, after=mark)
    assert (got.subject, got.port, got.login) == (subject, port, relay.username)


@pytest.mark.parametrize("port", [STARTTLS_PORT, TLS_PORT])
def test_synapses_mailer_sends_through_the_relay(deployment: Deployment, relay: SmtpRelay, port: int) -> None:
    to, subject = f"synapse-{port}@example.test", f"synapse mailer {secrets.token_hex(4)}"
    mark = relay.last_seq()
    args = shlex.join([relay.name, str(port), relay.username, relay.password, to, subject,
                       "1" if port == TLS_PORT else "0"])
    code, out = _guest(deployment, f"{paths.SYNAPSE_VENV}/bin/python - {args}", stdin=SYNAPSE_SENDMAIL)
    assert code == 0, out
    got = relay.wait_for(to, timeout=30, after=mark)
    assert (got.subject, got.port, got.login) == (subject, port, relay.username)
    (session,) = [s for s in relay.sessions() if any(c.command.startswith("DATA") and c.reply.endswith(f" {got.seq}")
                                                      for c in s.commands)]
    assert session.starttls == (port == STARTTLS_PORT) and session.login == relay.username
