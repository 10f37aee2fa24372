"""A bounded Matrix load generator: clients in pairs, each sending at a steady rate while syncing.

Used by the load test (tests/e2e/test_load.py) and the benchmark (tests/bench/benchmark.py).

Users are made on the server the way an operator makes bot accounts: registered with the
registration shared secret (the admin register API, which returns an access token, so no login
and no login rate limit is involved) and exempted from the message rate limit with the admin API
(`override_ratelimit`). Both APIs are only reachable on the server itself (nginx answers 404 for
/_synapse/admin), so that part runs over SSH with the guest's own Python.

The load itself runs from the test machine through nginx on 443, like real clients: every
message carries a unique body; the other member of its room must receive that event (same event
id, same body) through /sync. Latency is send start -> the receiver's /sync returning the event
(one process, one monotonic clock). Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import shlex
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.clients import StaticResolver, tls_context

# Runs in the guest with Synapse's venv Python (it has PyYAML to read the shared secret).
GUEST_PYTHON = "/opt/synapse/venv/bin/python"
USERS_SCRIPT = r"""
import hashlib, hmac, json, secrets, sys, urllib.parse, urllib.request
import yaml

args = json.loads(sys.stdin.readline())
base = "http://127.0.0.1:8008"
with open(args["config"]) as f:
    secret = yaml.safe_load(f)["registration_shared_secret"].encode()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with opener.open(request, timeout=120) as response:
        return json.load(response)

def register(localpart, admin):
    password = secrets.token_urlsafe(18)
    nonce = call("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret, digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    answer = call("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()})
    return answer["user_id"], answer["access_token"]

_, admin_token = register(args["prefix"] + "-admin", True)
users = []
for i in range(args["count"]):
    user_id, token = register("%s-%02d" % (args["prefix"], i), False)
    path = "/_synapse/admin/v1/users/%s/override_ratelimit" % urllib.parse.quote(user_id)
    call("POST", path, {"messages_per_second": 0, "burst_count": 0}, admin_token)
    override = call("GET", path, token=admin_token)
    users.append({"user_id": user_id, "access_token": token, "override": override})
