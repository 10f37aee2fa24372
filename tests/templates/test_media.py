"""mediaStorage: spaces on the droplet's side: the media-offload units pass systemd's checker, and
matrix-stack-spaces (run with Synapse's own venv, as on the server) copies a backup to a real
S3 server (moto, on loopback) and back, and fetches media the local store lacks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from components import paths
from components.cloud.media_bucket import BACKUP_PREFIX, MEDIA_PREFIX
from components.remote import RemoteFile
from components.render import render
from components.services import backup, media
from tests.templates.conftest import SPACES_ENDPOINT, free_tcp_port, make_context, parse_unit, verify_timer_units

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_PY = ROOT / "build" / "synapse-venv" / "bin" / "python"


def step_files(**config: str) -> dict[str, RemoteFile]:
    (spec,) = media.steps(make_context(mediaStorage="spaces", **config))
    return {f.path: f for f in spec.files}


def test_no_step_and_no_bucket_files_with_local_media() -> None:
    ctx = make_context()
    assert media.steps(ctx) == [] and media.spaces_files(ctx) == []
    (spec,) = backup.steps(ctx)
    assert paths.SPACES_ENV not in {f.path for f in spec.files}


def test_offload_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    verify_timer_units(tmp_path, step_files(), media.OFFLOAD_COMMAND, media.SERVICE, media.TIMER, paths.SYNAPSE_UNIT)


def test_offload_runs_as_synapse_with_the_bucket_env_and_writes_only_synapses_data() -> None:
    service = parse_unit(str(step_files()[media.SERVICE_PATH].content))["Service"]
    assert (service["User"], service["EnvironmentFile"]) == (paths.SYNAPSE_USER, paths.SPACES_ENV)
    assert (service["ProtectSystem"], service["ReadWritePaths"]) == ("strict", paths.SYNAPSE_DATA)


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, object]]:
    """A real S3 API (moto's server) on loopback, with the bucket the stack would create."""
    port = free_tcp_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="nyc3", aws_access_key_id=SPACES_ENDPOINT.access_key,
                          aws_secret_access_key=str(SPACES_ENDPOINT.secret_key))
    client.create_bucket(Bucket=str(SPACES_ENDPOINT.bucket), CreateBucketConfiguration={"LocationConstraint": "nyc3"})
    try:
        yield url, client
    finally:
        server.stop()


def install_tool(tmp: Path, endpoint_url: str, owner: str) -> tuple[Path, Path, Path]:
    """The env file exactly as rendered (its secret quoted for the shell), pointed at the test server,
    and the tool rendered with the test's paths; returns (tool, media store, marker)."""
    store, marker = tmp / "media_store", tmp / "media-on-spaces"
    ctx = make_context(mediaStorage="spaces")
    assert ctx.media is not None
    ctx = dataclasses.replace(ctx, media=dataclasses.replace(ctx.media, endpoint_url=endpoint_url))
    env = next(f for f in media.spaces_files(ctx) if f.path == paths.SPACES_ENV)
    assert (env.mode, env.owner) == ("0600", "root")
    text = str(env.content).replace(f"MATRIX_STACK_MEDIA_STORE={paths.SYNAPSE_MEDIA_STORE}",
                                    f"MATRIX_STACK_MEDIA_STORE={store}")
    (tmp / "spaces.env").write_text(text)
    tool = tmp / "matrix-stack-spaces"
    tool.write_text(render("media/matrix-stack-spaces.py.j2", python=str(SYNAPSE_PY), env_file=str(tmp / "spaces.env"),
                           marker=str(marker), synapse_user=owner, offload_timer="matrix-stack-e2e-absent.timer"))
    tool.chmod(0o755)
    return tool, store, marker


def run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120)


def test_a_backup_goes_to_the_bucket_and_comes_back_whole(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, client = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    name = "20261203T040000Z-scheduled"
    source = tmp_path / "backups" / name
    source.mkdir(parents=True)
    (source / "synapse.dump").write_bytes(os.urandom(300_000))
    (source / "homeserver.yaml").write_text("server_name: example.org\n")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(source.iterdir()))
    (source / "SHA256SUMS").write_text(sums)

    put = run(tool, "put-backup", str(source))
    assert put.returncode == 0, put.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=SPACES_ENDPOINT.bucket, Prefix=BACKUP_PREFIX)["Contents"]}  # type: ignore[attr-defined]
    assert keys == {f"{BACKUP_PREFIX}{name}/{f}" for f in ("synapse.dump", "homeserver.yaml", "SHA256SUMS")}
    assert run(tool, "list-backups").stdout.split() == [name]

    restored = tmp_path / "fresh"
    got = run(tool, "get-backup", name, str(restored))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(restored / name)
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=restored / name, capture_output=True)
    assert check.returncode == 0
    assert {p.stat().st_mode & 0o777 for p in (restored / name).iterdir()} == {0o600}
    missing = run(tool, "get-backup", "20200101T000000Z-none", str(restored))
    assert missing.returncode != 0 and "no complete backup" in missing.stderr


def test_check_answers_for_the_bucket_and_fails_naming_a_missing_one(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, _ = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    ok = run(tool, "check")
    assert ok.returncode == 0 and f"the bucket {SPACES_ENDPOINT.bucket} at {url} answers" in ok.stdout
    env = tmp_path / "spaces.env"
    env.write_text(env.read_text().replace(f"MATRIX_STACK_BUCKET={SPACES_ENDPOINT.bucket}", "MATRIX_STACK_BUCKET=gone"))
    gone = run(tool, "check")
    assert gone.returncode != 0 and "s3://gone" in gone.stderr and "404" in gone.stderr


def test_fetch_media_brings_back_what_the_local_store_lacks(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, client = s3
    tool, store, marker = install_tool(tmp_path, url, "nobody")
    marker.write_text("media on spaces\n")
    offloaded = {"local_content/ab/cd/efghij": os.urandom(5000), "local_thumbnails/ab/cd/efghij/32-32-image-png": b"png"}
    for key, data in offloaded.items():
        client.put_object(Bucket=SPACES_ENDPOINT.bucket, Key=MEDIA_PREFIX + key, Body=data)  # type: ignore[attr-defined]
    # The store itself may be gone: the trim's upload script removes the directories it empties.
    assert not store.exists()

    fetched = run(tool, "fetch-media")
    assert fetched.returncode == 0, fetched.stderr
    assert "2 media files fetched" in fetched.stderr and "0 were already here" in fetched.stderr
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    assert (store.stat().st_uid, store.stat().st_mode & 0o777) == (nobody, 0o700)
    for key, data in offloaded.items():
        path = store / key
        assert path.read_bytes() == data
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (nobody, 0o600)
    assert not marker.exists()  # a switch back to local media is allowed again
    # A file already here is left alone; only what is missing or short is fetched again.
    (store / "local_content/ab/cd/efghij").write_bytes(b"cut short")
    again = run(tool, "fetch-media")
    assert "1 media files fetched" in again.stderr and "1 were already here" in again.stderr
    assert (store / "local_content/ab/cd/efghij").read_bytes() == offloaded["local_content/ab/cd/efghij"]
