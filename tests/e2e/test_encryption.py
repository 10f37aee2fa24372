"""End-to-end encryption between two users, as Element does it: each device publishes its keys, the sender
shares a Megolm session with the other's devices over to-device messages, and the message travels as
`m.room.encrypted`. The server stores and relays what it cannot read.

The clients are matrix-nio with its encryption (vodozemac, the Rust implementation of Olm and Megolm that
the Element apps use too), talking through the edge like any device.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from components import paths
from tests.e2e.accounts import create_user, login
from tests.e2e.clients import run, session
from tests.e2e.deployment import Deployment

pytestmark = pytest.mark.e2e
MEGOLM = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


def encrypting_client(deployment: Deployment, user: str, store: Path) -> AsyncClient:
    """A client with encryption on and its own key store, as a user's Element device is."""
    client = AsyncClient(deployment.homeserver, user, store_path=str(store),
                         config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
    client.client_session = session(deployment.edge_address, deployment.ca_file)
    return client


def test_two_users_exchange_a_message_the_server_stores_only_encrypted(deployment: Deployment) -> None:
    _, admin_token = login(deployment, "admin", deployment.admin_password)
    passwords = {name: secrets.token_urlsafe(16) for name in ("erin", "frank")}
    for name, password in passwords.items():
        create_user(deployment, admin_token, name, password)
    plaintext = f"only erin and frank can read this: {secrets.token_hex(8)}"

    async def go() -> tuple[str, str, str]:
        with tempfile.TemporaryDirectory() as erin_store, tempfile.TemporaryDirectory() as frank_store:
            erin = encrypting_client(deployment, f"@erin:{deployment.domain}", Path(erin_store))
            frank = encrypting_client(deployment, f"@frank:{deployment.domain}", Path(frank_store))
            try:
                for client, name in ((erin, "erin"), (frank, "frank")):
                    assert isinstance(await client.login(passwords[name], device_name=f"{name}'s e2e device"),
                                      LoginResponse)
                    if client.should_upload_keys:
                        await client.keys_upload()
                room = await erin.room_create(name="secret", invite=[frank.user_id], initial_state=[MEGOLM])
                assert isinstance(room, RoomCreateResponse), room
                assert isinstance(await frank.join(room.room_id), JoinResponse)
                await erin.sync(timeout=3000, full_state=True)
                await frank.sync(timeout=3000, full_state=True)
                assert erin.rooms[room.room_id].encrypted
                sent = await erin.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": plaintext},
                                            ignore_unverified_devices=True)
                assert isinstance(sent, RoomSendResponse), sent
                received = ""
                for _ in range(10):  # the to-device keys and the event arrive over a sync or two
                    answer = await frank.sync(timeout=3000)
                    joined = answer.rooms.join.get(room.room_id) if isinstance(answer, SyncResponse) else None
                    for event in joined.timeline.events if joined else []:
                        assert not isinstance(event, MegolmEvent), f"frank could not decrypt: {event}"
                        if isinstance(event, RoomMessageText) and event.event_id == sent.event_id:
                            received = event.body
                    if received:
                        break
                return room.room_id, sent.event_id, received
            finally:
                await erin.close()
                await frank.close()

    room_id, event_id, received = run(go)
    assert received == plaintext
    stored = deployment.ssh(f"runuser -u postgres -- psql -XAt -d {paths.POSTGRES_DB}",
                            stdin=f"SELECT e.type, j.json FROM events e JOIN event_json j USING (event_id) "
                                  f"WHERE e.event_id = '{event_id}';\n")
    kind, json_text = stored.strip().split("|", 1)
    print(f"\n  stored as {kind}, {len(json_text)} bytes of JSON")
    assert kind == "m.room.encrypted" and "ciphertext" in json_text
    assert plaintext not in json_text
    assert deployment.ssh(f"runuser -u postgres -- psql -XAt -d {paths.POSTGRES_DB}",
                          stdin=f"SELECT count(*) FROM event_json WHERE json LIKE '%{plaintext.rsplit(' ', 1)[1]}%';\n"
                          ).strip() == "0"
    assert room_id.startswith("!")