print(json.dumps(users))
"""

SYNC_FILTER = json.dumps({
    "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True},
             "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}, separators=(",", ":"))


@dataclass(frozen=True)
class LoadUser:
    user_id: str
    access_token: str


def provision_users(ssh: Callable[[str, str], str], count: int, prefix: str | None = None,
                    synapse_config: str = "/etc/matrix-synapse/homeserver.yaml") -> list[LoadUser]:
    """Register `count` users on the server, exempt from the message rate limit; return their tokens.

    `ssh(command, stdin)` runs a command in the guest (Deployment.ssh). Raises if the server did
    not store the override (messages_per_second 0, burst_count 0) for every user.
    """
    prefix = prefix or f"load{secrets.token_hex(3)}"
    args = json.dumps({"count": count, "prefix": prefix, "config": synapse_config})
    command = f"{GUEST_PYTHON} -c {shlex.quote(USERS_SCRIPT)}"
    answer = json.loads(ssh(command, args + "\n"))
    for user in answer:
        if user["override"] != {"messages_per_second": 0, "burst_count": 0}:
            raise AssertionError(f"rate-limit override not stored for {user['user_id']}: {user['override']}")
    return [LoadUser(u["user_id"], u["access_token"]) for u in answer]


@dataclass
class LoadConfig:
    duration: float = 60.0  # seconds of sending
    rate: float = 0.5  # messages per second per client; 0: closed loop (next send as soon as one returns)
    drain: float = 60.0  # at most this long after sending stops, waiting for the last deliveries
    sync_timeout_ms: int = 10_000  # /sync long-poll
    max_per_client: int = 10_000  # hard cap on messages per client, whatever the rate


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    clients: int
    config: LoadConfig
    sent: int = 0
    received: int = 0
    send_seconds: float = 0.0  # wall time of the sending phase
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # event ids sent but never received by the partner
    mismatched: list[str] = field(default_factory=list)  # received with another body than was sent
    gaps: int = 0  # /sync timelines marked "limited" (events skipped)
    latencies: list[float] = field(default_factory=list)  # send start -> partner's /sync, seconds
    send_rtts: list[float] = field(default_factory=list)  # PUT /send round trip, seconds

    @property
    def messages_per_second(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else math.nan

    def latency_ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    def send_rtt_ms(self, p: float) -> float:
        return percentile(self.send_rtts, p) * 1000

    def summary(self) -> str:
        mode = "closed loop" if self.config.rate == 0 else f"{self.config.rate:g} msg/s per client"
        lines = [
            f"load: {self.clients} clients, {mode}, {self.send_seconds:.1f} s of sending",
            f"  sent {self.sent}, received {self.received}, lost {len(self.lost)}, mismatched {len(self.mismatched)},"
            f" errors {len(self.errors)}, sync gaps {self.gaps}",
            f"  throughput {self.messages_per_second:.1f} messages/s",
            "  send->receive latency ms: " + ", ".join(f"p{p} {self.latency_ms(p):.0f}" for p in (50, 90, 99))
            + f", max {max(self.latencies, default=math.nan) * 1000:.0f}",
            "  PUT /send round trip ms:  " + ", ".join(f"p{p} {self.send_rtt_ms(p):.0f}" for p in (50, 90, 99)),
        ]
        lines += [f"  error: {e}" for e in self.errors[:10]]
        return "\n".join(lines)


class RequestFailed(RuntimeError):
    pass


class _Client:
    def __init__(self, user: LoadUser, homeserver: str, address: str, ca_file: Path) -> None:
        self.user = user
        self.homeserver = homeserver.rstrip("/")
        # Keep-alive connections, as a real client keeps them (clients.session closes every one).
        self.connector = aiohttp.TCPConnector(resolver=StaticResolver(address), ssl=tls_context(ca_file), limit=4)
        self.http = aiohttp.ClientSession(
            connector=self.connector, timeout=aiohttp.ClientTimeout(total=120),
            headers={"Authorization": f"Bearer {user.access_token}"})
        self.room_id = ""
        self.partner = ""
        self.since = ""

    async def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        url = f"{self.homeserver}/_matrix/client/v3{path}"
        async with self.http.request(method, url, json=body, params=params) as response:
            text = await response.text()
            if response.status != 200:
                raise RequestFailed(f"{self.user.user_id} {method} {path.split('?')[0]}: {response.status} {text[:200]}")
            return json.loads(text)

    async def sync(self, timeout_ms: int) -> Any:
        params = {"filter": SYNC_FILTER, "timeout": str(timeout_ms)}
        if self.since:
            params["since"] = self.since
        answer = await self.call("GET", "/sync", params=params)
        self.since = answer["next_batch"]
        return answer

    async def close(self) -> None:
        # Abort rather than wait for TLS close_notify from the server: on Python < 3.12.7 asyncio
        # can leave a half-shut-down TLS socket behind when the event loop ends.
        await self.connector.close(abort_ssl=True)
        await self.http.close()


async def _set_up_pairs(clients: list[_Client]) -> None:
    async def pair(creator: _Client, partner: _Client) -> None:
        room = await creator.call("POST", "/createRoom", {"preset": "private_chat", "invite": [partner.user.user_id],
                                                          "name": "load"})
        await partner.call("POST", f"/join/{urllib.parse.quote(room['room_id'])}", {})
        creator.room_id = partner.room_id = room["room_id"]
        creator.partner, partner.partner = partner.user.user_id, creator.user.user_id

    await asyncio.gather(*(pair(clients[i], clients[i + 1]) for i in range(0, len(clients), 2)))
    # The starting point of every client's /sync: from here on, only new events arrive.
    await asyncio.gather(*(c.sync(0) for c in clients))


async def run_load(homeserver: str, address: str, ca_file: Path, users: Sequence[LoadUser],
                   config: LoadConfig | None = None, log: Callable[[str], None] = print) -> LoadResult:
    """Pair the users in rooms, then send and sync for config.duration seconds; check every delivery."""
    config = config or LoadConfig()
    if len(users) < 2 or len(users) % 2:
        raise ValueError("need an even number of users (they chat in pairs)")
    result = LoadResult(len(users), config)
    clients = [_Client(u, homeserver, address, ca_file) for u in users]
    run_id = secrets.token_hex(4)
    sent: dict[str, tuple[str, str, float]] = {}  # event id -> (body, receiver, send start)
    received: dict[str, tuple[str, str, float]] = {}  # event id -> (body, receiver, receive time)
    stop = asyncio.Event()

    async def sender(index: int, client: _Client, start: float) -> None:
        interval = 1 / config.rate if config.rate else 0.0
        offset = index * interval / len(clients)  # spread the clients' sends evenly over each interval
        end = start + config.duration
        # A steady rate sends a fixed count (late sends still go out); a closed loop stops at `end`.
        count = min(config.max_per_client, int(config.duration * config.rate)) if config.rate else config.max_per_client
        for seq in range(count):
            due = start + offset + seq * interval
            if not config.rate and time.monotonic() >= end:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body = f"load {run_id} {client.user.user_id} #{seq}"
            began = time.monotonic()
            try:
                answer = await client.call(
                    "PUT", f"/rooms/{urllib.parse.quote(client.room_id)}/send/m.room.message/{run_id}-{seq}",
                    {"msgtype": "m.text", "body": body})
            except (RequestFailed, aiohttp.ClientError, TimeoutError) as error:
                result.errors.append(f"send: {error!r}")
                continue
            result.send_rtts.append(time.monotonic() - began)
            sent[answer["event_id"]] = (body, client.partner, began)

    async def syncer(client: _Client) -> None:
        while not stop.is_set():
            try:
                answer = await client.sync(config.sync_timeout_ms)
            except (RequestFailed, aiohttp.ClientError, TimeoutError) as error:
                result.errors.append(f"sync: {error!r}")
                await asyncio.sleep(1)
                continue
            now = time.monotonic()
            for room in answer.get("rooms", {}).get("join", {}).values():
                timeline = room.get("timeline", {})
                result.gaps += bool(timeline.get("limited"))
                for event in timeline.get("events", []):
                    body = event.get("content", {}).get("body", "")
                    if event.get("type") == "m.room.message" and body.startswith(f"load {run_id} ") \
                            and event.get("sender") != client.user.user_id:
                        received.setdefault(event["event_id"], (body, client.user.user_id, now))

    try:
        await _set_up_pairs(clients)
        log(f"load: {len(clients)} clients in {len(clients) // 2} rooms; sending for {config.duration:g} s")
        syncers = [asyncio.create_task(syncer(c)) for c in clients]
        start = time.monotonic()
        # A safety net only: a slow server makes the steady senders late, never stops them early.
        await asyncio.wait_for(asyncio.gather(*(sender(i, c, start) for i, c in enumerate(clients))),
                               config.duration * 5 + 300)
        result.send_seconds = time.monotonic() - start
        deadline = time.monotonic() + config.drain
        while time.monotonic() < deadline and not set(sent) <= set(received):
            await asyncio.sleep(0.2)
        stop.set()
        # Let the long-polls end by themselves (a cancelled request leaves its TLS connection closing).
        _, late = await asyncio.wait(syncers, timeout=config.sync_timeout_ms / 1000 + 30)
        for task in late:
            task.cancel()
        await asyncio.gather(*syncers, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in clients))

    result.sent = len(sent)  # sends the server accepted (a refused send is in errors)
    for event_id, (body, receiver, began) in sent.items():
        got = received.get(event_id)
        if got is None:
            result.lost.append(event_id)
        elif got[0] != body or got[1] != receiver:
            result.mismatched.append(event_id)
        else:
            result.latencies.append(got[2] - began)
    result.received = len(set(received) & set(sent))
    return result
