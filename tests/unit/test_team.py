"""The team under mocks: a password resource per listed account and a token per invitation (so a preview names
who is added or removed), the secret outputs people are given, where the team step runs, and that changing the
team or the mail settings re-runs only the steps that use them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.settings import SettingsError
from tests.harness import Recording, changed_steps, parse_bundle, record, registered_resources, unwrap

TEAM: dict[str, Any] = {"users": [{"localpart": "alice", "admin": True, "email": "alice@example.org"}, "bob"],
                        "enableRegistration": True, "invitations": [{"name": "crew", "uses": 5}]}
MAIL = {"smtpHost": "smtp.mail.example.net", "smtpUser": "chat@example.org", "smtpPassword": "relay-SECRET-pass"}


@pytest.fixture(scope="module")
def team_graph() -> Recording:
    return record({**TEAM, **MAIL})


def result(graph: Recording, name: str) -> str:
    return str(unwrap(graph.named(name).raw_outputs["result"]))


def test_each_account_and_invitation_has_its_own_secret_resource(team_graph: Recording) -> None:
    for name in ("secrets-user-alice", "secrets-user-bob", "secrets-invitation-crew"):
        resource = team_graph.named(name)
        assert resource.type == "random:index/randomPassword:RandomPassword"
        assert resource.inputs["special"] is False and resource.inputs["length"] >= 20
    assert result(team_graph, "secrets-user-alice") != result(team_graph, "secrets-user-bob")


def test_people_get_their_passwords_and_the_invitation_as_secret_outputs(team_graph: Recording) -> None:
    passwords, secret = team_graph.stack_outputs["initialPasswords"]
    assert secret is True
    assert passwords == {"alice": result(team_graph, "secrets-user-alice"), "bob": result(team_graph, "secrets-user-bob")}
    invitations, secret = team_graph.stack_outputs["invitations"]
    assert secret is True
    assert invitations == {"crew": {"signUpPage": "https://chat.example.org/#/register",
                                    "token": result(team_graph, "secrets-invitation-crew")}}


def test_the_team_step_runs_after_the_admin_account_and_before_the_self_check(team_graph: Recording) -> None:
    step = team_graph.named("team-accounts")
    assert team_graph.named("admin-user").urn in step.dependencies
    assert step.urn in team_graph.named("selfcheck-verify").dependencies
    # Its files hold the passwords and tokens: secret stdin, the step's output kept on the server.
    assert step.is_secret("stdin")
    files, _ = parse_bundle(step.inputs["stdin"])
    wanted = json.loads(next(f.content for f in files if f.path == "/root/.matrix-stack/team.json"))
    assert [u["password"] for u in wanted["users"]] == [result(team_graph, f"secrets-user-{u}") for u in ("alice", "bob")]
    assert wanted["email_notifications"] is True
    # A preview names who changes, never a secret.
    triggers = unwrap(step.raw_inputs["triggers"])
    assert {"version:user alice=admin,alice@example.org", "version:user bob=user",
            "version:invitation crew=uses=5,expires=never"} <= set(triggers)


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return changed_steps(record(before), record(after))


def test_a_new_teammate_or_invitation_re_runs_only_the_team_step() -> None:
    base = {**TEAM, **MAIL}
    assert changed(base, {**base, "users": [*TEAM["users"], "carol"]}) == {"team-accounts", "selfcheck-verify"}
    assert changed(base, {**base, "invitations": [{"name": "crew", "uses": 6}]}) == {"team-accounts", "selfcheck-verify"}


def test_mail_settings_re_run_synapse_config_and_what_reads_them() -> None:
    base = {**TEAM, **MAIL}
    # The checks between deploys mail from the same sender.
    assert changed(base, {**base, "mailFrom": "Chat <chat@example.org>"}) == {"synapse-config", "selfcheck-verify",
                                                                            "health-schedule"}
    assert changed(base, {**base, "mailNotifications": False}) == {"synapse-config", "team-accounts",
                                                                  "selfcheck-verify"}


def test_the_relay_password_is_refused_in_plain_text_and_never_leaves_a_secret() -> None:
    recording = Recording()
    with pytest.raises(SettingsError, match="smtpPassword is stored in plain text"):
        record(MAIL, plain_keys=("smtpPassword",), into=recording)
    assert registered_resources(recording) == []
    graph = record(MAIL)
    carriers = [c for c in graph.commands()
                if any("relay-SECRET-pass" in f.content for f in parse_bundle(c.inputs["stdin"])[0])]
    # Synapse's config, and the settings of the checks between deploys (which mail through the relay too).
    assert [c.name for c in carriers] == ["synapse-config", "health-schedule"]
    assert all(c.is_secret("stdin") for c in carriers)
    assert not any("relay-SECRET-pass" in repr(unwrap(c.raw_inputs["triggers"])) for c in graph.commands())
