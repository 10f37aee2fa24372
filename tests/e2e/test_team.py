"""The team on the deployed server, as its people meet it: listed accounts signing in with the outputs'
passwords, a taken-off account locked and a put-back one unlocked, an invitation admitting exactly its uses,
Element's password reset by mail and a missed-message mail, through the Cloudflare edge stand-in and a real SMTP
relay (STARTTLS, a login, a certificate the droplet trusts for the relay's name; tests/e2e/testhost/smtp.py).

The module turns the team and mail settings on with one `pulumi up` and off again at its end, so the other tests
see the host as first provisioned.
"""

from __future__ import annotations

import html.parser
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.deployment import Deployment
from tests.e2e.runner import StepResult
from tests.e2e.test_cloudflare import edge_request
from tests.e2e.testhost.smtp import SmtpRelay

pytestmark = pytest.mark.e2e

RATE_LIMIT_RETRIES, RATE_LIMIT_WAIT_MS = 5, 20_000
MINUTES = 1  # mailNotificationMinutes: the shortest wait before a missed-message mail
TEAM_SETTINGS = ("users", "invitations", "enableRegistration", "smtpHost", "smtpPort", "smtpUser", "smtpPassword",
                 "mailFrom", "mailNotificationMinutes")


def relay_of(deployment: Deployment) -> SmtpRelay:
    relay = deployment.host.mail_relay
    assert relay is not None and relay.running, "the test host has no mail relay"
    return relay


def team_config(deployment: Deployment, users: list[Any]) -> dict[str, Any]:
    relay = relay_of(deployment)
    return {
        "users": users,
        "enableRegistration": True,
        "invitations": [{"name": "crew", "uses": 2, "expires": "2099-12-31"}],
        "smtpHost": relay.name, "smtpPort": relay.starttls_port, "smtpUser": relay.username,
        "smtpPassword": relay.password, "mailFrom": f"Chat <chat@{deployment.domain}>",
        "mailNotificationMinutes": MINUTES,
    }


USERS: list[Any] = [{"localpart": "ada", "email": "ada@people.test", "displayName": "Ada"},
                    {"localpart": "ben", "admin": True, "email": "ben@people.test"}, "cy"]


@pytest.fixture(scope="module")
def team(deployment: Deployment) -> Iterator[tuple[set[str], list[StepResult]]]:
    changed, results = deployment.apply_changes(**team_config(deployment, USERS))
    try:
        yield changed, results
    finally:
        deployment.apply_changes(**dict.fromkeys(TEAM_SETTINGS))


def output(deployment: Deployment, name: str) -> Any:
    assert deployment.recording is not None
    value, secret = deployment.recording.stack_outputs[name]
    assert secret is True
    return value


# Each person asks from an address of their own, as teammates do: Synapse allows 5 sign-ins per address, then one
# per 5.5 minutes (rc_login.address), and nginx takes the address Cloudflare reports (CF-Connecting-IP).
PEOPLE = ("ada", "ben", "cy", "dee", "eve", "fay", "nobody")


def address_of(person: str) -> str:
    return f"127.0.0.{100 + PEOPLE.index(person)}"


def client_api(deployment: Deployment, person: str, method: str, path: str, body: Any = None,
               token: str = "") -> tuple[int, dict[str, Any]]:
    """A client-server API request by `person` through the edge, as Element sends it; a short rate limit is waited
    out as matrix-js-sdk does, a long one is returned."""
    headers = {"Content-Type": "application/json", "User-Agent": "Element e2e",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    for _ in range(RATE_LIMIT_RETRIES):
        status, _, answer = edge_request(deployment, f"matrix.{deployment.domain}", path, method=method,
                                         headers=headers, body=json.dumps(body).encode() if body is not None else None,
                                         source=address_of(person))
        reply = json.loads(answer or b"{}")
        if status != 429 or reply.get("retry_after_ms", 0) > RATE_LIMIT_WAIT_MS:
            break
        time.sleep(reply.get("retry_after_ms", 1000) / 1000 + 0.1)
    return status, reply


def password_login(deployment: Deployment, user: str, password: str) -> tuple[int, dict[str, Any]]:
    return client_api(deployment, user, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})


def access_token(deployment: Deployment, user: str, password: str) -> str:
    status, answer = password_login(deployment, user, password)
    assert status == 200, answer
    return str(answer["access_token"])


