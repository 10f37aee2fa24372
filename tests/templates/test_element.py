"""Element Web: config.json semantics, and the real step bundle run against signed stand-in releases.

The bundle (prelude + files + script, exactly as the server receives it) runs as root in private
mount and network namespaces: overlays over /etc and /var/lib, a tmpfs over /var/www, and a local
HTTP server standing in for GitHub. The stand-in tarballs are signed by keys this test generates
with real gpg, and the step verifies them with real gpg. Nothing on the host changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.remote import StepSpec, bundle_text
from components.services import ServiceContext, element
from tests.signing import Signer
from tests.templates.conftest import FAKE_SECRETS, make_context
from tests.templates.release_mirror import mirror_driver, write_mirror_tls
from tests.templates.sandbox import run_in_sandbox

PORT = 8765


def _step(ctx: ServiceContext) -> StepSpec:
    (step,) = element.steps(ctx)
    return step


def _config(ctx: ServiceContext) -> dict[str, Any]:
    file = next(f for f in _step(ctx).files if f.path == element.ELEMENT_CONFIG)
    assert isinstance(file.content, str)
    config: dict[str, Any] = json.loads(file.content)
    return config


@pytest.mark.parametrize(
    "overrides",
    [{}, {"enableRegistration": "true"}, {"matrixSubdomain": "hs", "chatSubdomain": "web", "domain": "example.net"}],
)
def test_config_json_has_the_keys_element_needs(overrides: dict[str, str]) -> None:
    ctx = make_context(**overrides)
    s = ctx.settings
    config = _config(ctx)
    assert config["default_server_config"] == {"m.homeserver": {"base_url": f"https://{s.matrix_host}", "server_name": s.domain}}
    # Element refuses to load with a mix of these and default_server_config.
    assert "default_server_name" not in config and "default_hs_url" not in config
    assert "m.identity_server" not in config["default_server_config"] and "default_is_url" not in config
    assert config["disable_custom_urls"] is True and config["disable_guests"] is True
    assert config["brand"] == "Element"
    assert config["room_directory"] == {"servers": [s.domain]}
    assert config["permalink_prefix"] == f"https://{s.chat_host}"
    assert config["setting_defaults"] == {"UIFeature.registration": s.enable_registration, "UIFeature.widgets": False}
    assert config["integrations_ui_url"] == "" and config["integrations_rest_url"] == ""
    assert config["integrations_widgets_urls"] == []
    assert config["bug_report_endpoint_url"] is None
    assert config["show_labs_settings"] is False


def test_calls_use_no_third_party_infrastructure() -> None:
    """No MatrixRTC backend yet: Element Call, its video rooms and Jitsi (meet.element.io by default) are off;
    1:1 legacy calls stay, relayed by the stack's coturn (UIFeature.voip is left at its default)."""
    config = _config(make_context())
    assert config["element_call"] == {"disable": True}
    assert config["features"] == {
        "feature_group_calls": False,
        "feature_video_rooms": False,
        "feature_element_call_video_rooms": False,
    }
    # Element hides the call buttons of rooms with more than two members (Jitsi's) without widgets.
    assert config["setting_defaults"]["UIFeature.widgets"] is False
    assert "UIFeature.voip" not in config["setting_defaults"]
    assert "showCallButtonsInComposer" not in config["setting_defaults"]
    # Nothing names another party's call service.
    assert "jitsi" not in config and "widget_build_url" not in config
    assert not any(host in json.dumps(config) for host in ("element.io", "matrix.org", "livekit"))


def test_registration_setting_follows_the_config() -> None:
    assert _config(make_context(enableRegistration="true"))["setting_defaults"]["UIFeature.registration"] is True
    assert _config(make_context(enableRegistration="false"))["setting_defaults"]["UIFeature.registration"] is False


def test_versions_and_files() -> None:
    ctx = make_context()
    step = _step(ctx)
    s = ctx.settings
    assert step.name == "element-web"
    assert step.versions == {"element": s.element_version, "sha256": "",
                             "signing-key": element.ELEMENT_RELEASE_KEY_FINGERPRINT}
    assert [(f.path, f.mode, f.owner) for f in step.files] == [
        (element.ELEMENT_CONFIG, "0644", "root"), (element.ELEMENT_SIGNING_KEY, "0644", "root")]
    assert s.element_tarball_url in step.script and s.element_signature_url in step.script
    assert step.files[1].content == (Path(__file__).parents[2] / "templates" / element.ELEMENT_RELEASE_KEY_FILE).read_text()
    for secret in FAKE_SECRETS.values():
        assert all(secret.strip() not in text for text in (step.script, *(str(f.content) for f in step.files)))


