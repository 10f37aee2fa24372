"""Real Matrix and HTTPS clients pointed at the test host, as a user's device would be.

Clients resolve the deployment's hostnames to the guest (there is no DNS here) and trust
pebble's issuing root, so TLS is verified exactly as it would be against Let's Encrypt.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from nio import AsyncClient, AsyncClientConfig

T = TypeVar("T")


class StaticResolver(AbstractResolver):
    """Every name resolves to the test host's address."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST
            )
        ]

    async def close(self) -> None:
        pass


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def session(address: str, ca_file: Path, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=StaticResolver(address), ssl=tls_context(ca_file), force_close=True)
    return aiohttp.ClientSession(connector=connector, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=120))


def matrix_client(homeserver: str, user: str, address: str, ca_file: Path) -> AsyncClient:
    client = AsyncClient(homeserver, user, config=AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False))
    client.client_session = session(address, ca_file)
    return client


async def http_get(
    url: str, address: str, ca_file: Path, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with session(address, ca_file, headers) as s, s.get(url, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.read()


def run(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one client conversation to the end (a fresh event loop each time)."""
    return asyncio.run(coroutine_factory())


def turn_server(homeserver: str, access_token: str, address: str, ca_file: Path) -> dict[str, Any]:
    """Synapse's answer to a user's GET /voip/turnServer (uris, username, password, ttl), as a client asks
    before a call."""
    status, _, body = run(lambda: http_get(f"{homeserver}/_matrix/client/v3/voip/turnServer", address, ca_file,
                                           {"Authorization": f"Bearer {access_token}"}))
    assert status == 200, body[:500]
    return dict(json.loads(body))


@dataclass
class Relay:
    """What coturn's own test client saw relaying through the server."""

    returncode: int
    sent: int
    received: int
    lost: int | None
    send_dropped: int
    output: str


def turn_relay(address: str, username: str, password: str) -> Relay:
    """Allocate a relay with TURN credentials (Synapse's /voip/turnServer answer) and send through it:
    coturn's turnutils_uclient, 10 messages, 120 bytes each."""
    result = subprocess.run(
        ["turnutils_uclient", "-X", "-c", "-n", "10", "-l", "120", "-u", username, "-w", password, "-y", address],
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    lost = re.search(r"Total lost packets (\d+)", output)
    dropped = re.search(r"Total send dropped (\d+)", output)
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)  # the summary line
    sent, received = map(int, totals[-1]) if totals else (0, 0)
    return Relay(result.returncode, sent, received, int(lost.group(1)) if lost else None,
                 int(dropped.group(1)) if dropped else 0, output)
