"""The team step: matrix-stack-team run against a real Synapse (build/synapse-venv, SQLite) as the step runs it,
with the wanted-state file the program writes. Accounts, locks, invitations, e-mail notifications and password
resets are checked through Synapse's own APIs, never through what the tool says it did."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.render import render
from components.services import synapse, team
from tests.templates.conftest import FAKE_SECRETS, invitation_token, make_context, user_password
from tests.templates.homeserver import RELAXED, SYNAPSE_VENV, call, login, register, running_synapse

SERVER = "example.org"
ADMIN_PASSWORD = FAKE_SECRETS["admin_password"]
BASE = {"enableRegistration": "true", "smtpHost": "smtp.mail.example.net"}


@dataclass(frozen=True)
class Server:
    config: Path
    base_url: str
    admin_token: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Synapse as the stack configures it with sign-up (by token) and mail on; the stack's admin account."""
    tmp = tmp_path_factory.mktemp("synapse")
    with running_synapse(tmp, {"rc_registration": RELAXED}, **BASE) as (config, base_url):
        register(config, base_url, "admin", ADMIN_PASSWORD, tmp, admin=True)
        status, body = login(base_url, "admin", ADMIN_PASSWORD)
        assert status == 200, body
        yield Server(config, base_url, body["access_token"])


@dataclass
class Tool:
    """matrix-stack-team with every path it uses under one test's directory, root-only as on the server."""

    path: Path
    wanted: Path
    state: Path
    server: Server

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.path), *args], input=stdin, capture_output=True, text=True, timeout=120)
        for secret in [ADMIN_PASSWORD, *(user_password(u) for u in ("alice", "bob", "carol", "dave"))]:
            assert secret not in result.stderr, "a password reached the step's output"
        return result

    def sync(self, **config: str) -> subprocess.CompletedProcess[str]:
        """The team step's sync, with the wanted state the program writes for these settings."""
        self.wanted.write_text(str(team.wanted_state(make_context(**{**BASE, **config}))))
        self.wanted.chmod(0o600)
        return self.run("sync", str(self.wanted))

    def recorded(self) -> dict[str, Any]:
        return dict(json.loads(self.state.read_text()))


@pytest.fixture
def tool(server: Server, tmp_path: Path) -> Tool:
    private = tmp_path / "root"
    private.mkdir(mode=0o755)  # as the step's file placement makes /root/.matrix-stack on the droplet
    credentials = private / "admin.env"
    credentials.write_text(render("admin/admin.env.j2", localpart="admin", user_id=f"@admin:{SERVER}",
                                  homeserver_url=f"https://matrix.{SERVER}", password=ADMIN_PASSWORD))
    credentials.chmod(0o600)
    path = tmp_path / "matrix-stack-team"
    path.write_text(render("team/matrix-stack-team.py.j2", python=str(SYNAPSE_VENV / "bin" / "python"),
                           base_url=server.base_url, server_name=SERVER, admin_credentials=str(credentials),
                           token_file=str(private / "team-admin.token"), state_file=str(tmp_path / "volume" / "state.json"),
                           health_timeout=10, password_min_length=synapse.PASSWORD_MIN_LENGTH))
    path.chmod(0o755)
    return Tool(path, private / "team.json", tmp_path / "volume" / "state.json", server)


def users(*entries: Any) -> str:
    return json.dumps(list(entries))


