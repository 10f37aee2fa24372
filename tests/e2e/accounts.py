"""Accounts on the deployed server, handled as its users and its operator handle them.

Users log in through nginx with a real Matrix client; the operator creates accounts with the admin
API on the server itself, because nginx does not expose /_synapse/admin.
"""

from __future__ import annotations

import json
import shlex

from nio import LoginResponse

from tests.e2e.clients import matrix_client, run
from tests.e2e.deployment import DOMAIN, HOMESERVER, Deployment


def login(deployment: Deployment, user: str, password: str) -> tuple[str, str]:
    """A password login through nginx: (user id, access token)."""

    async def go() -> tuple[str, str]:
        client = matrix_client(HOMESERVER, user, deployment.host.address, deployment.ca_file)
        try:
            response = await client.login(password, device_name="matrix-stack e2e")
            assert isinstance(response, LoginResponse), response
            return str(response.user_id), str(response.access_token)
        finally:
            await client.close()

    return run(go)


def create_user(deployment: Deployment, admin_token: str, localpart: str, password: str) -> None:
    """Create (or update) a user with the admin API on the server; token and password go over stdin."""
    body = json.dumps({"password": password, "admin": False})
    script = (
        "read -r token; read -r body; "
        "curl -fsS -X PUT -H \"Authorization: Bearer $token\" -H 'Content-Type: application/json' "
        f'--data "$body" http://127.0.0.1:8008/_synapse/admin/v2/users/@{localpart}:{DOMAIN}'
    )
    deployment.ssh(f"bash -c {shlex.quote(script)}", stdin=f"{admin_token}\n{body}\n")
