"""Bot Fight Mode off, and nothing else of the zone's bot settings touched.

Bot Fight Mode challenges clients that look automated, other homeservers and Matrix clients among them,
and no rule can skip it (Cloudflare docs, "Configure a rule with the Skip action"), so the stack turns it
off. It is a zone setting: the user's other sites lose it too, which `pulumi up` says (zone.py warns
while it is on), and it stays off when the stack is destroyed (the resource is retained, and its delete
does nothing), so destroying one stack never turns it back on under another stack of the same zone.

Not `cloudflare.BotManagement`: terraform-provider-cloudflare sends `is_robots_txt_managed` with its
schema default, false, on every create and update (internal/services/bot_management/schema.go, model.go),
which would switch off a Cloudflare-managed robots.txt for the whole zone. The API's PUT changes only the
fields a request names (API reference, "Update Zone Bot Management Config"), so this resource names one.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from components.cloud.cloudflare_api import CloudflareProvider


class BotFightModeSettingFailed(RuntimeError):
    """The zone still has Bot Fight Mode on after the write."""


class BotFightModeOffProvider(CloudflareProvider):
    """Keeps `fight_mode` false in the zone's bot management configuration."""

    def _off(self, zone_id: str) -> dict[str, Any]:
        before = self._call("GET", f"/zones/{zone_id}/bot_management")
        if before.get("fight_mode"):
            self._call("PUT", f"/zones/{zone_id}/bot_management", {"fight_mode": False})
        after = self._call("GET", f"/zones/{zone_id}/bot_management")
        if after.get("fight_mode"):
            raise BotFightModeSettingFailed(f"zone {zone_id}: Bot Fight Mode is still on after turning it off")
        return {"zone_id": zone_id, "fight_mode": False, "was_on": bool(before.get("fight_mode"))}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["zone_id"], outs=self._off(props["zone_id"]))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        current = self._call("GET", f"/zones/{props['zone_id']}/bot_management")
        return ReadResult(id_, {**props, "fight_mode": bool(current.get("fight_mode"))})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Turned on again (seen by `pulumi refresh`): turn it off again. Another zone is another resource."""
        return DiffResult(changes=olds.get("fight_mode") is not False or olds.get("zone_id") != news.get("zone_id"),
                          replaces=["zone_id"] if olds.get("zone_id") != news.get("zone_id") else [])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._off(news["zone_id"]))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing: Bot Fight Mode stays off (another stack of the zone may need it off)."""


class BotFightModeOff(Resource):
    """The zone's Bot Fight Mode, off."""

    def __init__(self, name: str, zone_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(BotFightModeOffProvider(), name, {"zone_id": zone_id, "fight_mode": False, "was_on": None},
                         opts)