def test_the_pinned_key_file_is_elements_release_key(tmp_path: Path) -> None:
    """gpg itself reads the pinned file: exactly one primary key, the documented fingerprint."""
    key_file = Path(__file__).parents[2] / "templates" / element.ELEMENT_RELEASE_KEY_FILE
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys", str(key_file)],
                             capture_output=True, text=True, check=True, env={**os.environ, "GNUPGHOME": str(tmp_path)}).stdout
    records = [line.split(":") for line in listing.splitlines()]
    primaries = [r for r in records if r[0] == "pub"]
    fingerprints = [r[9] for r in records if r[0] == "fpr"]
    assert len(primaries) == 1 and fingerprints[0] == element.ELEMENT_RELEASE_KEY_FINGERPRINT
    assert "E95B7699E80B68A9EAD9A19A2BAA9B8552BD9047" in fingerprints  # the subkey that signs releases
    assert any(r[0] == "uid" and "releases@riot.im" in r[9] for r in records)


def test_a_mirror_key_replaces_the_pinned_one() -> None:
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGCALb4=\n-----END PGP PUBLIC KEY BLOCK-----"
    step = _step(make_context(elementSigningKey=key, elementSigningFingerprint="AB" * 20))
    assert step.files[1].content == key + "\n"
    assert step.versions["signing-key"] == "AB" * 20 and "ABABABAB" in step.script


# ------------------------------------------------------------------------------------------
# The real bundle in a sandbox

# As on a droplet, where gpg comes without its recommended gpg-agent: the step must not need it.
DRIVER = "if [ -e /usr/bin/gpg-agent ]; then mount --bind /dev/null /usr/bin/gpg-agent; fi\n" + mirror_driver(PORT, r"""
  readlink /var/www/element > "$work/link.$i" || true
  readlink /var/www/element-previous > "$work/previous.$i" || true
  ls -A /var/www > "$work/ls.$i"
  cat /var/www/element/config.json > "$work/config.$i" 2>/dev/null || true
  cat /var/www/element/version > "$work/served.$i" 2>/dev/null || true
""")


def _tarball(version: str, marker: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {"index.html": f"<html>{marker}</html>", "version": version, "config.sample.json": "{}"}
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"element-v{version}/{name}")
            info.size, info.uid, info.gid, info.mode = len(data), 1234, 1234, 0o664
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _run(tmp: Path, bundles: list[str]) -> list[dict[str, Any]]:
    paths_ = []
    for i, text in enumerate(bundles, 1):
        path = tmp / f"bundle{i}.sh"
        path.write_text(text)
        paths_.append(str(path))
    write_mirror_tls(tmp, "element mirror")
    proc = run_in_sandbox(tmp, DRIVER, [str(tmp), *paths_], tmpfs=["/var/www"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = ("rc", "out", "link", "previous", "ls", "config", "served")
    return [{k: (tmp / f"{k}.{i}").read_text().strip() for k in keys} for i in range(1, len(bundles) + 1)]


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Signer, Signer]]:
    """The mirror's release key, and a stranger's key that signs what the mirror never signed."""
    home = tmp_path_factory.mktemp("gpg")
    release, stranger = Signer(home / "release", "Release Signer"), Signer(home / "stranger", "Someone Else")
    yield release, stranger
    release.close()
    stranger.close()


def _bundle(version: str, key: Signer, fingerprint: str | None = None, key_block: str | None = None,
            **config: str) -> tuple[str, str]:
    """The step's bundle for `version`, pinned to `key` (or to an explicit key block and fingerprint)."""
    ctx = make_context(
        elementVersion=version,
        elementDownloadUrl=f"https://127.0.0.1:{PORT}/element-v{{version}}.tar.gz",
        elementSigningKey=key_block or key.public_key,
        elementSigningFingerprint=fingerprint or key.fingerprint,
        **config,
    )
    step = _step(ctx)
    return bundle_text(step, [str(f.content) for f in step.files]), element.config_json(ctx)


def _publish(serve: Path, version: str, signer: Signer | None, tamper: bool = False, signature: str | None = None) -> Path:
    """Put element-v<version>.tar.gz (and its .asc unless signer is None) where the server serves it."""
    path = serve / f"element-v{version}.tar.gz"
    path.write_bytes(_tarball(version))
    if signer is not None:
        signer.sign(path)
    if signature is not None:
        path.with_name(path.name + ".asc").write_text(signature)
    if tamper:  # a different tarball behind the same, valid, signature
        path.write_bytes(_tarball(version, marker="<script>steal()</script>"))
    return path