def test_the_team_step_ran_and_the_self_check_reached_the_relay(deployment: Deployment,
                                                                   team: tuple[set[str], list[StepResult]]) -> None:
    changed, results = team
    assert {"team-accounts", "synapse-config", "selfcheck-verify"} <= changed
    check = next(r for r in results if r.name == "selfcheck-verify")
    assert f"mail: relay {relay_of(deployment).name}:{relay_of(deployment).starttls_port} answers" in check.stderr


def test_listed_people_sign_in_with_their_passwords_and_a_removed_one_cannot(
        deployment: Deployment, team: tuple[set[str], list[StepResult]]) -> None:
    passwords = output(deployment, "initialPasswords")
    assert set(passwords) == {"ada", "ben", "cy"}
    for user, password in passwords.items():
        assert password_login(deployment, user, password)[0] == 200, user
    changed, _ = deployment.apply_changes(users=USERS[:2])
    assert "team-accounts" in changed
    status, answer = password_login(deployment, "cy", passwords["cy"])
    assert (status, answer.get("errcode")) == (401, "M_USER_LOCKED")
    deployment.apply_changes(users=USERS)
    assert password_login(deployment, "cy", passwords["cy"])[0] == 200


def sign_up_as_element(deployment: Deployment, username: str, token: str) -> int:
    """Element's registration with a token: POST /register, then each stage of the flow Synapse offers that
    starts with the token stage (the dummy stage last), each with the session."""
    body: dict[str, Any] = {"username": username, "password": f"{username}-a-long-password",
                            "initial_device_display_name": "app.element.io: Firefox on Linux"}
    status, answer = client_api(deployment, username, "POST", "/_matrix/client/v3/register", body)
    assert status == 401, answer
    flow = next(f["stages"] for f in answer["flows"] if f["stages"] == ["m.login.registration_token", "m.login.dummy"])
    for stage in flow:
        auth: dict[str, Any] = {"type": stage, "session": answer["session"]}
        if stage == "m.login.registration_token":
            auth["token"] = token
        status, reply = client_api(deployment, username, "POST", "/_matrix/client/v3/register", {**body, "auth": auth})
        if status != 401 or "errcode" in reply:  # signed up, or this stage refused (an invalid token)
            return status
    return status


def test_an_invitation_admits_exactly_its_uses(deployment: Deployment, team: tuple[set[str], list[StepResult]]) -> None:
    crew = output(deployment, "invitations")["crew"]
    assert crew["signUpPage"] == f"https://chat.{deployment.domain}/#/register"
    # Without the token, nobody gets in.
    status, answer = client_api(deployment, "nobody", "POST", "/_matrix/client/v3/register", {"username": "nobody", "password":
                                "nobody-a-long-password", "auth": {"type": "m.login.dummy"}})
    assert status == 401 and all(f["stages"][0] == "m.login.registration_token" for f in answer["flows"])
    results = [sign_up_as_element(deployment, name, crew["token"]) for name in ("dee", "eve", "fay")]
    assert results == [200, 200, 401]