def admin_get(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    return call(server.base_url, "GET", path, token=server.admin_token)


def account(server: Server, localpart: str) -> dict[str, Any]:
    status, body = admin_get(server, f"/_synapse/admin/v2/users/@{localpart}:{SERVER}")
    assert status == 200, body
    return body


def test_listed_people_get_their_accounts_once_with_the_generated_passwords(tool: Tool) -> None:
    first = tool.sync(users=users({"localpart": "alice", "admin": True, "displayName": "Alice L", "email":
                                   "alice@example.org"}, "bob"))
    assert first.returncode == 0, first.stderr
    alice, bob = account(tool.server, "alice"), account(tool.server, "bob")
    assert (alice["admin"], alice["displayname"], alice["locked"]) == (True, "Alice L", False)
    assert [(t["medium"], t["address"]) for t in alice["threepids"]] == [("email", "alice@example.org")]
    assert (bob["admin"], bob["threepids"]) == (False, [])
    for localpart in ("alice", "bob"):
        assert login(tool.server.base_url, localpart, user_password(localpart))[0] == 200
    # What it manages is remembered on the volume, root only.
    assert tool.recorded()["users"] == ["alice", "bob"]
    assert stat.S_IMODE(tool.state.stat().st_mode) == 0o600 and stat.S_IMODE(tool.state.parent.stat().st_mode) == 0o700

    again = tool.sync(users=users({"localpart": "alice", "admin": True, "displayName": "Alice L", "email":
                                   "alice@example.org"}, "bob"))
    assert again.returncode == 0 and "created" not in again.stderr and "updated" not in again.stderr, again.stderr


def test_a_person_taken_off_the_list_is_locked_and_put_back_unlocked_with_their_own_password(tool: Tool) -> None:
    assert tool.sync(users=users("carol", "dave")).returncode == 0
    own = "carols-own-password-1"
    status, session = login(tool.server.base_url, "carol", user_password("carol"))
    assert status == 200
    assert call(tool.server.base_url, "POST", "/_matrix/client/v3/account/password", {
        "new_password": own, "logout_devices": False, "auth": {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "carol"}, "password": user_password("carol")}},
        token=session["access_token"])[0] == 200

    removed = tool.sync(users=users("dave"))
    assert removed.returncode == 0, removed.stderr
    assert account(tool.server, "carol")["locked"] is True and account(tool.server, "carol")["deactivated"] is False
    status, body = login(tool.server.base_url, "carol", own)
    assert (status, body.get("errcode")) == (401, "M_USER_LOCKED")
    # Her session is refused while she is locked, and works again afterwards.
    whoami = "/_matrix/client/v3/account/whoami"
    assert call(tool.server.base_url, "GET", whoami, token=session["access_token"])[0] == 401

    back = tool.sync(users=users("carol", "dave"))
    assert back.returncode == 0, back.stderr
    assert account(tool.server, "carol")["locked"] is False
    assert login(tool.server.base_url, "carol", own)[0] == 200  # her password, not the generated one
    assert call(tool.server.base_url, "GET", whoami, token=session["access_token"])[0] == 200


def test_accounts_made_otherwise_are_left_alone_and_a_listed_one_keeps_its_password(tool: Tool) -> None:
    register(tool.server.config, tool.server.base_url, "erin", "erins-own-password-1", tool.path.parent)
    register(tool.server.config, tool.server.base_url, "frank", "franks-own-password-1", tool.path.parent)
    listed = tool.sync(users=users("frank"))
    assert listed.returncode == 0 and "existed already" in listed.stderr, listed.stderr
    assert login(tool.server.base_url, "frank", "franks-own-password-1")[0] == 200
    assert tool.sync(users=users()).returncode == 0
    assert account(tool.server, "frank")["locked"] is True  # listed once, so managed: locked when taken off
    assert account(tool.server, "erin")["locked"] is False  # never listed: untouched
    assert login(tool.server.base_url, "erin", "erins-own-password-1")[0] == 200


def test_an_address_of_another_account_is_never_taken_from_it(tool: Tool) -> None:
    """Synapse's admin API would move an address from its account to the one it is given to: the tool asks first."""
    register(tool.server.config, tool.server.base_url, "hank", "hanks-own-password-1", tool.path.parent)
    status, _ = call(tool.server.base_url, "PUT", f"/_synapse/admin/v2/users/@hank:{SERVER}",
                     {"threepids": [{"medium": "email", "address": "shared@example.org"}]}, token=tool.server.admin_token)
    assert status == 200
    taken = tool.sync(users=users({"localpart": "gina", "email": "shared@example.org"}))
    assert taken.returncode == 0 and "shared@example.org belongs to another account" in taken.stderr, taken.stderr
    assert [t["address"] for t in account(tool.server, "hank")["threepids"]] == ["shared@example.org"]
    assert account(tool.server, "gina")["threepids"] == []


def test_mail_notifications_are_turned_on_once_and_a_person_may_turn_them_off(tool: Tool) -> None:
    member = users({"localpart": "ivy", "email": "ivy@example.org"})
    assert tool.sync(users=users("ivy"), smtpHost="").returncode == 0  # no mail yet: no address, no pusher
    pushers = "/_synapse/admin/v1/users/@ivy:example.org/pushers"
    assert admin_get(tool.server, pushers)[1]["pushers"] == []

    assert tool.sync(users=member).returncode == 0
    (pusher,) = admin_get(tool.server, pushers)[1]["pushers"]
    assert (pusher["kind"], pusher["app_id"], pusher["pushkey"]) == ("email", "m.email", "ivy@example.org")

    status, session = login(tool.server.base_url, "ivy", user_password("ivy"))
    assert status == 200  # Element's switch: the pusher set with kind null is deleted
    assert call(tool.server.base_url, "POST", "/_matrix/client/v3/pushers/set", {
        "kind": None, "app_id": "m.email", "pushkey": "ivy@example.org"}, token=session["access_token"])[0] == 200
    assert tool.sync(users=member, mailNotificationMinutes="5").returncode == 0
    assert admin_get(tool.server, pushers)[1]["pushers"] == []  # her choice stands


