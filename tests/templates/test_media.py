"""mediaStorage: spaces on the droplet's side: the media-offload units pass systemd's checker, and
matrix-stack-spaces (run with Synapse's own venv, as on the server) copies a backup to a real
S3 server (moto, on loopback) and back, and fetches media the local store lacks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import tempfile
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
    """A real S3 API (moto's server) on loopback, with the buckets the stack would create (the backups'
    one versioned)."""
    port = free_tcp_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="nyc3", aws_access_key_id=SPACES_ENDPOINT.access_key,
                          aws_secret_access_key=str(SPACES_ENDPOINT.secret_key))
    for bucket in (SPACES_ENDPOINT.bucket, SPACES_ENDPOINT.backup_bucket):
        client.create_bucket(Bucket=str(bucket), CreateBucketConfiguration={"LocationConstraint": "nyc3"})
    client.put_bucket_versioning(Bucket=str(SPACES_ENDPOINT.backup_bucket), VersioningConfiguration={"Status": "Enabled"})
    try:
        yield url, client
    finally:
        server.stop()


def install_tool(tmp: Path, endpoint_url: str, owner: str) -> tuple[Path, Path, Path]:
    """The env files and the encryption key exactly as rendered (secrets quoted for the shell), pointed at
    the test server, and the tool rendered with the test's paths; returns (tool, media store, marker).
    The media store's directory is the owner's, on a path the owner can reach (as on the volume)."""
    data = Path(tempfile.mkdtemp(prefix="ms-synapse-data-", dir="/tmp"))
    data.chmod(0o755)
    owned = data / "matrix-synapse"
    owned.mkdir(mode=0o700)
    os.chown(owned, *(int(subprocess.run(["id", flag, owner], capture_output=True, text=True).stdout) for flag in ("-u", "-g")))
    store, marker = owned / "media_store", tmp / "media-on-spaces"
    ctx = make_context(mediaStorage="spaces")
    assert ctx.media is not None
    ctx = dataclasses.replace(ctx, media=dataclasses.replace(ctx.media, endpoint_url=endpoint_url))
    placed = {f.path: f for f in media.spaces_files(ctx)}
    for path in (paths.SPACES_ENV, paths.SPACES_BACKUP_ENV, paths.BACKUP_ENCRYPTION_KEY):
        assert (placed[path].mode, placed[path].owner) == ("0600", "root")
    (tmp / "spaces.env").write_text(str(placed[paths.SPACES_ENV].content).replace(
        f"MATRIX_STACK_MEDIA_STORE={paths.SYNAPSE_MEDIA_STORE}", f"MATRIX_STACK_MEDIA_STORE={store}"))
    (tmp / "backup-spaces.env").write_text(str(placed[paths.SPACES_BACKUP_ENV].content))
    (tmp / "backup.key").write_text(str(placed[paths.BACKUP_ENCRYPTION_KEY].content))
    tool = tmp / "matrix-stack-spaces"
    tool.write_text(render("media/matrix-stack-spaces.py.j2", python=str(SYNAPSE_PY), media_env=str(tmp / "spaces.env"),
                           backup_env=str(tmp / "backup-spaces.env"), key_file=str(tmp / "backup.key"),
                           marker=str(marker), synapse_user=owner, offload_timer="matrix-stack-e2e-absent.timer"))
    tool.chmod(0o755)
    return tool, store, marker


def run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120)


def a_backup(tmp: Path, name: str) -> Path:
    source = tmp / "backups" / name
    source.mkdir(parents=True)
    (source / "synapse.dump").write_bytes(os.urandom(300_000))
    (source / "homeserver.yaml").write_text("server_name: example.org\nmacaroon_secret_key: SECRET-IN-CONFIG\n")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(source.iterdir()))
    (source / "SHA256SUMS").write_text(sums)
    return source


def objects(client: object, prefix: str) -> dict[str, bytes]:
    s3 = client
    listed = s3.list_objects_v2(Bucket=SPACES_ENDPOINT.backup_bucket, Prefix=prefix).get("Contents", [])  # type: ignore[attr-defined]
    return {o["Key"]: s3.get_object(Bucket=SPACES_ENDPOINT.backup_bucket, Key=o["Key"])["Body"].read()  # type: ignore[attr-defined]
            for o in listed}


def test_a_backup_goes_to_its_bucket_encrypted_and_comes_back_whole(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, client = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    name = "20261203T040000Z-scheduled"
    source = a_backup(tmp_path, name)

    put = run(tool, "put-backup", str(source))
    assert put.returncode == 0, put.stderr
    stored = objects(client, f"{BACKUP_PREFIX}{name}/")
    assert set(stored) == {f"{BACKUP_PREFIX}{name}/{f}" for f in ("synapse.dump", "homeserver.yaml", "SHA256SUMS")}
    # Encrypted: none of the plaintext (the config's secrets, the dump) is in the bucket.
    assert not any(b"SECRET-IN-CONFIG" in data or b"server_name" in data for data in stored.values())
    dump = stored[f"{BACKUP_PREFIX}{name}/synapse.dump"]
    assert (source / "synapse.dump").read_bytes()[:4096] not in dump
    assert not client.list_objects_v2(Bucket=SPACES_ENDPOINT.bucket).get("Contents")  # type: ignore[attr-defined]
    assert run(tool, "list-backups").stdout.split() == [name]

    restored = tmp_path / "fresh"
    restored.mkdir()
    got = run(tool, "get-backup", name, str(restored))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(restored / name)
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=restored / name, capture_output=True)
    assert check.returncode == 0
    assert (restored / name / "synapse.dump").read_bytes() == (source / "synapse.dump").read_bytes()
    assert {p.stat().st_mode & 0o777 for p in (restored / name).iterdir()} == {0o600}
    missing = run(tool, "get-backup", "20200101T000000Z-none", str(restored))
    assert missing.returncode != 0 and "no complete backup" in missing.stderr


def _forge(client: object, key: str, body: bytes) -> None:
    client.put_object(Bucket=SPACES_ENDPOINT.backup_bucket, Key=key, Body=body)  # type: ignore[attr-defined]


@pytest.mark.parametrize("forgery", ["plaintext", "changed-byte", "another-backups-file", "extra-file", "dropped-file"])
def test_a_forged_or_changed_backup_is_refused_and_nothing_kept(tmp_path: Path, s3: tuple[str, object],
                                                                 forgery: str) -> None:
    """Whoever can write the bucket (not Synapse: its key is the media bucket's) still cannot get a backup
    restored: each file is authenticated with the key the bucket never sees, bound to its backup's and
    its own name, and SHA256SUMS must name exactly the files there."""
    url, client = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    name, other = f"20261204T0400{len(forgery):02d}Z-{forgery}", f"20261204T0500{len(forgery):02d}Z-other"
    prefix = f"{BACKUP_PREFIX}{name}/"
    assert run(tool, "put-backup", str(a_backup(tmp_path, name))).returncode == 0
    assert run(tool, "put-backup", str(a_backup(tmp_path / "o", other))).returncode == 0
    stored = objects(client, prefix)
    if forgery == "plaintext":  # a backup made elsewhere, unencrypted
        dump = b"PGDMP forged"
        _forge(client, prefix + "synapse.dump", dump)
        _forge(client, prefix + "SHA256SUMS", f"{hashlib.sha256(dump).hexdigest()}  synapse.dump\n".encode())
        client.delete_object(Bucket=SPACES_ENDPOINT.backup_bucket, Key=prefix + "homeserver.yaml")  # type: ignore[attr-defined]
    elif forgery == "changed-byte":
        data = bytearray(stored[prefix + "synapse.dump"])
        data[len(data) // 2] ^= 1
        _forge(client, prefix + "synapse.dump", bytes(data))
    elif forgery == "another-backups-file":  # authentic, but another backup's dump
        theirs = objects(client, f"{BACKUP_PREFIX}{other}/")
        _forge(client, prefix + "synapse.dump", theirs[f"{BACKUP_PREFIX}{other}/synapse.dump"])
    elif forgery == "extra-file":
        _forge(client, prefix + "extra.sql", stored[prefix + "homeserver.yaml"])
    else:
        client.delete_object(Bucket=SPACES_ENDPOINT.backup_bucket, Key=prefix + "homeserver.yaml")  # type: ignore[attr-defined]
    dest = tmp_path / "restore-here"
    dest.mkdir()
    got = run(tool, "get-backup", name, str(dest))
    assert got.returncode != 0 and "refused, nothing was kept" in got.stderr, got.stderr
    assert list(dest.iterdir()) == []


def test_a_key_leading_out_of_the_download_directory_is_refused(tmp_path: Path, s3: tuple[str, object]) -> None:
    """Issue 26 (reproduced against moto): get-backup joined keys like backups/<name>/../../x to the
    download directory. A key that is not a plain file name refuses the whole backup, before writing."""
    url, client = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    name = "20261205T040000Z-escape"
    assert run(tool, "put-backup", str(a_backup(tmp_path, name))).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = outside / "backups" / "deep"
    dest.mkdir(parents=True)
    _forge(client, f"{BACKUP_PREFIX}{name}/../../../../escaped", b"written by the bucket\n")
    got = run(tool, "get-backup", name, str(dest))
    assert got.returncode != 0 and "are not files of a backup" in got.stderr, got.stderr
    assert sorted(p.name for p in outside.rglob("*")) == ["backups", "deep"]


def test_a_deleted_backup_comes_back_from_the_buckets_versions(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, client = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    name = "20261206T040000Z-deleted"
    assert run(tool, "put-backup", str(a_backup(tmp_path, name))).returncode == 0
    for key in objects(client, f"{BACKUP_PREFIX}{name}/"):
        client.delete_object(Bucket=SPACES_ENDPOINT.backup_bucket, Key=key)  # type: ignore[attr-defined]
    assert name not in run(tool, "list-backups").stdout.split()
    gone = run(tool, "get-backup", name, str(tmp_path))
    assert gone.returncode != 0 and f"undelete-backup {name}" in gone.stderr
    back = run(tool, "undelete-backup", name)
    assert back.returncode == 0 and "brought back 3 files" in back.stderr, back.stderr
    assert name in run(tool, "list-backups").stdout.split()
    assert run(tool, "get-backup", name, str(tmp_path)).returncode == 0


def test_check_answers_for_both_buckets_and_fails_naming_a_missing_one(tmp_path: Path, s3: tuple[str, object]) -> None:
    url, _ = s3
    tool, _, _ = install_tool(tmp_path, url, "nobody")
    ok = run(tool, "check")
    assert ok.returncode == 0 and "the media and backups buckets" in ok.stdout, ok.stderr
    env = tmp_path / "backup-spaces.env"
    env.write_text(env.read_text().replace(f"MATRIX_STACK_BUCKET={SPACES_ENDPOINT.backup_bucket}", "MATRIX_STACK_BUCKET=gone"))
    gone = run(tool, "check")
    assert gone.returncode != 0 and "backups bucket s3://gone" in gone.stderr and "404" in gone.stderr


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


def test_fetch_media_writes_nothing_through_a_link_in_the_media_store(tmp_path: Path, s3: tuple[str, object]) -> None:
    """Issue 26: the media store is Synapse's, and root followed its links (root wrote a file into a root
    directory). Now Synapse's user fetches: a link the store holds leads nowhere it could not write
    itself; the file is reported, and the trim and the marker stay."""
    url, client = s3
    tool, store, marker = install_tool(tmp_path, url, "nobody")
    marker.write_text("media on spaces\n")
    roots = Path(tempfile.mkdtemp(prefix="ms-root-dir-", dir="/tmp"))  # root's, 0700 -> 0755: readable, not writable
    roots.chmod(0o755)
    (store / "local_content").mkdir(parents=True)
    os.chown(store, *_ids("nobody"))
    (store / "local_content" / "zz").symlink_to(roots)
    client.put_object(Bucket=SPACES_ENDPOINT.bucket, Key=MEDIA_PREFIX + "local_content/zz/yy/planted", Body=b"x")  # type: ignore[attr-defined]
    fetched = run(tool, "fetch-media")
    assert fetched.returncode != 0 and "NOT fetched" in fetched.stderr, fetched.stderr
    assert list(roots.iterdir()) == [] and marker.exists()


def _ids(user: str) -> tuple[int, int]:
    return tuple(int(subprocess.run(["id", flag, user], capture_output=True, text=True).stdout)  # type: ignore[return-value]
                 for flag in ("-u", "-g"))
