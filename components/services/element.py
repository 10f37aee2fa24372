"""Element Web: a release tarball verified by Element's release signature, behind a symlink.

Integrity: the step downloads the tarball and its detached `.asc` signature and checks the
signature with gpg against a pinned key (Element's release key, or a mirror's own key given in
`elementSigningKey` + `elementSigningFingerprint`) before anything is unpacked; `elementSha256`,
when set, is checked too. A release that fails a check is never unpacked and the served release
stays as it was.

The config lives at a stable path outside the release and is copied into the release that is
served, so upgrading Element (a new versioned directory) keeps it; the previous release stays
on disk for a quick rollback (`element-previous`).
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext

# Only this service uses them: the config every release gets a copy of, and the key that signs
# the releases this server accepts.
ELEMENT_CONFIG = "/etc/element-web/config.json"
ELEMENT_SIGNING_KEY = "/etc/element-web/release-signing-key.asc"

# Element's release signing key, "Element Releases <releases@riot.im>" (rsa4096, 2021-04-21, no
# expiry; releases are signed by its subkey E95B7699E80B68A9EAD9A19A2BAA9B8552BD9047). The key
# block in templates/element/element-release-key.asc is element-hq/packages.element.io's
# packages.element.io/element-release-key.asc, the file Element's install docs point to and its
# own Debian packaging imports before `gpg --verify` (element-web build_debian.yaml). The same
# fingerprint is pinned by Arch Linux's element-web PKGBUILD (validpgpkeys). A test checks that
# the file holds exactly this key.
ELEMENT_RELEASE_KEY_FINGERPRINT = "712BFBEE92DCA45252DB17D7C7BE97EFA179B100"
ELEMENT_RELEASE_KEY_FILE = "element/element-release-key.asc"


def signing_key(ctx: ServiceContext) -> tuple[str, str]:
    """The key block and primary-key fingerprint a release must be signed with."""
    s = ctx.settings
    if s.element_signing_key:
        return s.element_signing_key, s.element_signing_fingerprint
    return read(ELEMENT_RELEASE_KEY_FILE), ELEMENT_RELEASE_KEY_FINGERPRINT


def config_json(ctx: ServiceContext) -> str:
    s = ctx.settings
    return render(
        "element/config.json.j2",
        homeserver_url=s.homeserver_url,
        server_name=s.domain,
        element_url=s.element_url,
        enable_registration=s.enable_registration,
        # matrixRtc: every call goes to Element Call on this server's own backend (never Jitsi); without it, no
        # group call is offered at all, as the only backends would be a third party's.
        calls=s.matrix_rtc,
    )


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    key_block, fingerprint = signing_key(ctx)
    script = render(
        "element/install.sh.j2",
        version=s.element_version,
        sha256=s.element_sha256,
        url=s.element_tarball_url,
        signature_url=s.element_signature_url,
        signing_key=ELEMENT_SIGNING_KEY,
        fingerprint=fingerprint,
        root=paths.ELEMENT_ROOT,
        link=paths.ELEMENT_LINK,
        config=ELEMENT_CONFIG,
    )
    return [
        StepSpec(
            name="element-web",
            script=script,
            files=[
                RemoteFile(ELEMENT_CONFIG, config_json(ctx), mode="0644"),
                RemoteFile(ELEMENT_SIGNING_KEY, key_block, mode="0644"),
            ],
            versions={"element": s.element_version, "sha256": s.element_sha256, "signing-key": fingerprint},
        )
    ]