def sign_up(server: Server, localpart: str, token: str) -> int:
    """Registration as Element drives it: POST /register, then the token stage and the dummy stage of the
    flow Synapse offers, each with the session."""
    body: dict[str, Any] = {"username": localpart, "password": f"{localpart}-signup-password",
                            "initial_device_display_name": "Element"}
    status, answer = call(server.base_url, "POST", "/_matrix/client/v3/register", body)
    assert status == 401, answer
    session = answer["session"]
    for stage in ("m.login.registration_token", "m.login.dummy"):
        auth = {"type": stage, "session": session, **({"token": token} if stage.endswith("token") else {})}
        status, answer = call(server.base_url, "POST", "/_matrix/client/v3/register", {**body, "auth": auth})
        if status != 401:
            return status
    return status


def test_an_invitation_admits_exactly_its_uses_and_follows_the_settings(tool: Tool) -> None:
    invitation = [{"name": "crew", "uses": 2, "expires": "2099-12-31"}]
    assert tool.sync(invitations=json.dumps(invitation)).returncode == 0
    token = invitation_token("crew")
    status, found = admin_get(tool.server, f"/_synapse/admin/v1/registration_tokens/{token}")
    assert status == 200 and (found["uses_allowed"], found["completed"]) == (2, 0), found
    assert [sign_up(tool.server, name, token) for name in ("joe", "kim", "lea")] == [200, 200, 401]
    assert account(tool.server, "kim")["locked"] is False  # made by sign-up, never listed: not the tool's

    assert tool.sync(invitations=json.dumps([{"name": "crew", "uses": 3}])).returncode == 0
    found = admin_get(tool.server, f"/_synapse/admin/v1/registration_tokens/{token}")[1]
    assert (found["uses_allowed"], found["expiry_time"]) == (3, None)
    assert sign_up(tool.server, "lea", token) == 200

    assert tool.sync(invitations="[]").returncode == 0
    assert admin_get(tool.server, f"/_synapse/admin/v1/registration_tokens/{token}")[0] == 404
    assert account(tool.server, "lea")["locked"] is False  # accounts made with it stay


def test_a_password_is_reset_without_mail_and_sessions_end_only_when_asked(tool: Tool) -> None:
    assert tool.sync(users=users("max")).returncode == 0
    status, session = login(tool.server.base_url, "max", user_password("max"))
    assert status == 200
    whoami = "/_matrix/client/v3/account/whoami"

    generated = tool.run("reset-password", "max")
    assert generated.returncode == 0, generated.stderr
    new = generated.stdout.strip()
    assert len(new) >= synapse.PASSWORD_MIN_LENGTH and new not in generated.stderr
    assert login(tool.server.base_url, "max", new)[0] == 200
    assert login(tool.server.base_url, "max", user_password("max"))[0] == 403
    assert call(tool.server.base_url, "GET", whoami, token=session["access_token"])[0] == 200

    chosen = tool.run("reset-password", "@max:example.org", "--log-out-devices", "--password-stdin",
                      stdin="a-chosen-new-password\n")
    assert chosen.returncode == 0 and chosen.stdout == "", chosen.stderr
    assert login(tool.server.base_url, "max", "a-chosen-new-password")[0] == 200
    assert call(tool.server.base_url, "GET", whoami, token=session["access_token"])[0] == 401

    short = tool.run("reset-password", "max", "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and "shorter than" in short.stderr
    nobody = tool.run("reset-password", "nobody")
    assert nobody.returncode != 0 and "no account @nobody:example.org" in nobody.stderr


def test_the_tool_refuses_a_state_file_or_directory_anyone_else_could_have_written(tool: Tool) -> None:
    assert tool.sync(users=users("nina")).returncode == 0
    tool.state.chmod(0o644)
    refused = tool.sync(users=users())
    assert refused.returncode != 0 and "must be root's own" in refused.stderr
    assert account(tool.server, "nina")["locked"] is False
    os.chmod(tool.state, 0o600)
    tool.state.parent.chmod(0o777)  # a directory anyone could put a file or a link into
    refused = tool.sync(users=users())
    assert refused.returncode != 0 and "that only root can write to" in refused.stderr
    assert account(tool.server, "nina")["locked"] is False


def test_the_step_installs_the_tool_and_keeps_the_wanted_state_root_only() -> None:
    (step,) = team.steps(make_context(users=users("alice"), **BASE))
    files = {f.path: f for f in step.files}
    assert (files[team.TEAM_COMMAND].mode, files[team.WANTED_FILE].mode) == ("0755", "0600")
    assert all(f.owner == "root" for f in files.values())
    assert user_password("alice") not in step.script
    assert step.versions == {"user alice": "user"}
    assert paths.DATA_MOUNT in team.STATE_FILE
