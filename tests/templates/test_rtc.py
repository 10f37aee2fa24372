"""matrixRtc: the rtc-install bundle really downloads, checks and installs (or refuses) releases served over HTTPS
here; Synapse really loads the MatrixRTC config and lk-jwt-service's registration; systemd accepts the units."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.remote import StepSpec, bundle_text
from components.services import rtc, synapse
from tests.templates.conftest import LK_JWT_SERVICE_TEST_PIN, RTC_SECRETS, make_context, parse_unit
from tests.templates.release_mirror import mirror_driver, write_mirror_tls
from tests.templates.sandbox import run_in_sandbox
from tests.templates.test_synapse import _install_for_check

PORT = 8766
RTC = {"matrixRtc": "true", "lkJwtServiceSha256": LK_JWT_SERVICE_TEST_PIN}

DRIVER = mirror_driver(PORT, r"""
  (cd /opt/matrix-stack-rtc && find . -mindepth 1 -printf '%p %m %u\n' | sort) > "$work/tree.$i"
  grep -c 'GET ' "$work/http.log" > "$work/downloads.$i" || true
""")


def _archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), 1234, 1234, 0o777
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _publish(serve: Path, version: str, archive: bytes, listed: str | None = None) -> str:
    """LiveKit's release layout: v<version>/ holds the archive and checksums.txt; returns the archive's sha256."""
    folder = serve / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"livekit_{version}_linux_amd64.tar.gz"
    (folder / name).write_bytes(archive)
    sha = hashlib.sha256(archive).hexdigest()
    (folder / "checksums.txt").write_text(f"{'0' * 64}  livekit_{version}_linux_arm64.tar.gz\n{listed or sha}  {name}\n")
    return sha


def _token_binary(serve: Path, version: str, data: bytes) -> str:
    folder = serve / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lk-jwt-service_linux_amd64").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _bundle(livekit: str, livekit_sha: str, token: str, token_sha: str) -> str:
    ctx = make_context(matrixRtc="true", livekitVersion=livekit, livekitSha256=livekit_sha,
                       livekitDownloadUrl=f"https://127.0.0.1:{PORT}/v{{version}}/livekit_{{version}}_linux_amd64.tar.gz",
                       lkJwtServiceVersion=token, lkJwtServiceSha256=token_sha,
                       lkJwtServiceDownloadUrl=f"https://127.0.0.1:{PORT}/v{{version}}/lk-jwt-service_linux_amd64")
    step = next(s for s in rtc.steps(ctx) if s.name == "rtc-install")
    return bundle_text(step, [str(f.content) for f in step.files])


def _run(tmp: Path, bundles: list[str]) -> list[dict[str, Any]]:
    files = []
    for i, text in enumerate(bundles, 1):
        path = tmp / f"bundle{i}.sh"
        path.write_text(text)
        files.append(str(path))
    write_mirror_tls(tmp, "release mirror")
    proc = run_in_sandbox(tmp, DRIVER, [str(tmp), *files], tmpfs=["/opt"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = ("rc", "out", "tree", "downloads")
    return [{k: (tmp / f"{k}.{i}").read_text().strip() for k in keys} for i in range(1, len(bundles) + 1)]


def test_install_checks_every_download_against_its_pin_and_the_checksums_file(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    good = _publish(serve, "9.0.0", _archive({"LICENSE": b"license", "livekit-server": b"#!/bin/sh\necho sfu\n"}))
    pinned_before_tampering = _publish(serve, "9.0.1", _archive({"livekit-server": b"#!/bin/sh\necho sfu\n"}))
    _publish(serve, "9.0.1", _archive({"livekit-server": b"#!/bin/sh\necho evil\n"}), listed=pinned_before_tampering)
    unlisted = _publish(serve, "9.0.2", _archive({"livekit-server": b"#!/bin/sh\necho other\n"}), listed="1" * 64)
    empty = _publish(serve, "9.0.3", _archive({"LICENSE": b"only a license"}))
    token = _token_binary(serve, "0.90.0", b"#!/bin/sh\necho token\n")
    _token_binary(serve, "0.90.1", b"#!/bin/sh\necho tampered token\n")

    runs = _run(tmp_path, [
        _bundle("9.0.0", good, "0.90.0", token),  # 1: both installed
        _bundle("9.0.0", good, "0.90.0", token),  # 2: again: nothing downloaded
        _bundle("9.0.1", pinned_before_tampering, "0.90.0", token),  # 3: the archive is not the pinned one
        _bundle("9.0.2", unlisted, "0.90.0", token),  # 4: the release's checksums.txt lists another file
        _bundle("9.0.3", empty, "0.90.0", token),  # 5: no livekit-server in the archive
        _bundle("9.0.0", good, "0.90.1", token),  # 6: the token service's binary is not the pinned one
    ])
    first, again, tampered, not_listed, no_binary, token_tampered = runs
    installed = {f"./livekit-9.0.0-{good[:12]} 755 root", f"./livekit-9.0.0-{good[:12]}/livekit-server 755 root",
                 f"./lk-jwt-service-0.90.0-{token[:12]} 755 root",
                 f"./lk-jwt-service-0.90.0-{token[:12]}/lk-jwt-service 755 root"}
    assert first["rc"] == "0", first["out"]
    assert set(first["tree"].splitlines()) == installed
    assert "listed in its checksums.txt" in first["out"]
    assert again["rc"] == "0" and again["downloads"] == first["downloads"] and again["tree"] == first["tree"]

    assert tampered["rc"] != "0" and "checksum MISMATCH" in tampered["out"] and "livekitSha256" in tampered["out"]
    assert not_listed["rc"] != "0" and "checksums.txt lists" in not_listed["out"] and "1111" in not_listed["out"]
    assert no_binary["rc"] != "0" and "holds no livekit-server" in no_binary["out"]
    assert token_tampered["rc"] != "0" and "lkJwtServiceSha256" in token_tampered["out"]
    for refused in (tampered, not_listed, no_binary, token_tampered):
        assert set(refused["tree"].splitlines()) == installed, refused["out"]  # nothing new, nothing half-written


def test_an_unpinned_token_service_is_refused_before_anything_runs() -> None:
    from components.settings import SettingsError
    with pytest.raises(SettingsError, match="lkJwtServiceSha256"):
        make_context(matrixRtc="true")


def _rtc_synapse_files(tmp: Path) -> Path:
    step = next(s for s in synapse.steps(make_context(**RTC)) if s.name == "synapse-config")
    files = {f.path: str(f.content) for f in step.files}
    config = _install_for_check(files, tmp)
    registration = tmp / "lk-jwt-service.yaml"
    registration.write_text(files[rtc.REGISTRATION])
    text = config.read_text()
    assert text.count(json.dumps(rtc.REGISTRATION)) == 1
    config.write_text(text.replace(json.dumps(rtc.REGISTRATION), json.dumps(str(registration))))
    return config


PROBE = r"""
import json, sys
from synapse.config.appservice import load_appservices
from synapse.config.homeserver import HomeServerConfig
c = HomeServerConfig.load_config("", ["-c", sys.argv[1]])
[service] = load_appservices(c.server.server_name, c.appservice.app_service_config_files)
x = c.experimental
print(json.dumps({
    "transports": c.matrix_rtc.transports,
    "flags": [x.msc4143_enabled, x.msc4222_enabled, x.msc4354_enabled, x.msc4502_enabled, x.msc4512_enabled],
    "max_delay_ms": c.server.max_event_delay_duration.as_millis(),
    "delayed_mgmt": [c.ratelimiting.rc_delayed_event_mgmt.per_second, c.ratelimiting.rc_delayed_event_mgmt.burst_count],
    "message": [c.ratelimiting.rc_message.per_second, c.ratelimiting.rc_message.burst_count],
    "as": {"id": service.id, "url": service.url, "sender": service.sender.to_string(),
           "token": service.token, "hs_token": service.hs_token,
           "is_interested_in_local": service.is_user_in_namespace("@alice:example.org"),
           "is_interested_in_remote": service.is_user_in_namespace("@alice:elsewhere.example"),
           "exclusive": service.is_exclusive_user("@alice:example.org"),
           "rate_limited": service.is_rate_limited(),
           "scopes": sorted(str(s) for s in service.scopes),
           "proxy": [service.proxy_prefix, service.proxy_url],
           "prefix_allowed": service._is_proxy_prefix_allowed(service.proxy_prefix)},
}))
"""


def test_synapse_loads_the_matrix_rtc_config_and_the_registration(tmp_path: Path) -> None:
    python = str(paths_synapse_python())
    config = _rtc_synapse_files(tmp_path)
    check = subprocess.run([python, "-m", "synapse.config", "-c", str(config)], capture_output=True, text=True)
    assert check.returncode == 0 and "Config parses OK!" in check.stdout, check.stderr
    probe = subprocess.run([python, "-c", PROBE, str(config)], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    assert got["transports"] == [{"type": "livekit", "livekit_service_url": "https://matrix.example.org/livekit/jwt"}]
    assert got["flags"] == [True] * 5
    assert got["max_delay_ms"] == 24 * 3600 * 1000
    assert got["delayed_mgmt"] == [1, 20] and got["message"] == [0.5, 30]
    service = got["as"]
    assert (service["id"], service["url"], service["sender"]) == ("lk-jwt-service", None, "@_lk_jwt_service:example.org")
    assert (service["token"], service["hs_token"]) == (RTC_SECRETS.as_token, RTC_SECRETS.hs_token)
    assert service["is_interested_in_local"] and not service["is_interested_in_remote"] and not service["exclusive"]
    assert service["rate_limited"] is False
    assert service["scopes"] == [rtc.AS_SCOPE]
    assert service["proxy"] == ["rtc/livekit", "http://127.0.0.1:8070"] and service["prefix_allowed"] is True


def paths_synapse_python() -> Path:
    from tests.templates.test_synapse import SYNAPSE_PY
    assert SYNAPSE_PY.exists()
    return SYNAPSE_PY


def test_without_matrix_rtc_synapse_gets_none_of_it() -> None:
    step = next(s for s in synapse.steps(make_context()) if s.name == "synapse-config")
    config = next(str(f.content) for f in step.files if f.path == paths.SYNAPSE_CONFIG)
    assert rtc.REGISTRATION not in {f.path for f in step.files}
    for key in ("matrix_rtc", "app_service_config_files", "msc4143", "max_event_delay_duration"):
        assert key not in config
    assert [s.name for s in rtc.steps(make_context())] == ["rtc-off"]


def _spec(name: str) -> StepSpec:
    return next(s for s in rtc.steps(make_context(**RTC)) if s.name == name)


def test_secrets_live_only_in_root_files_never_in_scripts_or_unit_lines() -> None:
    config = _spec("rtc-config")
    modes = {f.path: (f.mode, f.owner, f.group) for f in config.files}
    assert modes[rtc.LIVEKIT_CONFIG] == ("0600", "root", "root")
    assert modes[rtc.TOKEN_SERVICE_ENV] == ("0600", "root", "root")
    registration = rtc.registration(make_context(**RTC))
    assert (registration.mode, registration.owner, registration.group) == ("0640", "root", "matrix-synapse")
    secrets = [str(s) for s in (RTC_SECRETS.livekit_secret, RTC_SECRETS.as_token, RTC_SECRETS.hs_token)]
    for spec in (config, _spec("rtc-install")):
        public = [spec.script, *(str(f.content) for f in spec.files if f.mode == "0644")]
        assert not any(secret in text for secret in secrets for text in public)
    assert secrets[0] in str(next(f.content for f in config.files if f.path == rtc.LIVEKIT_CONFIG))


def test_systemd_accepts_the_units_and_both_run_sandboxed_as_dynamic_users(tmp_path: Path) -> None:
    config = _spec("rtc-config")
    units = {Path(f.path).name: str(f.content) for f in config.files if f.path.startswith("/etc/systemd/system/")}
    assert set(units) == set(rtc.UNITS)
    for name, text in units.items():
        unit = parse_unit(text)
        binary = unit["Service"]["ExecStart"].split()[0]
        placed = tmp_path / Path(binary).name
        placed.write_text("#!/bin/sh\n")
        placed.chmod(0o755)
        (tmp_path / name).write_text(text.replace(binary, str(placed)))
        assert unit["Service"]["DynamicUser"] == "yes" and unit["Service"]["CapabilityBoundingSet"] == ""
        assert unit["Service"]["ProtectSystem"] == "strict" and unit["Service"]["IPAddressDeny"] == "169.254.169.254"
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in units)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    sfu = parse_unit(units[rtc.SFU_UNIT])["Service"]
    assert sfu["LoadCredential"] == f"livekit.yaml:{rtc.LIVEKIT_CONFIG}" and "--config %d/livekit.yaml" in sfu["ExecStart"]
