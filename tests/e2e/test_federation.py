"""Federation for real: this program's stack on two test hosts with different server names, both behind
the edge stand-in (tests/e2e/edge.py), and a third one for the allowlist.

The shared deployment is server A (example.test); B (peer.test) and C (third.test) are two more stacks
of this program on hosts of their own, provisioned side by side. Every server reaches the others the
way it would in production: the DNS stand-in resolves their proxied names to the edge, which verifies
each origin's certificate (Full (strict)) and presents that zone's origin-pull certificate. The one
concession to the test network: its addresses (198.18.0.0/15) are in Synapse's blocklist, so each
server's `outboundIpAllowlist` names its own edge address.

Checked: the federation tester's checks against A and B (run from the other server); users of each
join a room created on the other; messages, an edit, a reaction and typing both ways; a file uploaded
on A is downloaded by B's user (remote media over federation); profiles looked up across; both servers
fetched the other's keys through .well-known delegation on 443 (the edge saw it); with
`synapseWorkers` switched on, A still does all of that and nginx's log shows its sync, inbound
federation and media going to the workers, its outbound federation leaving from the federation sender,
and switching off converges; with `federation: allowlist` naming only the peer, C is refused in both
directions while A and B still talk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.accounts import create_user, login
from tests.e2e.clients import run, session
from tests.e2e.deployment import E2E_INDEX, Deployment, deployed_host
from tests.e2e.runner import run_all
from tests.e2e.test_cloudflare import edge_request
from tests.e2e.testhost import TestHost
from tests.e2e.workers_log import UPSTREAM_LOG, Routed, parse

pytestmark = pytest.mark.e2e

PEER, THIRD = "peer.test", "third.test"
PEER_INDEX, THIRD_INDEX = E2E_INDEX + 102, E2E_INDEX + 103
CHECKER = Path(__file__).with_name("federation_check.py")
SYNAPSE_PYTHON = "/opt/synapse/venv/bin/python"
WAIT = 90.0  # federation between two busy 1-core servers: bounded waits for what crosses
# synapseWorkers needs a bigger droplet; the runbook in docs/grow.md resizes first, then turns workers on.
WORKERS_SIZE = "s-2vcpu-4gb"
# What `pulumi up` runs (tests/unit/test_synapse_workers.py checks the same sets under mocks).
WORKERS_ON = {"synapse-install", "synapse-redis", "synapse-config", "nginx-sites", "selfcheck-verify",
              "health-schedule"}
WORKERS_OFF = WORKERS_ON - {"synapse-redis"}  # what runs: that step's resource goes, nothing runs for it
WORKER_UNITS = ("matrix-synapse-worker@sync1", "matrix-synapse-worker@client1", "matrix-synapse-worker@media1",
                "matrix-synapse-worker@federation_sender1")


# -- a Matrix user, through the edge -------------------------------------------------------------------
@dataclass
class User:
    deployment: Deployment
    localpart: str
    token: str

    @property
    def user_id(self) -> str:
        return f"@{self.localpart}:{self.deployment.domain}"

    async def call(self, method: str, path: str, body: Any = None, data: bytes | None = None,
                   content_type: str = "application/json") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        async with session(self.deployment.edge_address, self.deployment.ca_file, headers) as s:
            payload: Any = io.BytesIO(data) if data is not None else (json.dumps(body).encode() if body is not None else None)
            async with s.request(method, self.deployment.homeserver + path, data=payload) as response:
                raw = await response.read()
                try:
                    return response.status, json.loads(raw)
                except ValueError:
                    return response.status, raw

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return run(lambda: self.call(method, path, body, **kwargs))

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, answer = self.api(method, path, body, **kwargs)
        assert status == 200, f"{self.user_id} {method} {path}: {status} {answer}"
        return answer

    def send(self, room: str, event_type: str, content: dict[str, Any]) -> str:
        txn = secrets.token_hex(8)
        return str(self.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/{event_type}/{txn}", content)["event_id"])

    def events(self, room: str) -> list[dict[str, Any]]:
        answer = self.ok("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=100")
        return list(answer["chunk"])

    def wait_for(self, room: str, what: str, found: Any) -> dict[str, Any]:
        """The first event of the room (newest first) for which `found(event)` holds, waited for."""
        deadline = time.monotonic() + WAIT
        while True:
            for event in self.events(room):
                if found(event):
                    return event
            assert time.monotonic() < deadline, f"{self.user_id} never saw {what} in {room}"
            time.sleep(1)

    def join(self, room: str, via: str) -> tuple[int, Any]:
        return self.api("POST", f"/_matrix/client/v3/join/{quote(room)}?server_name={via}", {})


def user(deployment: Deployment, admin_token: str, prefix: str) -> User:
    localpart = f"{prefix}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    create_user(deployment, admin_token, localpart, password)
    return User(deployment, localpart, login(deployment, localpart, password)[1])


# -- the servers ---------------------------------------------------------------------------------------
@dataclass
class Servers:
    a: Deployment
    b: Deployment
    c: Deployment
    alice: User  # of A
    bob: User  # of B
    carol: User  # of C
    provisioning_seconds: float
    rooms: dict[str, str] = field(default_factory=dict)


WEBSITE_COMMENT = "the user's website"
CATCH_ALL = "users-challenge-everyone"


def user_owned_zone(host: TestHost) -> None:
    """peer.test's zone as a user's zone with more in it, before the stack's first `up`: a website on the server
    name, proxied (so the stack must leave it and redirect delegation: its first `up` then creates two rules of
    the redirect phase at once, in a phase with no entry point yet), and the user's own rule that challenges
    every request to the zone's names (so the stack's skip rule must come first)."""
    zone = host.cloudflare
    assert zone is not None
    status, _ = zone.handle("POST", f"/client/v4/zones/{zone.zone_id}/dns_records", {}, {
        "name": PEER, "type": "A", "content": host.address, "ttl": 1, "proxied": True, "comment": WEBSITE_COMMENT})
    assert status == 200
    status, _ = zone.handle("PUT", f"/client/v4/zones/{zone.zone_id}/rulesets/phases/http_request_firewall_custom/"
                            "entrypoint", {}, {"rules": [{
                                "ref": CATCH_ALL, "action": "managed_challenge", "description": "the user's: challenge everyone",
                                "expression": f'(http.host in {{"{PEER}" "matrix.{PEER}" "chat.{PEER}"}})'}]})
    assert status == 200


@pytest.fixture(scope="module")
def servers(deployment: Deployment) -> Iterator[Servers]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end suite needs root")
    directory = Path(tempfile.mkdtemp(prefix="matrix-stack-federation-", dir="/var/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            # Stacks of their own, with secrets of their own (their own signing keys among them). The peer
            # still runs Debian 12 (still accepted): servers on both images federate.
            b = stack.enter_context(deployed_host(PEER_INDEX, directory / "peer.img", outsider=False, domain=PEER,
                                                  stack="peer", secret_seed="the peer stack",
                                                  droplet_image="debian-12-x64", zone_setup=user_owned_zone))
            c = stack.enter_context(deployed_host(THIRD_INDEX, directory / "third.img", outsider=False, domain=THIRD,
                                                  stack="third", secret_seed="the third stack"))
            started = time.monotonic()
            # The test network is 198.18.0.0/15, which Synapse rightly refuses to reach (its blocklist): each
            # server may reach exactly its own edge address (outboundIpAllowlist). Cloudflare's are public.
            for other in (b, c):  # the program runs under mocks one at a time; the steps run side by side
                other.config["outboundIpAllowlist"] = [f"{other.edge_address}/32"]
                other.record()
                other.apply_cloud()
            stack.callback(deployment.apply_changes, outboundIpAllowlist=None)
            changed, _ = deployment.apply_changes(outboundIpAllowlist=[f"{deployment.edge_address}/32"])
            assert changed == {"synapse-config", "selfcheck-verify"}, changed
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(provision, (b, c)))
            for other, result in zip((b, c), results):
                other.results = other.provisioning = result
            seconds = time.monotonic() - started
            print(f"\npeer.test and third.test provisioned side by side in {seconds:.0f} s")
            admins = {d.domain: login(d, "admin", d.admin_password)[1] for d in (deployment, b, c)}
            yield Servers(deployment, b, c, user(deployment, admins[deployment.domain], "alice"),
                          user(b, admins[PEER], "bob"), user(c, admins[THIRD], "carol"), seconds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def rooms(servers: Servers) -> dict[str, str]:
    """A room on A with B's user in it, and a room on B with A's user in it."""
    alice, bob = servers.alice, servers.bob
    for owner, guest, name in ((alice, bob, "on-a"), (bob, alice, "on-b")):
        room = owner.ok("POST", "/_matrix/client/v3/createRoom", {"name": name, "invite": [guest.user_id]})["room_id"]
        deadline = time.monotonic() + WAIT
        while True:  # the invite crosses first; then the join goes to the room's server
            status, answer = guest.join(room, owner.deployment.domain)
            if status == 200:
                break
            assert time.monotonic() < deadline, f"{guest.user_id} could not join {name}: {status} {answer}"
            time.sleep(2)
        owner.wait_for(room, f"{guest.user_id} joining", lambda e, g=guest: e["type"] == "m.room.member"
                       and e["state_key"] == g.user_id and e["content"].get("membership") == "join")
        servers.rooms[name] = room
    return servers.rooms


def provision(deployment: Deployment) -> list[Any]:
    assert deployment.recording is not None
    return run_all(deployment.recording)


def checked_from(runner: Deployment, server_name: str) -> dict[str, Any]:
    answer = runner.ssh(f"{SYNAPSE_PYTHON} - {server_name}", stdin=CHECKER.read_text(), timeout=120)
    return dict(json.loads(answer.strip().splitlines()[-1]))


# -- the tests -----------------------------------------------------------------------------------------
def test_each_server_passes_the_federation_testers_checks_from_the_other(servers: Servers) -> None:
    for runner, target in ((servers.b, servers.a), (servers.a, servers.b)):
        report = checked_from(runner, target.domain)
        print(f"\n  {target.domain} checked from {runner.domain}: {report}")
        assert report["errors"] == [], report
        assert report["m.server"] == f"matrix.{target.domain}:443"
        # peer.test's server name belongs to a website: its delegation was reached through the redirect.
        via = f"matrix.{target.domain}" if target is servers.b else target.domain
        assert report["well_known_url"] == f"https://{via}/.well-known/matrix/server"
        assert report["addresses"] == [runner.edge_address]  # the name is proxied: it resolves to the edge
        assert report["verified_keys"][runner.edge_address]


def test_users_of_each_server_are_in_a_room_on_the_other(servers: Servers, rooms: dict[str, str]) -> None:
    for room, member in ((rooms["on-a"], servers.bob), (rooms["on-b"], servers.alice)):
        joined = member.ok("GET", "/_matrix/client/v3/joined_rooms")["joined_rooms"]
        assert room in joined, f"{member.user_id} is not in {room}"


def test_messages_edits_and_reactions_cross_both_ways(servers: Servers, rooms: dict[str, str]) -> None:
    for room in rooms.values():
        for sender, reader in ((servers.alice, servers.bob), (servers.bob, servers.alice)):
            body = f"from {sender.localpart} {secrets.token_hex(4)}"
            event_id = sender.send(room, "m.room.message", {"msgtype": "m.text", "body": body})
            reader.wait_for(room, body, lambda e, b=body: e["content"].get("body") == b)
            edited = f"{body} (edited)"
            sender.send(room, "m.room.message", {
                "msgtype": "m.text", "body": f"* {edited}",
                "m.new_content": {"msgtype": "m.text", "body": edited},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}})
            reader.wait_for(room, "the edit", lambda e, i=event_id, t=edited: e["content"].get("m.relates_to", {})
                            .get("event_id") == i and e["content"].get("m.new_content", {}).get("body") == t)
            reader_reaction = reader.send(room, "m.reaction", {
                "m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "👍"}})
            sender.wait_for(room, "the reaction", lambda e, r=reader_reaction: e["event_id"] == r
                            and e["content"]["m.relates_to"]["key"] == "👍")


def test_typing_crosses_both_ways(servers: Servers, rooms: dict[str, str]) -> None:
    for room in rooms.values():
        for typist, watcher in ((servers.alice, servers.bob), (servers.bob, servers.alice)):
            since = watcher.ok("GET", "/_matrix/client/v3/sync?timeout=0")["next_batch"]
            typist.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/typing/{quote(typist.user_id)}",
                      {"typing": True, "timeout": 30000})
            deadline, seen = time.monotonic() + WAIT, False
            while not seen:
                answer = watcher.ok("GET", f"/_matrix/client/v3/sync?timeout=5000&since={quote(since)}")
                since = answer["next_batch"]
                ephemeral = answer.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
                seen = any(e["type"] == "m.typing" and typist.user_id in e["content"]["user_ids"] for e in ephemeral)
                assert seen or time.monotonic() < deadline, f"{watcher.user_id} never saw {typist.user_id} typing"
            typist.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/typing/{quote(typist.user_id)}", {"typing": False})


def test_a_file_uploaded_on_one_server_is_downloaded_by_a_user_of_the_other(
    servers: Servers, rooms: dict[str, str]
) -> None:
    blob = os.urandom(2 * 1024 * 1024)
    uri = servers.alice.ok("POST", "/_matrix/media/v3/upload?filename=remote.bin", data=blob,
                           content_type="application/octet-stream")["content_uri"]
    servers.alice.send(rooms["on-a"], "m.room.message", {"msgtype": "m.file", "body": "remote.bin", "url": uri})
    origin, media_id = uri.removeprefix("mxc://").split("/", 1)
    assert origin == servers.a.domain
    status, body = servers.bob.api("GET", f"/_matrix/client/v1/media/download/{origin}/{media_id}")
    assert status == 200, body
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(blob).hexdigest()


def test_profiles_are_looked_up_across(servers: Servers) -> None:
    for owner, asker in ((servers.bob, servers.alice), (servers.alice, servers.bob)):
        name = f"{owner.localpart} of {owner.deployment.domain}"
        owner.ok("PUT", f"/_matrix/client/v3/profile/{quote(owner.user_id)}/displayname", {"displayname": name})
        profile = asker.ok("GET", f"/_matrix/client/v3/profile/{quote(owner.user_id)}")
        assert profile.get("displayname") == name


def test_each_server_fetched_the_others_keys_through_well_known_delegation(
    servers: Servers, rooms: dict[str, str]
) -> None:
    """The edge saw each server ask for the other's .well-known on the server name and its keys on the
    delegated name, both on 443; and each server vouches for the other's keys (notary endpoint).
    peer.test's server name is the user's website: there the stack's rule redirects the delegation
    file to matrix.peer.test, and the asker followed the redirect."""
    assert servers.a.edge is not None
    log = servers.a.edge.log
    well_known = "/.well-known/matrix/server"
    for asker, target in ((servers.b, servers.a), (servers.a, servers.b)):
        mine = [e for e in log if e["client"] == asker.host.address]
        asked = [(e["host"], e["path"]) for e in mine if e["status"] == 200]
        if target is servers.b:  # the website's name: redirected, then answered by matrix.
            redirected = [(e["host"], e["path"]) for e in mine if e["status"] in (301, 302, 307, 308)]
            assert (target.domain, well_known) in redirected, redirected
            assert (f"matrix.{target.domain}", well_known) in asked, asked
        else:
            assert (target.domain, well_known) in asked, asked
        assert any(h == f"matrix.{target.domain}" and p.startswith("/_matrix/key/v2/server") for h, p in asked), asked
        notary = servers.alice if asker is servers.a else servers.bob
        answer = notary.ok("GET", f"/_matrix/key/v2/query/{target.domain}")
        (keys,) = answer["server_keys"]
        assert keys["server_name"] == target.domain and asker.domain in keys["signatures"]


def test_a_remote_room_over_the_size_limit_is_refused_until_the_limit_is_raised(servers: Servers) -> None:
    """remoteRoomMaxStateEvents (Synapse's limit_remote_rooms): with a limit of one state event, A's user
    may not join a fresh room on B (a few state events) and is told which setting to raise; at the
    default (500) the same join works."""
    a, alice, bob = servers.a, servers.alice, servers.bob
    room = bob.ok("POST", "/_matrix/client/v3/createRoom", {"name": "big enough", "preset": "public_chat"})["room_id"]
    try:
        changed, _ = a.apply_changes(remoteRoomMaxStateEvents=1)
        assert changed == {"synapse-config", "selfcheck-verify"}, changed
        status, answer = alice.join(room, PEER)
        print(f"\n  joining a {PEER} room over the limit: {status} {answer}")
        assert status == 400 and answer.get("errcode") == "M_RESOURCE_LIMIT_EXCEEDED", answer
        assert "remoteRoomMaxStateEvents" in answer.get("error", ""), answer
        assert room not in alice.ok("GET", "/_matrix/client/v3/joined_rooms")["joined_rooms"]
    finally:
        a.apply_changes(remoteRoomMaxStateEvents=None)
    deadline = time.monotonic() + WAIT
    while (status := alice.join(room, PEER)[0]) != 200:
        assert time.monotonic() < deadline, f"{alice.user_id} could not join at the default limit: {status}"
        time.sleep(2)


def _messages_cross_both_ways(servers: Servers, rooms: dict[str, str], label: str) -> None:
    for room in rooms.values():
        for sender, reader in ((servers.alice, servers.bob), (servers.bob, servers.alice)):
            body = f"{label} from {sender.localpart} {secrets.token_hex(4)}"
            sender.send(room, "m.room.message", {"msgtype": "m.text", "body": body})
            reader.wait_for(room, body, lambda e, b=body: e["content"].get("body") == b)


def _routed_since(a: Deployment, line: int) -> list[Routed]:
    return parse(a.ssh(f"tail -n +{line + 1} {UPSTREAM_LOG}"))


def test_with_synapse_workers_sync_federation_and_media_go_to_the_workers(
    servers: Servers, rooms: dict[str, str]
) -> None:
    """synapseWorkers on A (after a resize, as the runbook in docs/grow.md says): every worker runs, messages,
    a file and syncs still cross both ways, and nginx's upstream log shows which process answered; A's
    outbound federation leaves from the federation sender. Then off again: the workers and Redis stop,
    and federation still works."""
    a, alice, bob = servers.a, servers.alice, servers.bob
    try:
        resized, _ = a.apply_changes(dropletSize=WORKERS_SIZE)
        print(f"\n  resize to {WORKERS_SIZE}: {sorted(resized)}")
        sent_to_peer = f"grep -c 'PUT matrix-federation://{PEER}/_matrix/federation/v1/send/' "
        main_sent = int(a.ssh(sent_to_peer + "/var/log/matrix-synapse/homeserver.log || true").strip() or 0)
        changed, results = a.apply_changes(synapseWorkers=True)
        assert changed == WORKERS_ON, changed
        assert all(r.returncode == 0 for r in results)
        for result in results:
            print(f"  {result.name:24s} {result.seconds:6.1f} s")
        active = a.ssh(f"systemctl is-active matrix-synapse redis-server {' '.join(WORKER_UNITS)}").split()
        assert active == ["active"] * (2 + len(WORKER_UNITS)), active
        start = int(a.ssh(f"wc -l < {UPSTREAM_LOG}").strip() or 0)

        _messages_cross_both_ways(servers, rooms, "with workers")
        alice.ok("GET", "/_matrix/client/v3/sync?timeout=0")
        # Element X's sync (simplified sliding sync): answered with a position, by the sync worker.
        sliding = alice.ok("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0",
                           {"lists": {"all": {"ranges": [[0, 10]], "required_state": [], "timeline_limit": 1}}})
        assert isinstance(sliding["pos"], str) and sliding["lists"]["all"]["count"] >= 1, sliding
        blob = os.urandom(300_000)
        uri = alice.ok("POST", "/_matrix/media/v3/upload?filename=w.bin", data=blob,
                       content_type="application/octet-stream")["content_uri"]
        origin, media_id = uri.removeprefix("mxc://").split("/", 1)
        status, body = bob.api("GET", f"/_matrix/client/v1/media/download/{origin}/{media_id}")
        assert status == 200 and body == blob, status

        routed = _routed_since(a, start)
        by = {(r.process, r.uri.split("/")[3] if r.uri.startswith("/_matrix/") else r.uri) for r in routed}
        print(f"  A's upstream log since the switch: {len(routed)} requests, "
              f"{sorted({r.process for r in routed})}")

        def went(process: str, pattern: str) -> bool:
            return any(r.process == process and re.search(pattern, r.uri) and r.status < 500 for r in routed)

        assert went("sync1", r"^/_matrix/client/v3/sync$"), by
        assert went("sync1", r"^/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync$"), by
        assert went("client1", r"^/_matrix/federation/v1/send/"), by  # B's transactions into A
        assert went("client1", r"^/_matrix/client/v3/rooms/.*/send/"), by
        assert went("media1", r"^/_matrix/media/v3/upload$"), by
        assert went("media1", r"^/_matrix/federation/v1/media/download/"), by  # B fetching A's file
        assert not any(r.process == "main" and re.search(r"/sync$|/federation/v1/send/|/media/", r.uri)
                       for r in routed), by
        # A's transactions to B left from the federation sender: its log names them; the main process's
        # log names no new one (Synapse flushes its log file every 5 s: wait that out first).
        time.sleep(6)
        sender = int(a.ssh(sent_to_peer + "/var/log/matrix-synapse/federation_sender1.log || true").strip() or 0)
        main_after = int(a.ssh(sent_to_peer + "/var/log/matrix-synapse/homeserver.log || true").strip() or 0)
        print(f"  transactions to {PEER}: {sender} from federation_sender1, {main_after - main_sent} from main")
        assert sender > 0 and main_after == main_sent, (sender, main_sent, main_after)

        changed, results = a.apply_changes(synapseWorkers=None)
        assert changed == WORKERS_ON, changed  # synapse-redis is gone: its resource is deleted
        assert {r.name for r in results} == WORKERS_OFF and all(r.returncode == 0 for r in results)
        left = a.ssh(f"systemctl is-active redis-server {' '.join(WORKER_UNITS)} || true").split()
        assert "active" not in left, left
        assert a.ssh("ls /etc/matrix-synapse/workers 2>/dev/null | wc -l").strip() == "0"
        _messages_cross_both_ways(servers, rooms, "workers off")
    finally:
        if a.config.get("synapseWorkers"):
            a.apply_changes(synapseWorkers=None)
        a.apply_changes(dropletSize=None)


def test_an_allowlist_refuses_a_third_server_both_ways(servers: Servers, rooms: dict[str, str]) -> None:
    a, b, alice, bob, carol = servers.a, servers.b, servers.alice, servers.bob, servers.carol

    def profile_lookups() -> dict[str, int]:
        """Each of A's and B's users and C's user looking the other up: one federation request each way."""
        return {f"{asker.deployment.domain}->{owner.deployment.domain}":
                asker.api("GET", f"/_matrix/client/v3/profile/{quote(owner.user_id)}")[0]
                for asker, owner in ((alice, carol), (carol, alice), (bob, carol), (carol, bob))}

    open_federation = profile_lookups()
    assert set(open_federation.values()) == {200}, open_federation  # C is reachable both ways before
    try:
        for deployment, peer in ((a, b), (b, a)):
            changed, _ = deployment.apply_changes(federation="allowlist", federationAllowlist=[peer.domain])
            assert "synapse-config" in changed
        restricted = profile_lookups()
        print(f"\n  profile look-ups with {THIRD}: open {open_federation}, allowlist {restricted}")
        assert 200 not in restricted.values(), restricted
        # C to A and B: invites and joins are refused by the allowlisting servers.
        c_room = carol.ok("POST", "/_matrix/client/v3/createRoom", {"name": "on-c", "preset": "public_chat"})["room_id"]
        for member in (alice, bob):
            status, answer = carol.api("POST", f"/_matrix/client/v3/rooms/{quote(c_room)}/invite",
                                       {"user_id": member.user_id})
            assert status != 200, f"{member.deployment.domain} accepted an invite from {THIRD}: {answer}"
            status, answer = member.join(c_room, THIRD)  # outbound to C: refused by the member's own server
            assert status != 200, f"{member.user_id} joined a room on {THIRD}: {answer}"
            assert c_room not in member.ok("GET", "/_matrix/client/v3/joined_rooms")["joined_rooms"]
        for room, server in ((rooms["on-a"], a.domain), (rooms["on-b"], b.domain)):
            status, answer = carol.join(room, server)
            assert status != 200, f"{THIRD} joined a room on {server}: {answer}"
        # A and B still talk.
        body = f"after the allowlist {secrets.token_hex(4)}"
        bob.send(rooms["on-a"], "m.room.message", {"msgtype": "m.text", "body": body})
        alice.wait_for(rooms["on-a"], body, lambda e: e["content"].get("body") == body)
    finally:
        for deployment in (a, b):
            deployment.apply_changes(federation=None, federationAllowlist=None)


def test_a_website_on_the_server_name_is_left_alone_and_delegation_is_redirected(servers: Servers) -> None:
    """On peer.test the user's website owns the server name: its record is untouched, the stack added
    none there, and only /.well-known/matrix/ is redirected to the homeserver's name."""
    b = servers.b
    zone = b.host.cloudflare
    assert zone is not None and b.recording is not None
    on_name = [r for r in zone.records.values() if r["name"] == PEER and r["type"] in ("A", "AAAA")]
    assert [r["comment"] for r in on_name] == [WEBSITE_COMMENT]
    status, headers, _ = edge_request(b, PEER, "/.well-known/matrix/server")
    assert status == 302 and headers["location"] == f"https://matrix.{PEER}/.well-known/matrix/server"
    status, headers, _ = edge_request(b, PEER, "/")
    assert "location" not in headers, headers  # the website's own pages go to the website
    assert any(r.name == "edge-delegation" for r in b.recording.of_type("pulumi-python:dynamic:Resource"))


def test_the_users_own_challenge_rule_stops_only_what_is_not_matrix(servers: Servers) -> None:
    """The user challenges every request to peer.test's names; the stack's skip rule comes before it, so
    Matrix traffic passes (every federation test here went through it) and Element's page is challenged,
    which the self-check reports as a warning (browsers pass challenges) while its Matrix checks pass."""
    b = servers.b
    zone = b.host.cloudflare
    assert zone is not None
    refs = [r["ref"] for r in zone.rules_of("http_request_firewall_custom")]
    assert refs.index("matrix-peer-peer-test-matrix-unchallenged") < refs.index(CATCH_ALL), refs
    status, headers, _ = edge_request(b, f"chat.{PEER}", "/")
    assert status == 403 and headers.get("cf-mitigated") == "challenge"
    status, _, _ = edge_request(b, f"matrix.{PEER}", "/_matrix/client/versions")
    assert status == 200
    (check,) = [r for r in b.provisioning if r.name == "selfcheck-verify"]
    assert check.returncode == 0
    assert f"public path: Element config: https://chat.{PEER}/config.json is behind a Cloudflare challenge" in check.stderr
