"""Element Web: a pinned release tarball (checksum verified) behind a symlink, plus config.json.

The config lives at a stable path outside the release and is copied into the release that is
served, so upgrading Element (a new versioned directory) keeps it; the previous release stays
on disk for a quick rollback (`element-previous`).
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import render
from components.services import ServiceContext

# Only this service uses it: the config that every release gets a copy of.
ELEMENT_CONFIG = "/etc/element-web/config.json"


def config_json(ctx: ServiceContext) -> str:
    s = ctx.settings
    return render(
        "element/config.json.j2",
        homeserver_url=s.homeserver_url,
        server_name=s.domain,
        element_url=s.element_url,
        enable_registration=s.enable_registration,
    )


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    script = render(
        "element/install.sh.j2",
        version=s.element_version,
        sha256=s.element_sha256,
        url=s.element_tarball_url,
        root=paths.ELEMENT_ROOT,
        link=paths.ELEMENT_LINK,
        config=ELEMENT_CONFIG,
    )
    return [
        StepSpec(
            name="element-web",
            script=script,
            files=[RemoteFile(ELEMENT_CONFIG, config_json(ctx), mode="0644")],
            versions={"element": s.element_version, "sha256": s.element_sha256},
        )
    ]
