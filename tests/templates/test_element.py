"""Element Web: config.json semantics, and the real step bundle run against fake release tarballs.

The bundle (prelude + files + script, exactly as the server receives it) runs as root in private
mount and network namespaces: overlays over /etc and /var/lib, a tmpfs over /var/www, and a local
HTTP server standing in for GitHub. Nothing on the host changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.remote import StepSpec, bundle_text
from components.services import ServiceContext, element
from tests.templates.conftest import FAKE_SECRETS, make_context
from tests.templates.sandbox import run_in_sandbox

PORT = 8765


def _step(ctx: ServiceContext) -> StepSpec:
    (step,) = element.steps(ctx)
    return step


def _config(ctx: ServiceContext) -> dict[str, Any]:
    (file,) = _step(ctx).files
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
    assert config["setting_defaults"] == {"UIFeature.registration": s.enable_registration}
    assert config["integrations_ui_url"] == "" and config["integrations_rest_url"] == ""
    assert config["integrations_widgets_urls"] == []
    assert config["bug_report_endpoint_url"] is None
    assert config["show_labs_settings"] is False


def test_registration_setting_follows_the_config() -> None:
    assert _config(make_context(enableRegistration="true"))["setting_defaults"]["UIFeature.registration"] is True
    assert _config(make_context(enableRegistration="false"))["setting_defaults"]["UIFeature.registration"] is False


def test_versions_and_files() -> None:
    ctx = make_context()
    step = _step(ctx)
    assert step.name == "element-web"
    assert step.versions == {"element": ctx.settings.element_version, "sha256": ctx.settings.element_sha256}
    assert [(f.path, f.mode, f.owner) for f in step.files] == [(element.ELEMENT_CONFIG, "0644", "root")]
    assert ctx.settings.element_tarball_url in step.script and ctx.settings.element_sha256 in step.script
    for secret in FAKE_SECRETS.values():
        assert secret.strip() not in step.script and secret.strip() not in str(step.files[0].content)


# ------------------------------------------------------------------------------------------
# The real bundle in a sandbox

DRIVER = r"""
set -uo pipefail
work=$1
shift
python3 -m http.server PORT --bind 127.0.0.1 --directory "$work/serve" > "$work/http.log" 2>&1 &
server=$!
trap 'kill "$server"' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/PORT) 2>/dev/null && break; sleep 0.05; done
i=0
for bundle in "$@"; do
  i=$((i + 1))
  bash "$bundle" > "$work/out.$i" 2>&1
  echo $? > "$work/rc.$i"
  readlink /var/www/element > "$work/link.$i" || true
  readlink /var/www/element-previous > "$work/previous.$i" || true
  ls -A /var/www > "$work/ls.$i"
  cat /var/www/element/config.json > "$work/config.$i" 2>/dev/null || true
done
""".replace("PORT", str(PORT))


def _tarball(version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in {"index.html": "<html></html>", "version": version, "config.sample.json": "{}"}.items():
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
    proc = run_in_sandbox(tmp, DRIVER, [str(tmp), *paths_], tmpfs=["/var/www"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = []
    for i in range(1, len(bundles) + 1):
        runs.append({k: (tmp / f"{k}.{i}").read_text().strip() for k in ("rc", "out", "link", "previous", "ls", "config")})
    return runs


def _bundle(version: str, sha: str | None = None, **config: str) -> tuple[str, str]:
    ctx = make_context(
        elementVersion=version,
        elementSha256=sha or hashlib.sha256(_tarball(version)).hexdigest(),
        elementDownloadUrl=f"http://127.0.0.1:{PORT}/element-v{{version}}.tar.gz",
        **config,
    )
    step = _step(ctx)
    return bundle_text(step, [str(f.content) for f in step.files]), element.config_json(ctx)


def test_install_upgrade_rollback_and_checksum_failure(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    serve.mkdir()
    for v in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):
        (serve / f"element-v{v}.tar.gz").write_bytes(_tarball(v))
    b100, config100 = _bundle("1.0.0")
    b101, config101 = _bundle("1.0.1", enableRegistration="true")
    b102, _ = _bundle("1.0.2", enableRegistration="true")
    bad, _ = _bundle("1.0.3", sha="0" * 64, enableRegistration="true")
    runs = _run(tmp_path, [b100, b100, b101, b102, bad])
    first, again, upgrade, second_upgrade, mismatch = runs

    assert first["rc"] == "0", first["out"]
    assert first["link"] == "element-v1.0.0" and first["previous"] == ""
    assert json.loads(first["config"]) == json.loads(config100)
    assert again["rc"] == "0" and again["ls"] == first["ls"]
    log = (tmp_path / "http.log").read_text()
    assert log.count("element-v1.0.0.tar.gz") == 1, log  # the re-run downloaded nothing

    assert upgrade["rc"] == "0", upgrade["out"]
    assert upgrade["link"] == "element-v1.0.1" and upgrade["previous"] == "element-v1.0.0"
    assert json.loads(upgrade["config"])["setting_defaults"]["UIFeature.registration"] is True
    assert json.loads(upgrade["config"]) == json.loads(config101)

    assert second_upgrade["rc"] == "0", second_upgrade["out"]
    assert second_upgrade["link"] == "element-v1.0.2" and second_upgrade["previous"] == "element-v1.0.1"
    # 1.0.0 (older than the previous release) is gone; nothing else is left behind.
    assert sorted(second_upgrade["ls"].split()) == ["element", "element-previous", "element-v1.0.1", "element-v1.0.2"]

    assert mismatch["rc"] != "0"
    assert "checksum MISMATCH" in mismatch["out"] and "0" * 64 in mismatch["out"]
    assert mismatch["link"] == "element-v1.0.2"
    assert mismatch["ls"] == second_upgrade["ls"]  # no half release, no leftover download
    assert os.path.basename(paths.ELEMENT_LINK) == "element"
