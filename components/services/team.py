"""The team: listed accounts, invitations (registration tokens) and the password-reset command, through Synapse's
admin API, after the admin account exists.

One step installs matrix-stack-team (templates/team/) and runs its `sync` against a root-only file holding the
wanted state: each listed account with its generated password and each invitation with its token. The step's
triggers name every member and invitation with what the preview should show of them, so `pulumi preview --diff`
says who changes; the passwords and tokens themselves are resources of their own (cloud/secrets.py).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext, admin, synapse

TEAM_COMMAND = "/usr/local/sbin/matrix-stack-team"
WANTED_FILE = "/root/.matrix-stack/team.json"  # 0600 root: the passwords and tokens of the team step
ADMIN_TOKEN_FILE = "/root/.matrix-stack/team-admin.token"  # the tool's admin session
# On the volume, root only: which accounts and tokens the stack manages (what it may lock and delete).
STATE_FILE = f"{paths.DATA_MOUNT}/matrix-stack/team-state.json"


def wanted_state(ctx: ServiceContext) -> pulumi.Input[str]:
    """The team file: plain JSON of the settings, with the secret passwords and tokens resolved in."""
    s = ctx.settings
    members, invitations = list(s.users), list(s.invitations)
    secrets: list[pulumi.Input[str]] = [ctx.user_passwords[m.localpart] for m in members]
    secrets += [ctx.invitation_tokens[i.name] for i in invitations]

    def document(values: list[Any]) -> str:
        passwords, tokens = values[:len(members)], values[len(members):]
        return json.dumps({
            "users": [{"localpart": m.localpart, "admin": m.admin, "displayname": m.display_name, "email": m.email,
                       "password": p} for m, p in zip(members, passwords)],
            "invitations": [{"name": i.name, "token": t, "uses": i.uses, "expiry_ms": i.expiry_ms}
                            for i, t in zip(invitations, tokens)],
            "email_notifications": s.mail_enabled and s.mail_notifications,
        }, indent=1) + "\n"

    if not any(isinstance(v, pulumi.Output) for v in secrets):  # tests, `review`: plain placeholders
        return document(secrets)
    return pulumi.Output.secret(pulumi.Output.all(*secrets).apply(document))


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    host, port = paths.SYNAPSE_LISTEN
    command = render("team/matrix-stack-team.py.j2", python=f"{paths.SYNAPSE_VENV}/bin/python",
                     base_url=f"http://{host}:{port}", server_name=s.domain, admin_credentials=paths.ADMIN_CREDENTIALS,
                     token_file=ADMIN_TOKEN_FILE, state_file=STATE_FILE, health_timeout=admin.HEALTH_TIMEOUT_S,
                     password_min_length=synapse.PASSWORD_MIN_LENGTH)
    shown = {f"user {m.localpart}": m.summary() for m in s.users}
    shown |= {f"invitation {i.name}": i.summary() for i in s.invitations}
    return [StepSpec(
        name="team-accounts",
        script=render("team/accounts.sh.j2", command=TEAM_COMMAND, wanted=WANTED_FILE),
        files=[RemoteFile(TEAM_COMMAND, command, mode="0755"),
               RemoteFile(WANTED_FILE, wanted_state(ctx), mode="0600")],
        versions=shown,
    )]
