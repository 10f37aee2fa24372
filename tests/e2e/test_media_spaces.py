"""`mediaStorage: spaces` for real: the shared deployment moves its media to a bucket and back.

An S3 server from the package index (moto) plays DigitalOcean Spaces over TLS (tests/e2e/spaces.py);
the program's recorded answers (the bucket's endpoint, the key) are its. Only the steps `pulumi up`
would run are run. Then: an upload is in the bucket when Synapse answers it; the local cache is
emptied and every file still downloads through the edge; the daily backup lands in the bucket; a
fresh droplet of the stack, on a new empty volume, restores from that copy and serves the messages
and files; last, the way back in docs/grow.md (fetch-media, then mediaStorage: local) brings every file
back onto the volume.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nio import LoginResponse, UploadResponse

from components import paths
from components.cloud.media_bucket import BACKUP_PREFIX, MEDIA_PREFIX
from components.services import backup, media
from tests.e2e.clients import matrix_client, run, session
from tests.e2e.deployment import E2E_INDEX, HOMESERVER, Deployment, deployed_host
from tests.e2e.runner import StepFailed, StepResult, run_all
from tests.e2e.spaces import SpacesStandin
from tests.e2e.test_managed_database import history, send
from tests.harness import changed_steps

pytestmark = pytest.mark.e2e

FRESH_INDEX = E2E_INDEX + 106
# What `pulumi up` runs for the switch (tests/unit/test_media_spaces.py checks the same set under mocks).
SWITCH_STEPS = {"synapse-install", "synapse-config", "backup-schedule", "media-offload", "selfcheck-verify",
               "health-schedule"}
BACK_STEPS = SWITCH_STEPS - {"media-offload"}  # its resource goes; nothing runs for it


def upload(deployment: Deployment, data: bytes) -> str:
    """As the admin, through the edge; returns the mxc URI once Synapse answered."""
    async def go() -> str:
        client = matrix_client(HOMESERVER, "admin", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await client.login(deployment.admin_password), LoginResponse)
            sent, _ = await client.upload(lambda *_: data, content_type="application/octet-stream",
                                          filename="blob.bin", filesize=len(data))
            assert isinstance(sent, UploadResponse), sent
            return str(sent.content_uri)
        finally:
            await client.close()

    return run(go)


def download(deployment: Deployment, uri: str) -> tuple[int, bytes]:
    """As the admin, through the edge: the status and the bytes."""
    async def go() -> tuple[int, bytes]:
        client = matrix_client(HOMESERVER, "admin", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await client.login(deployment.admin_password), LoginResponse)
            server_name, media_id = uri.removeprefix("mxc://").split("/", 1)
            async with session(deployment.edge_address, deployment.ca_file,
                               {"Authorization": f"Bearer {client.access_token}"}) as s:
                url = f"{HOMESERVER}/_matrix/client/v1/media/download/{server_name}/{media_id}"
                async with s.get(url) as response:
                    return response.status, await response.read()
        finally:
            await client.close()

    return run(go)


def local_path(uri: str) -> str:
    """Where Synapse keeps a local upload: local_content/ab/cd/efgh... under the media store."""
    media_id = uri.rsplit("/", 1)[1]
    return f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}"


def on_volume(deployment: Deployment, uri: str) -> bool:
    path = shlex.quote(f"{paths.SYNAPSE_MEDIA_STORE}/{local_path(uri)}")
    return deployment.ssh(f"test -f {path} && echo yes || echo no").strip() == "yes"


@dataclass
class SpacesSwitch:
    """The shared deployment switched to mediaStorage: spaces; what the tests share."""

    deployment: Deployment
    standin: SpacesStandin
    workdir: Path
    room: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # mxc URI -> bytes, oldest first
    on: tuple[set[str], list[StepResult]] = (set(), [])
    backup_name: str = ""

    def switch_on(self) -> None:
        d = self.deployment
        self.room = send(d, None, ["written before the bucket"])
        before = os.urandom(300_000)
        self.files[upload(d, before)] = before  # a file from before: only the trim moves it to the bucket
        self.standin.start()
        self.standin.reach_from(d.host)
        d.spaces = self.standin.answers
        # `pulumi up`: the buckets and keys are made (as recorded) before the changed steps run.
        assert d.recording is not None
        local = d.recording
        after = d.record(mediaStorage="spaces")
        d.apply_cloud()
        self.standin.apply(after)
        changed = changed_steps(local, after)
        self.on = (changed, run_all(after, only=changed))


@pytest.fixture(scope="module")
def spaces(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpacesSwitch]:
    edge = deployment.edge
    assert edge is not None
    standin = SpacesStandin(edge.ca_key, edge.ca_cert, bucket=deployment.settings.spaces_bucket_name)
    switch = SpacesSwitch(deployment, standin, tmp_path_factory.mktemp("spaces"))
    try:
        switch.switch_on()
        yield switch
    finally:
        deployment.spaces = None
        standin.stop()


def test_the_switch_runs_only_the_media_steps(spaces: SpacesSwitch) -> None:
    changed, results = spaces.on
    assert changed == SWITCH_STEPS
    assert {r.name for r in results} == SWITCH_STEPS and all(r.returncode == 0 for r in results)
    for result in results:
        print(f"  {result.name:24s} {result.seconds:6.1f} s")
    d = spaces.deployment
    assert d.ssh(f"stat -c '%a %U' {paths.SPACES_ENV}").strip() == "600 root"
    assert d.ssh(f"systemctl is-enabled {media.TIMER}").strip() == "enabled"


def test_an_upload_is_in_the_bucket_when_synapse_answers(spaces: SpacesSwitch) -> None:
    data = os.urandom(2_000_000)
    uri = upload(spaces.deployment, data)
    spaces.files[uri] = data
    # No wait: store_synchronous makes Synapse answer only once the bucket has the file.
    assert spaces.standin.objects(MEDIA_PREFIX + local_path(uri)) == {MEDIA_PREFIX + local_path(uri): data}
    assert on_volume(spaces.deployment, uri)  # and the local cache has it too


def test_the_local_cache_is_emptied_and_every_file_still_downloads(spaces: SpacesSwitch) -> None:
    d = spaces.deployment
    # The daily run, as the timer starts it: nothing is older than mediaCacheDays, nothing goes.
    d.ssh(f"systemctl start {media.SERVICE}")
    assert d.ssh(f"systemctl show -P Result {media.SERVICE}").strip() == "success"
    assert all(on_volume(d, uri) for uri in spaces.files)
    # By hand, everything: the file from before the switch is uploaded first, then every local copy goes.
    out = d.ssh(f"{media.OFFLOAD_COMMAND} 0s 2>&1")
    print(out[-600:])
    assert not any(on_volume(d, uri) for uri in spaces.files)
    # The upload script removes the directories it empties, the store too: the run puts it back.
    assert d.ssh(f"stat -c '%a %U' {paths.SYNAPSE_MEDIA_STORE}").strip() == f"700 {paths.SYNAPSE_USER}"
    stored = spaces.standin.objects(MEDIA_PREFIX + "local_content/")
    for uri, data in spaces.files.items():
        assert stored[MEDIA_PREFIX + local_path(uri)] == data
        assert download(d, uri) == (200, data)  # Synapse reads it from the bucket


def buckets(deployment: Deployment) -> tuple[str, str]:
    """(media bucket, backups bucket) as the recorded program made them; one bucket for both before the
    backups had their own."""
    assert deployment.recording is not None
    names = {r.name: r.inputs["name"] for r in deployment.recording.of_type("digitalocean:index/spacesBucket:SpacesBucket")}
    return names["media-bucket"], names.get("media-backups", names["media-bucket"])


def test_a_backup_is_copied_to_its_own_bucket_encrypted(spaces: SpacesSwitch) -> None:
    d = spaces.deployment
    d.ssh(f"systemctl start {backup.SERVICE}")  # the daily run
    assert d.ssh(f"systemctl show -P Result {backup.SERVICE}").strip() == "success"
    written = d.ssh(f"{paths.BACKUP_COMMAND} e2e-spaces").strip().splitlines()[-1]
    name = written.rsplit("/", 1)[1]
    spaces.backup_name = name
    media_bucket, backups_bucket = buckets(d)
    assert backups_bucket != media_bucket
    copied = spaces.standin.objects(f"{BACKUP_PREFIX}{name}/", bucket=backups_bucket)
    assert set(copied) >= {f"{BACKUP_PREFIX}{name}/{f}" for f in ("synapse.dump", "signing.key", "SHA256SUMS")}
    # Encrypted: the bucket holds none of the backup's bytes (the signing key's seed, the sums, the config).
    local = {f: d.ssh(f"base64 -w0 {shlex.quote(written)}/{f}") for f in ("SHA256SUMS", "signing.key", "homeserver.yaml")}
    for file, data in local.items():
        plain = base64.b64decode(data)
        assert not any(plain[:64] in blob for blob in copied.values()), file
    assert not spaces.standin.objects(f"{BACKUP_PREFIX}{name}/")  # and nothing of it in Synapse's bucket
    assert name in d.ssh(f"{paths.SPACES_COMMAND} list-backups").split()


def test_synapse_can_neither_delete_nor_plant_a_backup(spaces: SpacesSwitch) -> None:
    """Issue 26: the key Synapse holds (homeserver.yaml) is granted the media bucket alone. As Synapse, with
    that key and Synapse's own boto3, delete every backup object the test knows of, wherever it lies,
    and plant a backup of its own in both buckets: the backup stays, the plant is not listed."""
    assert spaces.backup_name, "needs the backup of test_a_backup_is_copied_to_its_own_bucket_encrypted"
    d = spaces.deployment
    media_bucket, backups_bucket = buckets(d)
    targets = [(b, k) for b in (backups_bucket, media_bucket)
               for k in spaces.standin.objects(f"{BACKUP_PREFIX}{spaces.backup_name}/", bucket=b)]
    assert targets
    planted = "20261231T235959Z-planted"
    attack = (PLANT_AND_DELETE.replace("TARGETS", json.dumps(targets)).replace("PLANT_NAME", planted)
              .replace("BUCKETS", json.dumps([backups_bucket, media_bucket])))
    ran = d.host.ssh(f"cd / && runuser -u {paths.SYNAPSE_USER} -- env AWS_CA_BUNDLE={media.CA_BUNDLE} "
                     f"{paths.SYNAPSE_VENV}/bin/python - {paths.SYNAPSE_CONFIG}", stdin=attack.encode(), timeout=300)
    report = ran.stdout.decode() + ran.stderr.decode()
    print(f"\n  as Synapse, with its own key:\n{report}")
    assert ran.returncode == 0, report
    after = [(b, k) for b in (backups_bucket, media_bucket)
             for k in spaces.standin.objects(f"{BACKUP_PREFIX}{spaces.backup_name}/", bucket=b)]
    assert after == targets, "Synapse deleted a backup"
    assert planted not in d.ssh(f"{paths.SPACES_COMMAND} list-backups").split(), "Synapse planted a backup"
    assert "wrote media" in report  # the key works: for Synapse's own bucket


# Run by Synapse's user with Synapse's venv: its S3 key from homeserver.yaml, then the attack.
PLANT_AND_DELETE = r"""
import json, sys
import boto3, yaml
from botocore.config import Config
config = yaml.safe_load(open(sys.argv[1]))
(provider,) = config["media_storage_providers"]
c = provider["config"]
s3 = boto3.client("s3", endpoint_url=c["endpoint_url"], region_name=c["region_name"],
                  aws_access_key_id=c["access_key_id"], aws_secret_access_key=c["secret_access_key"],
                  config=Config(retries={"max_attempts": 1}))
