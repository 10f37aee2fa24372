"""`mediaStorage: spaces` for real: the shared deployment moves its media to a bucket and back.

An S3 server from the package index (moto) plays DigitalOcean Spaces over TLS (tests/e2e/spaces.py);
the program's recorded answers (the bucket's endpoint, the key) are its. Only the steps `pulumi up`
would run are run. Then: an upload is in the bucket when Synapse answers it; the local cache is
emptied and every file still downloads through the edge; the daily backup lands in the bucket; a
fresh droplet of the stack, on a new empty volume, restores from that copy and serves the messages
and files; last, the README's way back (fetch-media, then mediaStorage: local) brings every file
back onto the volume.
"""

from __future__ import annotations

import hashlib
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
SWITCH_STEPS = {"synapse-install", "synapse-config", "backup-schedule", "media-offload", "selfcheck-verify"}
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
        self.on = d.apply_changes(mediaStorage="spaces")


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


def test_a_backup_is_copied_to_the_bucket(spaces: SpacesSwitch) -> None:
    d = spaces.deployment
    d.ssh(f"systemctl start {backup.SERVICE}")  # the daily run
    assert d.ssh(f"systemctl show -P Result {backup.SERVICE}").strip() == "success"
    written = d.ssh(f"{paths.BACKUP_COMMAND} e2e-spaces").strip().splitlines()[-1]
    name = written.rsplit("/", 1)[1]
    copied = spaces.standin.objects(f"{BACKUP_PREFIX}{name}/")
    assert set(copied) >= {f"{BACKUP_PREFIX}{name}/{f}" for f in ("synapse.dump", "signing.key", "SHA256SUMS")}
    local_sums = d.ssh(f"cat {shlex.quote(written)}/SHA256SUMS")
    assert copied[f"{BACKUP_PREFIX}{name}/SHA256SUMS"].decode() == local_sums
    dump_sum = hashlib.sha256(copied[f"{BACKUP_PREFIX}{name}/synapse.dump"]).hexdigest()
    assert f"{dump_sum}  synapse.dump" in local_sums.splitlines()
    assert name in d.ssh(f"{paths.SPACES_COMMAND} list-backups").split()
    spaces.backup_name = name


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
