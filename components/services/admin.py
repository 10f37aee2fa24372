"""The first admin account, created once with Synapse's shared-secret registration.

The password never appears on a command line: `register_new_matrix_user --password-file` and the
login check read it from a 0600 file. The same file set also gives the self-check step the admin
credentials (paths.ADMIN_CREDENTIALS, shell-sourceable KEY='value' lines).
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.services import ServiceContext, rendered

ADMIN_PASSWORD_FILE = "/root/.matrix-stack/admin-password"
# On the volume: a hash of the user id and the password this stack gave the admin (it outlives the
# droplet, so a new stack life on the same volume is recognised; see admin/user.sh.j2).
VERIFIED_MARKER = f"{paths.DATA_MOUNT}/matrix-stack/admin-password.sha256"
HEALTH_TIMEOUT_S = 90


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    host, port = paths.SYNAPSE_LISTEN
    script = rendered(
        "admin/user.sh.j2",
        venv=paths.SYNAPSE_VENV,
        config=paths.SYNAPSE_CONFIG,
        localpart=s.admin_user,
        user_id=s.admin_user_id,
        password_file=ADMIN_PASSWORD_FILE,
        marker=VERIFIED_MARKER,
        base_url=f"http://{host}:{port}",
        health_timeout=HEALTH_TIMEOUT_S,
    )
    return [
        StepSpec(
            name="admin-user",
            script=str(script),
            files=[
                RemoteFile(ADMIN_PASSWORD_FILE, rendered("admin/password.j2", password=ctx.admin_password), mode="0600"),
                RemoteFile(
                    paths.ADMIN_CREDENTIALS,
                    rendered(
                        "admin/admin.env.j2",
                        localpart=s.admin_user,
                        user_id=s.admin_user_id,
                        homeserver_url=s.homeserver_url,
                        password=ctx.admin_password,
                    ),
                    mode="0600",
                ),
            ],
        )
    ]
