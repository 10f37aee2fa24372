"""Accounts on the deployed server, handled as its users and its operator handle them.

Users log in through nginx with a real Matrix client; the operator uses the admin API on the
server itself (`guest_api`), because nginx does not expose /_synapse/admin.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from nio import LoginError, LoginResponse

from tests.e2e.clients import matrix_client, run
from tests.e2e.deployment import Deployment

# Runs on the guest: one Synapse admin/client API call on 127.0.0.1:8008. The request, access
# token included, arrives on stdin, so no secret is ever on a command line.
GUEST_API = r"""
import json, sys, urllib.error, urllib.request
r = json.load(sys.stdin)
data = None if r["body"] is None else json.dumps(r["body"]).encode()
headers = {"Authorization": "Bearer " + r["token"], "Content-Type": "application/json"}
request = urllib.request.Request("http://127.0.0.1:8008" + r["path"], data=data, method=r["method"], headers=headers)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=60) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
print(json.dumps({"status": status, "body": body.decode()}))
"""


def guest_api(deployment: Deployment, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One API call made on the server (admin API included): (HTTP status, JSON body or text)."""
    request = json.dumps({"token": token, "method": method, "path": path, "body": body})
    answer = json.loads(deployment.ssh(f"python3 -c {shlex.quote(GUEST_API)}", stdin=request, timeout=120))
    try:
        return int(answer["status"]), json.loads(answer["body"])
    except ValueError:
        return int(answer["status"]), answer["body"]


def login(deployment: Deployment, user: str, password: str) -> tuple[str, str]:
    """A password login through nginx: (user id, access token)."""

    async def go() -> tuple[str, str]:
        client = matrix_client(deployment.homeserver, user, deployment.edge_address, deployment.ca_file)
        try:
            response = await client.login(password, device_name="matrix-stack e2e")
            assert isinstance(response, LoginResponse), response
            return str(response.user_id), str(response.access_token)
        finally:
            await client.close()

    return run(go)


def password_works(deployment: Deployment, user: str, password: str) -> bool:
    """Whether a password login through nginx succeeds (False only when Synapse refuses it)."""

    async def go() -> bool:
        client = matrix_client(deployment.homeserver, user, deployment.edge_address, deployment.ca_file)
        try:
            response = await client.login(password, device_name="matrix-stack e2e")
            assert isinstance(response, (LoginResponse, LoginError)), response
            if isinstance(response, LoginError):
                assert response.status_code == "M_FORBIDDEN", response
                return False
            await client.logout()
            return True
        finally:
            await client.close()

    return run(go)


def create_user(deployment: Deployment, admin_token: str, localpart: str, password: str) -> None:
    """Create (or update) a user with the admin API on the server."""
    status, body = guest_api(deployment, admin_token, "PUT", f"/_synapse/admin/v2/users/@{localpart}:{deployment.domain}",
                             {"password": password, "admin": False})
    assert status in (200, 201), body
