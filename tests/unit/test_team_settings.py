"""The team, invitations and mail settings: what a user writes is read as meant, and a bad entry is one line naming
the setting (down to the entry and field) and the fix, before any resource exists."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from components.settings import SettingsError, load
from components.team import Invitation, TeamMember
from tests.unit.test_settings import raw

MAIL = {"smtpHost": "smtp.mail.example.net", "smtpUser": "chat@example.org", "smtpPassword": "relay-password"}

INVALID: list[tuple[dict[str, Any], str]] = [
    ({"users": ["Alice"]}, "users[0].localpart"),  # Synapse's user names are lower-case
    ({"users": ["alice", "bo b"]}, "users[1].localpart"),
    ({"users": ["1234"]}, "users[0].localpart"),  # all digits: guests' names
    ({"users": ["_irc_bridge"]}, "users[0].localpart"),  # application services' names
    ({"users": ["alice", {"localpart": "alice", "admin": True}]}, "users[1].localpart"),
    ({"users": [{"localpart": "alice", "admin": "yes"}]}, "users[0].admin"),
    ({"users": [{"localpart": "alice", "role": "admin"}]}, "users[0].role"),
    ({"users": [{"localpart": "alice", "email": "alice@"}]}, "users[0].email"),
    ({"users": [{"localpart": "alice", "displayName": "two\nlines"}]}, "users[0].displayName"),
    ({"users": [{"localpart": "a", "email": "x@example.org"}, {"localpart": "b", "email": "X@example.org"}]}, "users"),
    ({"users": [{"admin": True}]}, "users[0].localpart"),
    ({"users": [7]}, "users[0]"),
    ({"users": ["admin"]}, "users"),  # the admin account is adminUser's
    ({"enableRegistration": True, "invitations": [{"name": "Team", "uses": 3}]}, "invitations[0].name"),
    ({"enableRegistration": True, "invitations": [{"name": "team", "uses": 0}]}, "invitations[0].uses"),
    ({"enableRegistration": True, "invitations": [{"name": "team", "uses": 1001}]}, "invitations[0].uses"),
    ({"enableRegistration": True, "invitations": [{"name": "team"}]}, "invitations[0].uses"),
    ({"enableRegistration": True, "invitations": [{"name": "team", "uses": 2, "expires": "2027-13-01"}]},
     "invitations[0].expires"),
    ({"enableRegistration": True, "invitations": [{"name": "team", "uses": 2, "expires": "tomorrow"}]},
     "invitations[0].expires"),
    ({"enableRegistration": True, "invitations": [{"name": "t", "uses": 1}, {"name": "t", "uses": 2}]},
     "invitations[1].name"),
    ({"invitations": [{"name": "team", "uses": 3}]}, "invitations"),  # sign-up is off
    ({**MAIL, "smtpPort": 25}, "smtpPort"),  # DigitalOcean blocks it
    ({**MAIL, "smtpTls": "none"}, "smtpTls"),
    ({**MAIL, "smtpPort": 465}, "smtpTls"),  # 465 speaks TLS from the first byte
    ({**MAIL, "smtpTls": "tls"}, "smtpTls"),  # on 587
    ({**MAIL, "smtpPassword": None}, "smtpPassword"),
    ({"smtpHost": "smtp.mail.example.net", "smtpPassword": "x"}, "smtpUser"),
    ({"smtpPassword": "relay-password"}, "smtpPassword"),  # no relay
    ({"mailFrom": "chat@example.org"}, "mailFrom"),
    ({**MAIL, "mailFrom": "100% chat <chat@example.org>"}, "mailFrom"),
    ({**MAIL, "mailFrom": "chat at example.org"}, "mailFrom"),
    ({**MAIL, "smtpHost": "smtp.mail.example.net:587"}, "smtpHost"),
    ({**MAIL, "smtpUser": "two words"}, "smtpUser"),
    ({**MAIL, "mailNotificationMinutes": 0}, "mailNotificationMinutes"),
]


@pytest.mark.parametrize(("config", "key"), INVALID, ids=[f"{k}:{c}"[:80] for c, k in INVALID])
def test_a_bad_entry_is_one_line_naming_it_and_the_fix(config: dict[str, Any], key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(**{k: v for k, v in config.items() if v is not None}))
    message = str(error.value)
    assert f"matrix-stack:{key}=" in message or f"matrix-stack:{key} " in message, message
    assert "\n" not in message and "fix:" in message
    assert "relay-password" not in message  # a secret is never echoed


def test_users_are_read_from_objects_plain_names_and_pulumi_new_text() -> None:
    settings = load(raw(users=[{"localpart": "alice", "admin": True, "displayName": " Alice Liddell ",
                                "email": "Alice@Example.org"}, "bob"]))[0]
    assert settings.users == (TeamMember("alice", True, "Alice Liddell", "alice@example.org"), TeamMember("bob"))
    assert load(raw(users="carol, dave"))[0].users == (TeamMember("carol"), TeamMember("dave"))
    # `pulumi config set --path 'users[0].admin' true` may store the word true
    assert load(raw(users=[{"localpart": "erin", "admin": "true"}]))[0].users == (TeamMember("erin", True),)
    assert load(raw())[0].users == ()


def test_an_invitation_works_until_the_end_of_its_last_day_in_utc() -> None:
    settings = load(raw(enableRegistration=True, invitations=[
        {"name": "spring-team", "uses": "10", "expires": "2027-03-31"}, {"name": "open", "uses": 1}]))[0]
    spring, always = settings.invitations
    assert spring == Invitation("spring-team", 10, "2027-03-31")
    assert spring.expiry_ms == datetime.datetime(2027, 4, 1, tzinfo=datetime.UTC).timestamp() * 1000
    assert always.expiry_ms is None


def test_mail_settings_default_to_the_submission_port_over_starttls() -> None:
    settings = load(raw(**MAIL))[0]
    assert (settings.smtp_port, settings.smtp_tls, settings.mail_notifications) == (587, "starttls", True)
    assert settings.mail_sender == "Matrix <matrix@example.org>"
    assert settings.mail_notification_minutes == 10  # Synapse's own default
    implicit = load(raw(smtpHost="relay.example.net", smtpPort=465, smtpTls="tls", mailFrom="chat@example.org"))[0]
    assert (implicit.smtp_user, implicit.mail_sender, implicit.mail_enabled) == ("", "chat@example.org", True)
    assert not load(raw())[0].mail_enabled
