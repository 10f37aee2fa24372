"""forgottenRoomPurgeDays on a real Synapse (build/synapse-venv, SQLite) from the stack's homeserver.yaml: when the
last person here leaves and forgets a room, Synapse schedules its purge that many days later; with 0, never; a room
someone here still belongs to is never scheduled."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.templates.homeserver import call, login, register, running_synapse

DAY_MS = 86_400_000


def _session(config: Path, base_url: str, tmp: Path, localpart: str, admin: bool = False) -> str:
    register(config, base_url, localpart, f"{localpart}-password-long", tmp, admin=admin)
    status, answer = login(base_url, localpart, f"{localpart}-password-long")
    assert status == 200, answer
    return str(answer["access_token"])


def _leave_and_forget(base_url: str, token: str, room: str) -> None:
    for action in ("leave", "forget"):
        status, answer = call(base_url, "POST", f"/_matrix/client/v3/rooms/{room}/{action}", {}, token=token)
        assert status == 200, answer


def _purges(base_url: str, admin_token: str, room_id: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"action_name": "purge_room", "resource_id": room_id})
    status, answer = call(base_url, "GET", f"/_synapse/admin/v1/scheduled_tasks?{query}", token=admin_token)
    assert status == 200, answer
    return list(answer["scheduled_tasks"])


@pytest.mark.parametrize("days", [3, 0])
def test_a_room_everyone_here_forgot_is_purged_after_the_days_set(tmp_path: Path, days: int) -> None:
    with running_synapse(tmp_path, forgottenRoomPurgeDays=str(days)) as (config, base_url):
        admin = _session(config, base_url, tmp_path, "boss", admin=True)
        ada, ben = (_session(config, base_url, tmp_path, name) for name in ("ada", "ben"))
        status, created = call(base_url, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token=ada)
        assert status == 200, created
        room_id = created["room_id"]
        room = urllib.parse.quote(room_id)
        assert call(base_url, "POST", f"/_matrix/client/v3/join/{room}", {}, token=ben)[0] == 200

        _leave_and_forget(base_url, ada, room)
        assert _purges(base_url, admin, room_id) == []  # ben is still in it
        left_at = time.time() * 1000
        _leave_and_forget(base_url, ben, room)
        scheduled = _purges(base_url, admin, room_id)
        if days == 0:
            assert scheduled == []
        else:
            (task,) = scheduled
            assert task["status"] == "scheduled"
            assert abs(task["timestamp_ms"] - (left_at + days * DAY_MS)) < 60_000