def test_install_upgrade_rollback_and_every_refusal(tmp_path: Path, signers: tuple[Signer, Signer]) -> None:
    release, stranger = signers
    serve = tmp_path / "serve"
    serve.mkdir()
    for v in ("9.0.0", "9.0.1", "9.0.2", "9.0.6", "9.0.7", "9.0.9"):
        _publish(serve, v, release)
    _publish(serve, "9.0.10", stranger)
    _publish(serve, "9.0.3", release, tamper=True)
    _publish(serve, "9.0.4", None)  # no signature published at all
    _publish(serve, "9.0.5", stranger)
    _publish(serve, "9.0.8", None, signature="this is not a signature\n")
    sha107 = hashlib.sha256((serve / "element-v9.0.7.tar.gz").read_bytes()).hexdigest()

    b100, config100 = _bundle("9.0.0", release)
    b101, config101 = _bundle("9.0.1", release, enableRegistration="true")
    b102, _ = _bundle("9.0.2", release, enableRegistration="true")
    tampered, _ = _bundle("9.0.3", release)
    unsigned, _ = _bundle("9.0.4", release)
    foreign, _ = _bundle("9.0.5", release)
    bad_sha, _ = _bundle("9.0.6", release, elementSha256="0" * 64)
    good_sha, _ = _bundle("9.0.7", release, elementSha256=sha107)
    garbage, _ = _bundle("9.0.8", release)
    wrong_pin, _ = _bundle("9.0.9", stranger, fingerprint=release.fingerprint)  # key file != pinned fingerprint
    # A key file that smuggles a second key in after the pinned one: its signatures still do not count.
    both_keys, _ = _bundle("9.0.10", release, key_block=release.public_key + stranger.public_key)
    runs = _run(tmp_path, [b100, b100, b101, b102, tampered, unsigned, foreign, bad_sha, garbage, wrong_pin, both_keys,
                           good_sha])
    first, again, upgrade, second_upgrade, *refused, last = runs

    assert first["rc"] == "0", first["out"]
    assert first["link"] == "element-v9.0.0" and first["previous"] == "" and first["served"] == "9.0.0"
    assert f"signed by {release.fingerprint}" in first["out"]
    assert json.loads(first["config"]) == json.loads(config100)
    assert again["rc"] == "0" and again["ls"] == first["ls"]
    log = (tmp_path / "http.log").read_text()
    assert log.count("element-v9.0.0.tar.gz ") == 1 and log.count("element-v9.0.0.tar.gz.asc ") == 1, log  # no re-download

    assert upgrade["rc"] == "0", upgrade["out"]
    assert upgrade["link"] == "element-v9.0.1" and upgrade["previous"] == "element-v9.0.0"
    assert json.loads(upgrade["config"])["setting_defaults"]["UIFeature.registration"] is True
    assert json.loads(upgrade["config"]) == json.loads(config101)

    assert second_upgrade["rc"] == "0", second_upgrade["out"]
    assert second_upgrade["link"] == "element-v9.0.2" and second_upgrade["previous"] == "element-v9.0.1"
    # 9.0.0 (older than the previous release) is gone; nothing else is left behind.
    assert sorted(second_upgrade["ls"].split()) == ["element", "element-previous", "element-v9.0.1", "element-v9.0.2"]

    reasons = {
        "9.0.3": "BAD signature",
        "9.0.4": "could not download its signature",
        "9.0.5": f"signed by another key ({stranger.fingerprint[-16:]})",
        "9.0.6": f"checksum MISMATCH for https://127.0.0.1:{PORT}/element-v9.0.6.tar.gz: expected {'0' * 64}",
        "9.0.8": f"https://127.0.0.1:{PORT}/element-v9.0.8.tar.gz.asc is not an OpenPGP signature",
        "9.0.9": f"{element.ELEMENT_SIGNING_KEY} holds key {stranger.fingerprint}, not the pinned {release.fingerprint}",
        "9.0.10": f"signed by another key ({stranger.fingerprint}), not by the pinned {release.fingerprint}",
    }
    for (version, reason), run in zip(reasons.items(), refused, strict=True):
        assert run["rc"] != "0", (version, run["out"])
        assert f"Element {version} NOT installed: {reason}" in run["out"], (version, run["out"])
        assert "Still serving: element-v9.0.2" in run["out"], run["out"]
        # The served release, its symlinks and the directory are as before: nothing was unpacked.
        assert (run["link"], run["previous"], run["served"]) == ("element-v9.0.2", "element-v9.0.1", "9.0.2"), version
        assert run["ls"] == second_upgrade["ls"], version
    assert "steal()" not in (tmp_path / "out.5").read_text()

    assert last["rc"] == "0", last["out"]  # signature and the optional sha256 both pass
    assert last["link"] == "element-v9.0.7" and last["previous"] == "element-v9.0.2"
    assert os.path.basename(paths.ELEMENT_LINK) == "element"