s3.put_object(Bucket=c["bucket"], Key="media/ms-attack-probe", Body=b"x")
s3.delete_object(Bucket=c["bucket"], Key="media/ms-attack-probe")
print("wrote media to", c["bucket"])
for bucket, key in json.loads('TARGETS'):
    try:
        s3.delete_object(Bucket=bucket, Key=key)
        print("DELETED", bucket, key)
    except Exception as error:
        print("refused delete", bucket, key, type(error).__name__, str(error)[:80])
for bucket in json.loads('BUCKETS'):
    for file in ("synapse.dump", "SHA256SUMS"):
        try:
            s3.put_object(Bucket=bucket, Key=f"backups/PLANT_NAME/{file}", Body=b"planted")
            print("PLANTED", bucket, file)
        except Exception as error:
            print("refused plant", bucket, file, type(error).__name__, str(error)[:80])
"""


def test_a_backup_nobody_made_here_is_refused_before_anything_is_restored(spaces: SpacesSwitch) -> None:
    """Issue 26: whoever can write the backups bucket (its key, or earlier Synapse's) plants a complete
    backup with valid sums; `matrix-stack-restore spaces:<it>` refuses it before anything happens: nothing
    of it reaches the volume and Synapse is never stopped."""
    d = spaces.deployment
    forged = "20261230T000000Z-forged"
    dump = b"PGDMP planted by someone else"
    sums = f"{hashlib.sha256(dump).hexdigest()}  synapse.dump\n".encode()
    s3 = spaces.standin.client()
    for bucket in set(buckets(d)):
        s3.put_object(Bucket=bucket, Key=f"{BACKUP_PREFIX}{forged}/synapse.dump", Body=dump)
        s3.put_object(Bucket=bucket, Key=f"{BACKUP_PREFIX}{forged}/SHA256SUMS", Body=sums)
    pid = d.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip()
    try:
        refused = d.host.ssh(f"{paths.RESTORE_COMMAND} spaces:{forged}", timeout=300)
        print(f"\n  restore of the planted backup: exit {refused.returncode}: {refused.stderr.decode().strip()[-300:]}")
        assert refused.returncode != 0
        assert d.ssh(f"ls -A {paths.BACKUP_DIR}").split().count(forged) == 0, "the planted backup reached the volume"
        assert d.ssh(f"systemctl show -P MainPID {paths.SYNAPSE_UNIT}").strip() == pid
    finally:
        d.ssh(f"rm -rf {paths.BACKUP_DIR}/{forged} {paths.BACKUP_DIR}/.partial-{forged}")


def test_a_key_leading_out_of_the_backups_directory_writes_nothing(spaces: SpacesSwitch) -> None:
    """Issue 26 (reproduced against moto): an object named backups/<name>/../../../../etc/cron.d/<x> was
    written wherever it pointed by root's get-backup."""
    d = spaces.deployment
    name, planted = "20261229T000000Z-escape", f"ms-escape-{os.urandom(3).hex()}"
    s3 = spaces.standin.client()
    for bucket in set(buckets(d)):
        s3.put_object(Bucket=bucket, Key=f"{BACKUP_PREFIX}{name}/SHA256SUMS", Body=b"")
        s3.put_object(Bucket=bucket, Key=f"{BACKUP_PREFIX}{name}/../../../../etc/cron.d/{planted}",
                      Body=b"* * * * * root touch /tmp/ms-cron-ran\n")
    try:
        got = d.host.ssh(f"{paths.SPACES_COMMAND} get-backup {name} {paths.BACKUP_DIR}", timeout=300)
        print(f"\n  get-backup: exit {got.returncode}: {got.stderr.decode().strip()[-200:]}")
        assert d.ssh("ls -A /etc/cron.d").split().count(planted) == 0, "root wrote outside the backups directory"
        assert got.returncode != 0
    finally:
        d.ssh(f"rm -f /etc/cron.d/{planted}; rm -rf {paths.BACKUP_DIR}/{name} {paths.BACKUP_DIR}/.partial-{name}")


def test_a_deleted_backup_comes_back_from_the_buckets_versions(spaces: SpacesSwitch) -> None:
    d = spaces.deployment
    assert spaces.backup_name
    bucket = buckets(d)[1]
    s3 = spaces.standin.client()
    for key in spaces.standin.objects(f"{BACKUP_PREFIX}{spaces.backup_name}/", bucket=bucket):
        s3.delete_object(Bucket=bucket, Key=key)
    assert spaces.backup_name not in d.ssh(f"{paths.SPACES_COMMAND} list-backups").split()
    d.ssh(f"{paths.SPACES_COMMAND} undelete-backup {spaces.backup_name}")
    assert spaces.backup_name in d.ssh(f"{paths.SPACES_COMMAND} list-backups").split()


def test_a_fresh_droplet_restores_from_the_bucket(spaces: SpacesSwitch) -> None:
    """The volume is lost: a new droplet of the stack on a new, empty volume restores the bucket's copy,
    then serves the messages and every file (from the bucket: its media store is empty)."""
    assert spaces.backup_name, "needs the backup of test_a_backup_is_copied_to_the_bucket"
    with deployed_host(FRESH_INDEX, spaces.workdir / "fresh-volume.img", outsider=False) as fresh:
        spaces.standin.reach_from(fresh.host)
        fresh.spaces = spaces.standin.answers
        results = fresh.apply(mediaStorage="spaces")
        print(f"\nfresh droplet provisioned in {sum(r.seconds for r in results):.0f} s of steps")
        listing = fresh.host.ssh(paths.RESTORE_COMMAND)
        assert listing.returncode == 2 and spaces.backup_name in listing.stderr.decode()
        restored = fresh.host.ssh(f"{paths.RESTORE_COMMAND} spaces:{spaces.backup_name}")
        assert restored.returncode == 0, restored.stderr.decode()[-2000:]
        assert history(fresh, spaces.room) == ["written before the bucket"]
        for uri, data in spaces.files.items():
            assert not on_volume(fresh, uri)
            assert download(fresh, uri) == (200, data)


def test_fetching_media_writes_nothing_through_a_link_synapse_put_in_its_store(spaces: SpacesSwitch) -> None:
    """Issue 26: the media store is Synapse's; root's fetch-media followed a directory link Synapse put
    there and wrote into a root directory. Now the fetch runs as Synapse: the file is reported, nothing
    lands in /etc/cron.d, and the trim and the marker stay (not every file is local)."""
    d = spaces.deployment
    planted = f"ms-{os.urandom(3).hex()}"
    link = f"{paths.SYNAPSE_MEDIA_STORE}/local_content/{planted}"
    ran = d.host.ssh(f"cd / && runuser -u {paths.SYNAPSE_USER} -- sh -c "
                     f"'mkdir -p {paths.SYNAPSE_MEDIA_STORE}/local_content && ln -s /etc/cron.d {link}'")
    assert ran.returncode == 0, ran.stderr.decode()
    key = f"{MEDIA_PREFIX}local_content/{planted}/zz/root-cron-entry"
    spaces.standin.client().put_object(Bucket=buckets(d)[0], Key=key,
                                       Body=b"* * * * * root touch /tmp/ms-cron-ran\n")
    try:
        fetched = d.host.ssh(f"{paths.SPACES_COMMAND} fetch-media", timeout=600)
        print(f"\n  fetch-media: exit {fetched.returncode}: {fetched.stderr.decode().strip()[-300:]}")
        assert d.ssh("ls -A /etc/cron.d").split().count("zz") == 0, "root wrote through Synapse's link"
        assert fetched.returncode != 0 and "NOT fetched" in fetched.stderr.decode()
        assert d.ssh(f"test -e {paths.MEDIA_SPACES_MARKER} && echo kept").strip() == "kept"
    finally:
        spaces.standin.client().delete_object(Bucket=buckets(d)[0], Key=key)
        d.ssh(f"rm -f {link}; rm -rf /etc/cron.d/zz")
        assert d.recording is not None
        run_all(d.recording, only={"media-offload"})  # the trim and the marker, as before


def test_the_way_back_brings_every_file_onto_the_volume(spaces: SpacesSwitch) -> None:
    d = spaces.deployment
    assert d.recording is not None
    before = d.recording
    d.config.pop("mediaStorage")
    after = d.record()
    changed = changed_steps(before, after)
    assert changed == SWITCH_STEPS
    with pytest.raises(StepFailed) as refused:  # media are in the bucket only
        run_all(after, only=changed)
    assert refused.value.result.name == "synapse-install"
    assert "fetch-media" in str(refused.value)
    fetched = d.ssh(f"{paths.SPACES_COMMAND} fetch-media 2>&1")
    print(fetched)
    assert all(on_volume(d, uri) for uri in spaces.files)
    assert d.ssh(f"systemctl is-enabled {media.TIMER} || true").strip() == "disabled"
    results = run_all(after, only=changed)
    assert {r.name for r in results} == BACK_STEPS and all(r.returncode == 0 for r in results)
    d.spaces = None
    spaces.standin.stop()  # the bucket is out of reach: every file is served from the volume
    for uri, data in spaces.files.items():
        assert download(d, uri) == (200, data)
    # A left-over run of the trim removes nothing now.
    out = d.ssh(f"{media.OFFLOAD_COMMAND} 0s 2>&1")
    assert "nothing removed" in out and all(on_volume(d, uri) for uri in spaces.files)
