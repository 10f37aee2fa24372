"""The server's people and invitations as settings: what a listed account and a registration token are, and the
checks that refuse a bad entry with the one-line error every setting gives (setting_checks.invalid).

The `team` step (services/team.py) makes the server match: listed accounts exist and are unlocked, accounts the
stack created and no longer lists are locked, and each invitation is a registration token with its uses and expiry.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from components.setting_checks import email_address, invalid, localpart

# Synapse refuses to register an all-digit local part (reserved for guests) and one starting with an
# underscore (reserved for application services); an account it would refuse to a user is refused here too.
_RESERVED_LOCALPART = re.compile(r"^(\d+|_.*)$")
_DISPLAY_NAME_MAX = 256  # Synapse's limit on a display name
_INVITATION_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MAX_INVITATION_USES = 1000


@dataclass(frozen=True)
class TeamMember:
    """One listed account: created once with a generated password, kept unlocked while listed."""

    localpart: str
    admin: bool = False
    display_name: str = ""  # "" = Synapse's default (the local part); set once, at creation
    email: str = ""  # "" = none; else the account's e-mail address (password reset, notifications)

    def summary(self) -> str:
        """What a preview shows of this member (the team step's triggers)."""
        return ",".join(part for part in ("admin" if self.admin else "user", self.display_name, self.email) if part)


@dataclass(frozen=True)
class Invitation:
    """A registration token: `uses` sign-ups, until the end of `expires` (UTC) or, when empty, for good."""

    name: str
    uses: int
    expires: str = ""  # YYYY-MM-DD, "" = never

    @property
    def expiry_ms(self) -> int | None:
        """Synapse's expiry_time: the first millisecond after the expiry day (UTC)."""
        if not self.expires:
            return None
        day = datetime.date.fromisoformat(self.expires) + datetime.timedelta(days=1)
        return int(datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp() * 1000)

    def summary(self) -> str:
        return f"uses={self.uses},expires={self.expires or 'never'}"


def _entries(key: str, value: Any, shorthand: str) -> list[dict[str, Any]]:
    """A list of objects; a plain string item stands for {shorthand: item} (and `pulumi new`'s comma-separated
    text for a list of them)."""
    if not isinstance(value, list):
        raise invalid(key, value, f"a list, e.g. pulumi config set --path '{key}[0].{shorthand}' <value>")
    entries = []
    for i, item in enumerate(value):
        entry = {shorthand: item} if isinstance(item, str) else item
        if not isinstance(entry, dict):
            raise invalid(f"{key}[{i}]", item, f"an object with {shorthand} (or just the {shorthand} as text)")
        entries.append(entry)
    return entries


def _fields(key: str, entry: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise invalid(f"{key}.{unknown[0]}", entry[unknown[0]], f"one of the fields {', '.join(allowed)}")


# `pulumi config set --path` may store a field's true or 10 as text: read both forms alike.
def _flag(key: str, value: Any) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    if not isinstance(value, bool):
        raise invalid(key, value, "true or false")
    return bool(value)


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def team_members(key: str, value: Any) -> tuple[TeamMember, ...]:
    """The `users` setting: local parts Synapse would register, each listed once."""
    members: list[TeamMember] = []
    for i, entry in enumerate(_entries(key, value, "localpart")):
        at = f"{key}[{i}]"
        _fields(at, entry, ("localpart", "admin", "displayName", "email"))
        name = localpart(f"{at}.localpart", entry.get("localpart"))
        if _RESERVED_LOCALPART.match(name):
            raise invalid(f"{at}.localpart", name, "a user name Synapse lets people register: not only digits and "
                          "not starting with _ (reserved for guests and bridges)")
        admin = _flag(f"{at}.admin", entry.get("admin", False))
        display_name = entry.get("displayName", "")
        if not isinstance(display_name, str) or len(display_name) > _DISPLAY_NAME_MAX or "\n" in display_name:
            raise invalid(f"{at}.displayName", display_name, f"one line of at most {_DISPLAY_NAME_MAX} characters")
        email = entry.get("email", "")
        if email:
            email = email_address(f"{at}.email", email).lower()
        if any(m.localpart == name for m in members):
            raise invalid(f"{at}.localpart", name, "each user listed once (remove the duplicate entry)")
        members.append(TeamMember(name, admin, display_name.strip(), email))
    emails = [m.email for m in members if m.email]
    duplicate = next((e for e in emails if emails.count(e) > 1), None)
    if duplicate:
        raise invalid(key, duplicate, "an e-mail address on one account only (Synapse binds an address to one user)")
    return tuple(members)


def invitations(key: str, value: Any) -> tuple[Invitation, ...]:
    """The `invitations` setting: named registration tokens, each with its uses and an optional expiry day."""
    found: list[Invitation] = []
    for i, entry in enumerate(_entries(key, value, "name")):
        at = f"{key}[{i}]"
        _fields(at, entry, ("name", "uses", "expires"))
        name = entry.get("name")
        if not isinstance(name, str) or not _INVITATION_NAME.match(name):
            raise invalid(f"{at}.name", name, "a name of 1-32 lower-case letters, digits and inner dashes, e.g. "
                          "spring-team")
        uses = _number(entry.get("uses"))
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_INVITATION_USES:
            raise invalid(f"{at}.uses", uses, f"how many people may sign up with it: a whole number from 1 to "
                          f"{MAX_INVITATION_USES} (pulumi config set --path '{at}.uses' 10)")
        expires = entry.get("expires", "")
        if expires:
            try:
                datetime.date.fromisoformat(expires if isinstance(expires, str) and len(expires) == 10 else "")
            except ValueError:
                raise invalid(f"{at}.expires", expires, "the last day it works, YYYY-MM-DD (UTC), or empty for "
                              "never") from None
        if any(inv.name == name for inv in found):
            raise invalid(f"{at}.name", name, "each invitation named once (remove the duplicate entry)")
        found.append(Invitation(name, uses, expires or ""))
    return tuple(found)