class _Form(html.parser.HTMLParser):
    """The confirmation page's form: its action and hidden fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.action = found.get("action") or ""
        elif tag == "input" and found.get("name"):
            self.fields[str(found["name"])] = found.get("value") or ""


def test_a_forgotten_password_is_reset_by_mail_as_element_does_it(
        deployment: Deployment, team: tuple[set[str], list[StepResult]]) -> None:
    relay = relay_of(deployment)
    before = relay.last_seq()
    client_secret = secrets.token_hex(16)
    status, answer = client_api(deployment, "ada", "POST", "/_matrix/client/v3/account/password/email/requestToken",
                                {"email": "ada@people.test", "client_secret": client_secret, "send_attempt": 1})
    assert status == 200, answer
    sid = answer["sid"]
    mail = relay.wait_for("ada@people.test", timeout=90, after=before)
    assert mail.login == relay.username and mail.mail_from == f"chat@{deployment.domain}"
    assert any(s.starttls and s.login == relay.username for s in relay.sessions())  # TLS before the login
    text = mail.body("plain")
    (link,) = set(re.findall(r"https://\S+/_synapse/client/password_reset/email/submit_token\?\S+", text))
    parsed = urllib.parse.urlsplit(link)
    assert parsed.hostname == f"matrix.{deployment.domain}"
    # Element polls the password change until the link is followed: refused before.
    new_password = "ada-a-brand-new-password"
    change = {"auth": {"type": "m.login.email.identity", "threepid_creds": {"sid": sid, "client_secret": client_secret}},
              "new_password": new_password, "logout_devices": False}
    assert client_api(deployment, "ada", "POST", "/_matrix/client/v3/account/password", change)[0] == 401
    # The link opens a page that asks to confirm (a mail scanner's GET changes nothing); confirming posts its form.
    status, _, page = edge_request(deployment, parsed.hostname, f"{parsed.path}?{parsed.query}",
                                   headers={"User-Agent": "Firefox e2e"})
    assert status == 200
    form = _Form()
    form.feed(page.decode())
    assert form.fields.get("sid") == sid
    assert form.action == ""  # no action: the browser posts the form back to the link's own URL
    status, _, done = edge_request(deployment, parsed.hostname, f"{parsed.path}?{parsed.query}", method="POST",
                                   headers={"User-Agent": "Firefox e2e",
                                            "Content-Type": "application/x-www-form-urlencoded"},
                                   body=urllib.parse.urlencode(form.fields).encode())
    assert status == 200, done[:500]
    assert client_api(deployment, "ada", "POST", "/_matrix/client/v3/account/password", change)[0] == 200
    assert password_login(deployment, "ada", new_password)[0] == 200


def test_someone_away_gets_a_mail_about_a_missed_message(deployment: Deployment,
                                                          team: tuple[set[str], list[StepResult]]) -> None:
    relay = relay_of(deployment)
    passwords = output(deployment, "initialPasswords")
    token, ben_token = (access_token(deployment, user, passwords[user]) for user in ("cy", "ben"))
    ben = f"@ben:{deployment.domain}"
    status, room = client_api(deployment, "cy", "POST", "/_matrix/client/v3/createRoom",
                              {"invite": [ben], "is_direct": True, "preset": "trusted_private_chat"}, token=token)
    assert status == 200, room
    room_id = urllib.parse.quote(room["room_id"])
    # Ben opens the invitation in Element: joins, and Element marks what he sees as read (else Synapse's mail is
    # about the invitation, which it reports instead of the room's messages).
    assert client_api(deployment, "ben", "POST", f"/_matrix/client/v3/join/{room_id}", {}, token=ben_token)[0] == 200
    status, seen = client_api(deployment, "ben", "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1",
                              token=ben_token)
    assert status == 200, seen
    latest = urllib.parse.quote(seen["chunk"][0]["event_id"])
    assert client_api(deployment, "ben", "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{latest}", {},
                      token=ben_token)[0] == 200
    # Then he is away, and cy writes.
    before = relay.last_seq()
    status, _ = client_api(deployment, "cy", "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{time.time_ns()}",
                           {"msgtype": "m.text", "body": "lunch at noon?"}, token=token)
    assert status == 200
    mail = relay.wait_for("ben@people.test", timeout=MINUTES * 60 + 120, after=before)
    assert "lunch at noon?" in mail.body("plain")
    assert f"https://chat.{deployment.domain}/#/room/" in mail.body("plain")


def test_a_password_is_reset_over_ssh_without_mail(deployment: Deployment,
                                                   team: tuple[set[str], list[StepResult]]) -> None:
    fresh = deployment.ssh("matrix-stack-team reset-password fay-never-existed || true")
    assert fresh == ""
    new = deployment.ssh("matrix-stack-team reset-password cy").strip()
    assert password_login(deployment, "cy", new)[0] == 200
    listed = deployment.ssh("matrix-stack-team list")
    assert re.search(r"^invitation crew: 2 of 2 used", listed, re.M), listed
    assert output(deployment, "invitations")["crew"]["token"] not in listed


def test_a_relay_that_does_not_answer_is_a_warning_not_a_failure(deployment: Deployment,
                                                                  team: tuple[set[str], list[StepResult]]) -> None:
    relay = relay_of(deployment)
    relay.stop()
    try:
        (check,) = deployment.up({"selfcheck-verify"})
    finally:
        relay.start()
    assert check.returncode == 0
    assert f"WARNING: mail relay {relay.name}:" in check.stderr
