"""What each supported droplet image brings: the Debian release, its Python and its PostgreSQL.

One table, so the steps, the dependency locks, the settings and the tests agree on what a
`dropletImage` means. Debian 13 (trixie) is the default; Debian 12 (bookworm) is still accepted,
and a move from 12 to 13 upgrades the database on the volume (postgres/install.sh.j2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    """One Debian release as the server layer sees it."""

    image_prefix: str  # DigitalOcean's image slugs start with it: debian-13-x64
    codename: str
    python: str  # python3's version: the Synapse lock is resolved for it
    postgres_major: str  # the postgresql-NN package of the release
    # Debian 13's stock nginx.conf already says `server_tokens off;` at http level, where a second
    # one is a fatal "duplicate" error; Debian 12's leaves it commented out.
    nginx_conf_hides_version: bool

    @property
    def postgres_unit(self) -> str:
        return f"postgresql@{self.postgres_major}-main.service"

    @property
    def postgres_conf_dir(self) -> str:
        return f"/etc/postgresql/{self.postgres_major}/main"


PLATFORMS = (
    Platform("debian-12", "bookworm", "3.11", "15", nginx_conf_hides_version=False),
    Platform("debian-13", "trixie", "3.13", "17", nginx_conf_hides_version=True),
)
DEFAULT_IMAGE = "debian-13-x64"


def platform_of(image: str) -> Platform | None:
    """The platform of a DigitalOcean image slug, or None for an image the server layer does not target."""
    for platform in PLATFORMS:
        if image.startswith(platform.image_prefix + "-"):
            return platform
    return None


def older_platforms(platform: Platform) -> tuple[Platform, ...]:
    """The releases a volume may come from when it is attached to `platform` (an upgrade)."""
    return tuple(p for p in PLATFORMS if int(p.postgres_major) < int(platform.postgres_major))
