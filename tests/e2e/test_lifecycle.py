"""The lifecycle promises, checked on the real host: re-runs change nothing, a change touches only its
own step and service, data outlives the droplet, services recover by themselves, and a provisioning run
killed halfway is finished by the next one.

The shared deployment (conftest) serves the first tests; data survival and interrupted provisioning use
two more hosts of their own, one after the other, on one volume image (a replaced droplet).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gc
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    UploadResponse,
)

from components import paths
from components.platform import PLATFORMS, Platform
from components.render import render
from components.services import backup, maintenance
from components.services.release import volume_writers
from components.settings import DEFAULTS
from tests.e2e.accounts import create_user, guest_api, login, password_works
from tests.e2e.clients import http_get, matrix_client, run, session, turn_relay
from tests.e2e.deployment import DOMAIN, E2E_INDEX, HOMESERVER, Deployment, deployed_host
from tests.e2e.observe import Snapshot, derived_files, derived_links, differences, managed_files, service_units, snapshot
from tests.e2e.runner import StepFailed, StepResult, connect, run_all, run_delete, run_step, ssh_command
from tests.e2e.testhost import volume
from tests.harness import Recording, parse_bundle

pytestmark = pytest.mark.e2e

# The replaced-droplet hosts: indexes of their own, next to the shared deployment's (see deployment.py).
FIRST_INDEX, SECOND_INDEX = E2E_INDEX + 100, E2E_INDEX + 101
# The replaced droplet also moves the server from Debian 12 to 13, as a user changing dropletImage
# does: the new droplet must upgrade PostgreSQL 15's cluster on the volume to 17 and lose nothing.
OLD_IMAGE, NEW_IMAGE = "debian-12-x64", "debian-13-x64"
OLD, NEW = (next(p for p in PLATFORMS if image.startswith(p.image_prefix + "-")) for image in (OLD_IMAGE, NEW_IMAGE))
MB = 1024 * 1024


# -- helpers ---------------------------------------------------------------------------------------
def take_snapshot(deployment: Deployment) -> Snapshot:
    assert deployment.recording is not None
    return snapshot(deployment.ssh, managed_files(deployment.recording) + derived_files(DOMAIN), derived_links())


def print_steps(title: str, results: list[StepResult]) -> None:
    print(f"\n{title}:")
    for result in results:
        print(f"  {result.name:24s} {result.seconds:6.1f} s")
    print(f"  {'total':24s} {sum(r.seconds for r in results):6.1f} s")


def bundle_contents(recording: Recording) -> dict[str, str]:
    return {f.path: f.content for c in recording.commands() for f in parse_bundle(c.inputs["stdin"])[0]}


def upload_status(deployment: Deployment, token: str, size: int) -> int:
    async def go() -> int:
        async with session(deployment.edge_address, deployment.ca_file, {"Authorization": f"Bearer {token}"}) as s:
            async with s.post(f"{HOMESERVER}/_matrix/media/v3/upload", data=io.BytesIO(b"u" * size),
                              # nginx answers a too-large Content-Length before the body is sent
                              expect100=True, headers={"Content-Type": "application/octet-stream"}) as response:
                await response.read()
                return response.status

    return run(go)


def server_keys(deployment: Deployment) -> dict[str, Any]:
    """The federation signing keys as another server sees them (through nginx)."""
    status, _, body = run(lambda: http_get(f"{HOMESERVER}/_matrix/key/v2/server", deployment.edge_address,
                                           deployment.ca_file))
    assert status == 200, body[:500]
    document = json.loads(body)
    assert document["server_name"] == DOMAIN
    return dict(document["verify_keys"])


def signing_key_identity(deployment: Deployment, path: str = paths.SYNAPSE_SIGNING_KEY) -> str:
    """The signing key file's inode, modification time, size and content hash: all unchanged when the key
    was never rewritten. Not its ctime: a host whose Synapse user has another uid re-owns the file."""
    return deployment.ssh(f"stat -c '%i %Y %s' {path} && sha256sum < {path}").strip()


def wait_on_guest(deployment: Deployment, condition: str, what: str, timeout: int = 180) -> float:
    """Poll a shell condition in the guest (bounded); return the seconds it took."""
    script = (f"start=$SECONDS; for _ in $(seq {timeout}); do if {condition}; then echo $((SECONDS - start)); "
              f"exit 0; fi; sleep 1; done; exit 1")
    proc = deployment.host.ssh(f"bash -c {shlex.quote(script)}", timeout=timeout + 60)
    assert proc.returncode == 0, f"{what}: not true within {timeout}s ({proc.stderr.decode()[-500:]})"
    return float(proc.stdout.decode().strip() or 0)


def synapse_healthy() -> str:
    return "[ \"$(curl -fsS --max-time 5 http://127.0.0.1:8008/health 2>/dev/null)\" = OK ]"


@pytest.fixture(autouse=True)
def _collect_client_leftovers() -> Iterator[None]:
    """Collect what the clients left for the garbage collector while this test's warning filters
    apply (see conftest), not at the end of the session where nothing filters it."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def admin_token(deployment: Deployment) -> str:
    """One admin login for the module (logins are rate-limited per account)."""
    return login(deployment, "admin", deployment.admin_password)[1]


# -- 1. idempotency --------------------------------------------------------------------------------
def test_rerunning_every_step_changes_nothing_on_the_server(deployment: Deployment) -> None:
    before = take_snapshot(deployment)
    assert before.data["synapse_version"] == DEFAULTS["synapseVersion"]
    assert before.nginx_workers, "nginx has no worker processes"
    assert before.data["postgres_listen_addresses"] == "127.0.0.1", "postgres-config's conf.d is not in effect"
    missing = [p for p, v in before.data["files"].items() if v is None]
    assert not missing, f"files the steps should have written are missing: {missing}"

    results = deployment.apply()  # every step, nothing changed
    print_steps("re-run of every step, nothing changed", results)
    after = take_snapshot(deployment)

    changes = differences(before, after)
    if changes:  # what the steps said they did
        print("\n".join(line for r in results for line in r.stderr.splitlines() if line.startswith("[matrix-stack:")))
    assert not changes, "a re-run with no change touched the server:\n" + "\n".join(changes)


# -- 2. change locality ----------------------------------------------------------------------------
def _apply_changed(deployment: Deployment, **changes: Any) -> tuple[set[str], set[str], list[StepResult]]:
    """Record with `changes` and run only the steps whose triggers changed, like `pulumi up`.

    A value of None removes the key (back to the program's default). Returns the changed steps, the
    managed files whose content changed, and the results.
    """
    before = deployment.recording
    assert before is not None
    steps, results = deployment.apply_changes(**changes)
    assert deployment.recording is not None
    old, new = bundle_contents(before), bundle_contents(deployment.recording)
    files = {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
    return steps, files, results


def test_a_changed_setting_reruns_only_its_steps_and_restarts_only_its_service(
    deployment: Deployment, admin_token: str
) -> None:
    expected_steps = {"synapse-config", "nginx-sites", "selfcheck-verify"}
    before = take_snapshot(deployment)
    restored: tuple[set[str], set[str], list[StepResult]] | None = None
    try:
        steps, files, results = _apply_changed(deployment, maxUploadSizeMb=20)
        print_steps(f"maxUploadSizeMb=20, steps {sorted(steps)}", results)
        assert steps == expected_steps
        assert {r.name for r in results} == steps
        after = take_snapshot(deployment)

        # Only the files whose content changed were rewritten; nothing else on the server moved.
        rewritten = {p for p in before.data["files"] if before.data["files"][p] != after.data["files"][p]}
        assert paths.SYNAPSE_CONFIG in files
        assert rewritten == files, f"rewritten {sorted(rewritten)}, content changed {sorted(files)}"

        synapse_before, synapse_after = before.unit("matrix-synapse.service"), after.unit("matrix-synapse.service")
        assert synapse_after["InvocationID"] != synapse_before["InvocationID"], "Synapse was not restarted"
        assert synapse_after["MainPID"] != synapse_before["MainPID"]
        assert synapse_after["ActiveState"] == "active"

        assert after.nginx_master == before.nginx_master, "nginx was restarted, not reloaded"
        assert after.unit("nginx.service")["InvocationID"] == before.unit("nginx.service")["InvocationID"]
        assert after.nginx_workers and not set(after.nginx_workers) & set(before.nginx_workers), (
            f"nginx was not reloaded: workers {before.nginx_workers} -> {after.nginx_workers}")

        for unit in ("coturn.service", deployment.settings.platform.postgres_unit, paths.MOUNT_UNIT):
            assert after.unit(unit) == before.unit(unit), f"{unit} was touched"
        assert after.data["postgres_times"] == before.data["postgres_times"], "PostgreSQL was reloaded"
        for key in ("dpkg_log_lines", "synapse_record_ctime_ns"):
            assert after.data[key] == before.data[key]

        homeserver = deployment.ssh(f"cat {paths.SYNAPSE_CONFIG}")
        assert 'max_upload_size: "20M"' in homeserver.splitlines()
        status = upload_status(deployment, admin_token, 21 * MB)
        print(f"21 MB upload with maxUploadSizeMb=20: HTTP {status}")
        assert status == 413
    finally:
        restored = _apply_changed(deployment, maxUploadSizeMb=None)
        print_steps(f"back to the default, steps {sorted(restored[0])}", restored[2])

    assert restored[0] == expected_steps
    assert 'max_upload_size: "{}M"'.format(DEFAULTS["maxUploadSizeMb"]) in deployment.ssh(
        f"cat {paths.SYNAPSE_CONFIG}").splitlines()
    status = upload_status(deployment, admin_token, 21 * MB)
    print(f"21 MB upload with the default maxUploadSizeMb: HTTP {status}")
    assert status == 200


# -- 2b. a resized volume ------------------------------------------------------------------------------
# The volume's mounts as the program wants them: its root, and its postgresql/ bound where Debian keeps clusters.
OUR_MOUNTS = sorted([paths.DATA_MOUNT, paths.POSTGRES_BASE])


def volume_mounts(deployment: Deployment) -> list[str]:
    """Every mount point of the data volume's filesystem in the guest (bind mounts of it included), sorted."""
    device = deployment.ssh(f"readlink -f {deployment.host.volume_guest_path}").strip()
    return sorted(deployment.ssh(f"findmnt -rn -S {device} -o TARGET || true").split())


def filesystem_mib(deployment: Deployment) -> int:
    return int(deployment.ssh(f"df --output=size -BM {paths.DATA_MOUNT} | tail -n 1").strip().rstrip("M"))


def test_a_raised_volume_size_grows_the_filesystem(deployment: Deployment) -> None:
    """volumeSizeGb raised: DigitalOcean grows the device in place (here: the image and its loop device);
    the next `up` re-runs only the volume step, which grows the XFS online; nothing restarts."""
    host = deployment.host
    before, units_before = filesystem_mib(deployment), snapshot(deployment.ssh, [])
    grown = host.volume_image.stat().st_size + 512 * MB
    volume.grow(host.volume_image, grown)
    assert int(deployment.ssh(f"blockdev --getsize64 {host.volume_guest_path}").strip()) == grown
    assert filesystem_mib(deployment) == before  # the device alone is not enough
    try:
        steps, results = deployment.apply_changes(volumeSizeGb=DEFAULTS["volumeSizeGb"] + 1)
        print_steps(f"volumeSizeGb raised, steps {sorted(steps)}", results)
        assert steps == {"volume-mount", "selfcheck-verify"}
        (step,) = [r for r in results if r.name == "volume-mount"]
        assert "growing the filesystem" in step.stderr
        after = filesystem_mib(deployment)
        print(f"filesystem: {before} MiB -> {after} MiB")
        assert after >= before + 500
        for unit in ("matrix-synapse.service", deployment.settings.platform.postgres_unit, paths.MOUNT_UNIT):
            assert snapshot(deployment.ssh, []).unit(unit)["InvocationID"] == units_before.unit(unit)["InvocationID"]
    finally:
        deployment.apply_changes(volumeSizeGb=None)
    assert filesystem_mib(deployment) >= before + 500  # going back in the config shrinks nothing


# -- 2b'. a TURN setting: coturn restarts, nothing else ------------------------------------------------
def test_a_turn_setting_change_restarts_coturn_and_no_other_service(deployment: Deployment) -> None:
    """turnRelayPorts narrowed: coturn-config (and the firewall mirror) re-run, coturn restarts with the
    new range; the web and database services are not touched. Going back restarts it again."""
    before = snapshot(deployment.ssh, [])
    try:
        steps, results = deployment.apply_changes(turnRelayPorts="49160-49199")
        print_steps(f"turnRelayPorts=49160-49199, steps {sorted(steps)}", results)
        assert "coturn-config" in steps
        after = snapshot(deployment.ssh, [])
        assert after.unit("coturn.service")["InvocationID"] != before.unit("coturn.service")["InvocationID"], (
            "coturn kept running with its old configuration")
        assert after.unit("coturn.service")["ActiveState"] == "active"
        ports = deployment.ssh(f"grep -E '^(min|max)-port=' {paths.COTURN_CONFIG}").split()
        assert ports == ["min-port=49160", "max-port=49199"]
        for unit in ("matrix-synapse.service", "nginx.service", deployment.settings.platform.postgres_unit, paths.MOUNT_UNIT):
            assert after.unit(unit)["InvocationID"] == before.unit(unit)["InvocationID"], f"{unit} was restarted"
    finally:
        steps, results = deployment.apply_changes(turnRelayPorts=None)
        print_steps(f"back to the default, steps {sorted(steps)}", results)
    restored = snapshot(deployment.ssh, [])
    assert restored.unit("coturn.service")["ActiveState"] == "active"


# -- 2b''. the volume step and a volume that holds a filesystem --------------------------------------------
def test_the_volume_step_never_formats_a_volume_that_holds_a_filesystem(deployment: Deployment) -> None:
    """The volume released (services stopped, unmounted) as before a detach, then the volume step run
    again, as on a droplet that finds the volume attached: the same XFS (UUID) with everything on it."""
    assert deployment.recording is not None
    device = deployment.host.volume_guest_path
    uuid_before = deployment.ssh(f"blkid -p -o value -s UUID {device}").strip()
    canary = f"{paths.DATA_MOUNT}/matrix-stack-e2e-canary"
    deployment.ssh(f"head -c 4096 /dev/urandom > {canary}")
    canary_sum = deployment.ssh(f"sha256sum < {canary}")
    released = run_delete(deployment.recording.named("release-volume"), deployment.key_file)
    assert released.returncode == 0, released.stderr
    assert volume_mounts(deployment) == []
    remount = run_step(deployment.recording.named("volume-mount"), deployment.key_file)
    print(f"\nvolume step on the released volume: rc {remount.returncode}, {remount.seconds:.1f} s")
    try:
        assert remount.returncode == 0, remount.stderr
        assert "formatting" not in remount.stderr
        assert deployment.ssh(f"blkid -p -o value -s UUID {device}").strip() == uuid_before
        assert deployment.ssh(f"sha256sum < {canary}") == canary_sum
        assert volume_mounts(deployment) == OUR_MOUNTS
    finally:
        deployment.ssh(f"rm -f {canary}")
        print_steps("every step again (the services the release stopped)", run_all(deployment.recording))


# -- 2c. a config the real tool rejects ------------------------------------------------------------------
def with_file_edited(command: Any, path: str, edit: Any) -> Any:
    """The recorded step with one of its bundle's files changed by `edit(text) -> text`."""
    stdin = command.inputs["stdin"]
    pattern = re.compile(rf"(ms_put_file {re.escape(path)} \S+ \S+ \S+ <<'MS_END_OF_FILE'\n)(.*?)(MS_END_OF_FILE)", re.S)
    match = pattern.search(stdin)
    assert match, f"{path} is not in {command.name}'s bundle"
    text = edit(base64.b64decode(match.group(2)).decode())
    edited = stdin[: match.start(2)] + base64.encodebytes(text.encode()).decode() + stdin[match.end(2):]
    return dataclasses.replace(command, raw_inputs={**command.raw_inputs, "stdin": edited})


def test_a_config_synapse_rejects_never_replaces_the_working_one(deployment: Deployment) -> None:
    """A homeserver.yaml Synapse refuses (here an upload size it cannot parse) fails the step, and the
    file on disk is still the working one: Synapse restarted from disk comes back healthy."""
    assert deployment.recording is not None
    working = deployment.ssh(f"cat {paths.SYNAPSE_CONFIG}")
    step = with_file_edited(deployment.recording.named("synapse-config"), paths.SYNAPSE_CONFIG,
                            lambda text: re.sub(r"(?m)^max_upload_size: .*$", 'max_upload_size: "fifty megabytes"', text))
    result = run_step(step, deployment.key_file)
    print(f"\nrejected synapse-config: rc {result.returncode}")
    assert result.returncode != 0
    assert "Synapse rejects" in result.stderr and f"restored the previous {paths.SYNAPSE_CONFIG}" in result.stderr
    assert deployment.ssh(f"cat {paths.SYNAPSE_CONFIG}") == working
    assert deployment.ssh(f"ls {paths.SYNAPSE_CONFIG_DIR}").split().count("homeserver.yaml.ms-previous") == 0
    deployment.ssh("systemctl restart matrix-synapse")
    wait_on_guest(deployment, synapse_healthy(), "Synapse healthy from the config on disk", timeout=180)


# -- 4. recovery -----------------------------------------------------------------------------------
def test_synapse_killed_is_brought_back_by_systemd(deployment: Deployment) -> None:
    before = snapshot(deployment.ssh, [], units=["matrix-synapse.service"]).unit("matrix-synapse.service")
    pid = int(before["MainPID"])
    assert pid > 0 and before["ActiveState"] == "active"
    deployment.ssh(f"kill -KILL {pid}")
    condition = (f"pid=$(systemctl show -p MainPID --value matrix-synapse); "
                 f"[ \"$pid\" != 0 ] && [ \"$pid\" != {pid} ] && systemctl is-active --quiet matrix-synapse "
                 f"&& {synapse_healthy()}")
    seconds = wait_on_guest(deployment, condition, "Synapse back after SIGKILL", timeout=180)
    after = snapshot(deployment.ssh, [], units=["matrix-synapse.service"]).unit("matrix-synapse.service")
    print(f"\nSynapse back {seconds:.0f} s after SIGKILL: PID {pid} -> {after['MainPID']}, "
          f"NRestarts {before['NRestarts']} -> {after['NRestarts']}")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["InvocationID"] != before["InvocationID"]
    status, _, _ = run(lambda: http_get(f"{HOMESERVER}/_matrix/client/versions", deployment.edge_address,
                                        deployment.ca_file))
    assert status == 200


def test_every_service_comes_back_after_a_reboot(deployment: Deployment) -> None:
    assert deployment.recording is not None
    before = snapshot(deployment.ssh, [])
    started = time.monotonic()
    deployment.host.reboot()
    booted = time.monotonic() - started
    units = " ".join(service_units(deployment.settings.platform))
    seconds = wait_on_guest(deployment, f"systemctl is-active --quiet {units} && {synapse_healthy()}",
                            "every service active after the reboot", timeout=180)
    after = snapshot(deployment.ssh, [])
    print(f"\nreboot: guest up in {booted:.0f} s, all services active {seconds:.0f} s later")
    for unit in service_units(deployment.settings.platform):
        assert after.unit(unit)["ActiveState"] == "active", unit
        assert after.unit(unit)["InvocationID"] != before.unit(unit)["InvocationID"], f"{unit} did not restart?"
    deployment.ssh(f"mountpoint -q {paths.DATA_MOUNT} && test -f {paths.SYNAPSE_SIGNING_KEY}")
    assert volume_mounts(deployment) == OUR_MOUNTS  # DigitalOcean's fstab line did not come back
    results = run_all(deployment.recording, only={"selfcheck-verify"})
    print_steps("self-check after the reboot", results)


# -- 3 and 5. a replaced droplet on the same volume, provisioned with interruptions -----------------
@dataclass
class FirstGeneration:
    """What the first host held before it was destroyed."""

    bob_password: str
    room_id: str
    messages: list[str]
    media_uri: str
    media_sha256: str
    keys: dict[str, Any]
    signing_key_stat: str
    backup: str  # a backup taken on the first host (its directory's name in the backups directory)
    in_place: list[StepResult]  # the steps run on the first host, which moved its volume to this layout
    room_after_move: tuple[list[str], bytes]  # bob's view of the room right after that move
    certificate: str = ""  # the first host's certificate (serial and fingerprint) before the move
    certificate_after_move: str = ""  # and after it, the ACME account and certificate moved to the volume
    acme_server: str = ""  # the first host's ACME server (each test host has its own pebble)


@dataclass
class Interruption:
    step: str
    seconds: float
    killed_while_running: bool
    returncode: int | None
    remote_left_running: bool
    stderr: str


@dataclass
class Release:
    """The old droplet's side of a replacement: writes in flight, the guard's delete, the detach."""

    acknowledged: list[str]  # messages the server confirmed while the release ran
    result: StepResult  # the release-volume step's delete command, as the provider runs it
    mounts_after: list[str]  # mounts of the volume left on the old droplet
    writers_after: dict[str, str]  # ActiveState of every unit that writes to the volume
    cluster_state: str  # pg_controldata of the volume as detached


@dataclass
class SecondGeneration:
    first: FirstGeneration
    deployment: Deployment
    release: Release | None = None
    interruptions: list[Interruption] = field(default_factory=list)
    passes: list[list[StepResult]] = field(default_factory=list)
    failure: BaseException | None = None


def populate(deployment: Deployment, data_mount: str = paths.DATA_MOUNT) -> FirstGeneration:
    """A second user, a room with messages both ways and a file, as users leave them on a server whose
    volume is mounted at `data_mount`."""
    signing_key = paths.SYNAPSE_SIGNING_KEY.replace(paths.DATA_MOUNT, data_mount, 1)
    admin_token = login(deployment, "admin", deployment.admin_password)[1]
    bob_password = secrets.token_urlsafe(16)
    create_user(deployment, admin_token, "bob", bob_password)
    media = os.urandom(3 * MB)
    messages = [f"before the replacement {secrets.token_hex(4)}", f"reply {secrets.token_hex(4)}"]

    async def go() -> tuple[str, str]:
        alice = matrix_client(HOMESERVER, "admin", deployment.edge_address, deployment.ca_file)
        bob = matrix_client(HOMESERVER, "bob", deployment.edge_address, deployment.ca_file)
        try:
            alice.access_token, alice.user_id = admin_token, f"@admin:{DOMAIN}"
            assert isinstance(await bob.login(bob_password), LoginResponse)
            room = await alice.room_create(name="survives", invite=[f"@bob:{DOMAIN}"])
            assert isinstance(room, RoomCreateResponse), room
            assert isinstance(await bob.join(room.room_id), JoinResponse)
            for client, body in ((alice, messages[0]), (bob, messages[1])):
                sent = await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
                assert isinstance(sent, RoomSendResponse), sent
            upload, _ = await alice.upload(lambda *_: media, content_type="application/octet-stream",
                                           filename="keep.bin", filesize=len(media))
            assert isinstance(upload, UploadResponse), upload
            sent = await alice.room_send(room.room_id, "m.room.message",
                                         {"msgtype": "m.file", "body": "keep.bin", "url": upload.content_uri})
            assert isinstance(sent, RoomSendResponse), sent
            return room.room_id, upload.content_uri
        finally:
            await alice.close()
            await bob.close()

    room_id, media_uri = run(go)
    return FirstGeneration(
        bob_password=bob_password, room_id=room_id, messages=messages, media_uri=media_uri,
        media_sha256=hashlib.sha256(media).hexdigest(), keys=server_keys(deployment),
        signing_key_stat=signing_key_identity(deployment, signing_key),
        backup=deployment.ssh(f"{paths.BACKUP_COMMAND} first-host").strip().splitlines()[-1].rsplit("/", 1)[-1],
        in_place=[], room_after_move=([], b""))


# -- the volume layout before this one: the volume itself at /var/lib/postgresql, owned by postgres --------
LEGACY_PATHS = (f"s#{paths.POSTGRES_VOLUME_DIR}#{paths.POSTGRES_BASE}#g; s#{paths.DATA_MOUNT}#{paths.POSTGRES_BASE}#g; "
                f"s#{paths.MOUNT_UNIT}#{paths.POSTGRES_BIND_UNIT}#g")


def served_certificate(deployment: Deployment) -> str:
    """The serial and SHA-256 fingerprint of the certificate the host's nginx serves (and certbot keeps)."""
    live = f"{paths.CERT_LIVE_DIR}/{deployment.domain}/cert.pem"
    served = deployment.ssh(f"openssl s_client -connect 127.0.0.1:443 -servername {deployment.settings.matrix_host} "
                            f"</dev/null 2>/dev/null | openssl x509 -noout -serial -fingerprint -sha256").strip()
    kept = deployment.ssh(f"openssl x509 -noout -serial -fingerprint -sha256 -in {live}").strip()
    assert served == kept and "serial=" in served, (served, kept)
    return served


def rewind_to_the_layout_before(deployment: Deployment) -> None:
    """Put a provisioned host back to what the program left before this layout: the volume itself mounted
    at /var/lib/postgresql by var-lib-postgresql.mount (then the device's unit), the clusters at its
    root, postgres owning it, and every config naming paths under it; its services running on it. certbot
    kept its account and certificates in /etc/letsencrypt then (real directories, on the root disk)."""
    legacy_unit = render("volume/mount.j2", device=deployment.settings.volume_device, mount_point=paths.POSTGRES_BASE)
    platform = deployment.settings.platform
    writers = " ".join(volume_writers(platform))
    started = " ".join([platform.postgres_unit, paths.SYNAPSE_UNIT, backup.TIMER, maintenance.TIMER])
    legacy_files = "/etc/matrix-synapse /etc/systemd/system /usr/local/sbin"
    script = f"""set -euo pipefail
systemctl stop {writers}
for d in {" ".join(paths.CERT_STORE_DIRS)}; do
  rm /etc/letsencrypt/$d && cp -a {paths.CERT_STORE}/$d /etc/letsencrypt/$d
done
rm -rf {paths.CERT_STORE}
systemctl disable --now {paths.POSTGRES_BIND_UNIT} {paths.MOUNT_UNIT}
rm -f /etc/systemd/system/{paths.MOUNT_UNIT}
cat > /etc/systemd/system/{paths.POSTGRES_BIND_UNIT} <<'UNIT'
{legacy_unit}UNIT
systemctl daemon-reload
systemctl enable --now {paths.POSTGRES_BIND_UNIT}
shopt -s dotglob
mv {paths.POSTGRES_BASE}/postgresql/* {paths.POSTGRES_BASE}/
rmdir {paths.POSTGRES_BASE}/postgresql
chown postgres:postgres {paths.POSTGRES_BASE}
grep -rlE '{paths.DATA_MOUNT}|{paths.MOUNT_UNIT}' {legacy_files} | xargs -r sed -i '{LEGACY_PATHS}'
systemctl daemon-reload
systemctl start {started}
for _ in $(seq 60); do [ "$(curl -fsS http://127.0.0.1:8008/health 2>/dev/null)" = OK ] && break; sleep 1; done
findmnt -rn -o TARGET,FSROOT -S $(readlink -f {deployment.host.volume_guest_path})
"""
    print("layout before, rebuilt on the first host:", deployment.ssh(script, timeout=300).strip())


def image_back_to_the_layout_before(image: Path) -> None:
    """The detached volume image as a droplet of the program before this layout left it: the clusters at
    the root, which postgres (the old droplet's uid) owns."""
    mount_point = Path(tempfile.mkdtemp(prefix="matrix-stack-layout-"))
    loop = volume.attach(image)
    try:
        subprocess.run(["mount", loop, str(mount_point)], check=True, timeout=60)
        try:
            owner = (mount_point / "postgresql").stat()
            for entry in (mount_point / "postgresql").iterdir():
                entry.rename(mount_point / entry.name)
            (mount_point / "postgresql").rmdir()
            os.chown(mount_point, owner.st_uid, owner.st_gid)
        finally:
            subprocess.run(["umount", str(mount_point)], check=True, timeout=60)
    finally:
        volume.detach_device(loop)
        mount_point.rmdir()


def write_in_flight(deployment: Deployment, first: FirstGeneration, stop: threading.Event,
                    flowing: threading.Event, acknowledged: list[str]) -> None:
    """Bob sends messages as fast as the server takes them until it stops answering (or `stop`)."""
    async def go() -> None:
        bob: AsyncClient = matrix_client(HOMESERVER, "bob", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await bob.login(first.bob_password), LoginResponse)
            for number in range(2000):
                if stop.is_set():
                    return
                body = f"in flight {number} {secrets.token_hex(3)}"
                try:
                    sent = await asyncio.wait_for(bob.room_send(
                        first.room_id, "m.room.message", {"msgtype": "m.text", "body": body}), 15)
                except (TimeoutError, OSError):
                    return
                if not isinstance(sent, RoomSendResponse):
                    return
                acknowledged.append(body)
                if len(acknowledged) >= 5:
                    flowing.set()
        finally:
            flowing.set()
            await bob.close()

    run(go)


def cluster_state_of(image: Path, platform: Platform) -> str:
    """pg_controldata's cluster state of the volume image, read on this machine, mounted read-only
    (this machine's PostgreSQL must be `platform`'s: Debian 12's 15)."""
    major = platform.postgres_major
    mount_point = Path(tempfile.mkdtemp(prefix="matrix-stack-detached-"))
    loop = volume.attach(image)
    try:
        subprocess.run(["mount", "-o", "ro,norecovery", loop, str(mount_point)], check=True, timeout=60)
        try:
            cluster = mount_point / "postgresql" / major / "main"
            out = subprocess.run([f"/usr/lib/postgresql/{major}/bin/pg_controldata", str(cluster)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        finally:
            subprocess.run(["umount", str(mount_point)], check=True, timeout=60)
    finally:
        volume.detach_device(loop)
        mount_point.rmdir()
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state"))


def release_like_the_engine(first_host: Deployment, first: FirstGeneration) -> Release:
    """The engine replacing a droplet, after the new one is up: delete the old droplet's guard (its delete
    command stops the writers and unmounts the volume) while clients write, then detach."""
    assert first_host.recording is not None
    stop, flowing = threading.Event(), threading.Event()
    acknowledged: list[str] = []
    writer = threading.Thread(target=write_in_flight, args=(first_host, first, stop, flowing, acknowledged),
                              daemon=True)
    writer.start()
    assert flowing.wait(120) and len(acknowledged) >= 5, "the writes never got going"
    during = len(acknowledged)
    result = run_delete(first_host.recording.named("release-volume"), first_host.key_file)
    stop.set()
    writer.join(timeout=120)
    print(f"release-volume delete: {result.seconds:.1f} s, rc {result.returncode}; messages acknowledged: "
          f"{during} before it, {len(acknowledged)} in all")
    platform = first_host.settings.platform
    writers = ("matrix-synapse.service", platform.postgres_unit, "matrix-stack-backup.timer",
               "matrix-stack-maintenance.timer")
    states = snapshot(first_host.ssh, [], units=writers)
    mounts = volume_mounts(first_host)
    first_host.host.shutdown()  # the droplet is deleted after the new one took over; the volume is detached
    return Release(list(acknowledged), result, mounts, {u: states.unit(u)["ActiveState"] for u in writers},
                   cluster_state_of(first_host.host.volume_image, platform))


def run_interrupted(deployment: Deployment, command: Any, started: str, grace: float,
                    crash: bool = False) -> Interruption:
    """Run one step as the provider would, and SIGKILL the ssh client once `started` holds in the guest.

    `started` is a shell condition (e.g. dpkg is running); the kill comes `grace` seconds after it first
    holds, so the step is really midway. Whatever the remote side does next is up to sshd and the step;
    with `crash`, the step dies on the server too (SIGKILL to it and its children, as in a crash),
    leaving whatever it had started behind.
    """
    inputs = command.inputs
    proc = subprocess.Popen([*connect(command, deployment.key_file), inputs["create"]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output: dict[str, bytes] = {}

    def pump(name: str, stream: Any) -> None:
        output[name] = stream.read()

    assert proc.stdin is not None
    readers = [threading.Thread(target=pump, args=(n, s), daemon=True) for n, s in
               (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    proc.stdin.write(inputs["stdin"].encode())
    proc.stdin.close()
    t0 = time.monotonic()
    # The guest watches for the moment itself (a tight loop there), so the kill lands right after it.
    watch = f"timeout 300 bash -c {shlex.quote(f'until {started}; do sleep 0.2; done')} && sleep {grace}"
    watcher = subprocess.Popen([*ssh_command(deployment.host.address, deployment.key_file), watch],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and watcher.poll() is None:
            time.sleep(0.05)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait(timeout=30)
    running = proc.poll() is None
    proc.kill()
    if crash:
        deployment.host.ssh("pkill -9 -f '^bash /root/.matrix-stack-step'; pkill -9 -f matrix-stack-postgres-upgrade; "
                            "pkill -9 -x pg_restore; pkill -9 -x pg_dump; pkill -9 -x debootstrap; true", timeout=60)
    returncode = proc.wait(timeout=30)
    for reader in readers:
        reader.join(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    seconds = time.monotonic() - t0
    time.sleep(2)
    left = deployment.host.ssh("pgrep -f '^bash /root/.matrix-stack-step' >/dev/null", timeout=30).returncode == 0
    stderr = output.get("stderr", b"").decode(errors="replace")
    print(f"  {command.name:24s} killed after {seconds:5.1f} s (running: {running}); "
          f"remote step still running: {left}")
    return Interruption(command.name, seconds, running, returncode, left, stderr)


def provision_with_interruptions(deployment: Deployment, second: SecondGeneration,
                                 kills: list[tuple[str, str, float, bool]]) -> None:
    """Provision like successive `pulumi up`s: each run starts at the first step not yet created.

    `kills` are (step, condition, grace, crash), in order: a run reaching the first pending kill's step is
    cut by killing the SSH client midway (the engine would record no result for that command, so the
    next `up` creates it again and everything after it), and with `crash` the step on the server too.
    """
    recording = deployment.record()
    done: set[str] = set()
    pending_kills = list(kills)
    while True:
        results: list[StepResult] = []
        second.passes.append(results)
        cut = False
        for command in recording.commands():
            if command.name in done:
                continue
            if pending_kills and command.name == pending_kills[0][0]:
                _, condition, grace, crash = pending_kills.pop(0)
                second.interruptions.append(run_interrupted(deployment, command, condition, grace, crash))
                cut = True
                break
            result = run_step(command, deployment.key_file)  # the deploy key the mocks hand the program
            results.append(result)
            if result.returncode != 0:
                raise StepFailed(result)
            done.add(command.name)
        if not cut:
            return


@pytest.fixture(scope="module")
def second_generation() -> Iterator[SecondGeneration]:
    """Deploy a host, use it, destroy it; boot a fresh one on the same volume and provision it, twice
    interrupting the run (SSH client killed during apt in postgres-install, during pip in synapse-install)."""
    if os.geteuid() != 0:
        pytest.fail("the end-to-end suite needs root")
    directory = Path(tempfile.mkdtemp(prefix="matrix-stack-lifecycle-volume-", dir="/var/tmp"))
    image = directory / "volume.img"
    try:
        started = time.monotonic()
        with contextlib.ExitStack() as old_droplet, contextlib.ExitStack() as new_droplet:
            first_host = old_droplet.enter_context(deployed_host(FIRST_INDEX, image, outsider=False,
                                                                 droplet_image=OLD_IMAGE))
            print_steps("first host: provisioning", first_host.apply())
            # Used on the volume layout before this one, then moved in place by the steps (a user
            # updating matrix-stack and running `pulumi up` on the same droplet).
            rewind_to_the_layout_before(first_host)
            first = populate(first_host, data_mount=paths.POSTGRES_BASE)
            first.certificate = served_certificate(first_host)
            assert first_host.recording is not None
            first.in_place = run_all(first_host.recording)
            first.certificate_after_move = served_certificate(first_host)
            first.acme_server = first_host.settings.acme_server
            print_steps("first host: the steps again, moving the volume to this layout", first.in_place)
            first.room_after_move = read_room(first_host, first)
            print(f"first host deployed and used in {time.monotonic() - started:.0f} s")
            # The engine's order: the new droplet is created (booted, nothing attached yet), the old
            # droplet's guard is deleted (its delete releases the volume), the attachment is replaced.
            second_host = new_droplet.enter_context(deployed_host(SECOND_INDEX, image, outsider=False,
                                                                  droplet_image=NEW_IMAGE))
            release = release_like_the_engine(first_host, first)
            old_droplet.close()
            # The replaced droplet finds the volume as the program before this layout left it too.
            image_back_to_the_layout_before(image)
            second = SecondGeneration(first, second_host, release)
            started = time.monotonic()
            print("\nsecond host (fresh rootfs, same volume):")
            try:
                provision_with_interruptions(second_host, second, [
                    ("postgres-install", "pgrep -x dpkg >/dev/null", 3.0, False),
                    # The database upgrade dies midway (unpacking PostgreSQL 15), as in a crash.
                    ("postgres-install", "pgrep -x debootstrap >/dev/null", 5.0, True),
                    ("synapse-install",
                     "[ $(ls -d /opt/synapse/venv/lib/python3*/site-packages/*.dist-info 2>/dev/null | wc -l) -ge 12 ]",
                     1.0, False),
                ])
            except (StepFailed, AssertionError, subprocess.TimeoutExpired) as error:
                second.failure = error
                print(f"second host: provisioning failed: {error}")
            for number, results in enumerate(second.passes, 1):
                print_steps(f"second host: run {number}", results)
            print(f"second host provisioned in {time.monotonic() - started:.0f} s")
            yield second
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def step_log(second: SecondGeneration, name: str) -> str:
    logs = [r.stderr for results in second.passes for r in results if r.name == name]
    logs += [i.stderr for i in second.interruptions if i.step == name]
    return "\n".join(logs)


def test_interrupted_provisioning_is_finished_by_the_next_run(second_generation: SecondGeneration) -> None:
    second = second_generation
    assert [i.step for i in second.interruptions] == ["postgres-install", "postgres-install", "synapse-install"]
    for interruption in second.interruptions:
        assert interruption.killed_while_running, f"{interruption.step} finished before it could be interrupted"
        assert interruption.returncode == -9
    for interruption in second.interruptions:
        rerun = [r.stderr for results in second.passes for r in results if r.name == interruption.step]
        waited = any("still running on this server" in log for log in rerun)
        print(f"{interruption.step}: killed session's step still running afterwards: "
              f"{interruption.remote_left_running}; next run waited for it: {waited}")
        # A step the killed session left running holds the step lock: the next run must wait for it,
        # never run the same step twice at once (dpkg, pip).
        assert waited or not interruption.remote_left_running, (
            f"{interruption.step} was still running on the server, and the next run did not wait for it")
    if second.failure is not None:
        raise AssertionError(f"the run after the interruption failed: {second.failure}")
    last = second.passes[-1]
    assert last[0].name == "synapse-install" and [r.name for r in last[-2:]] == ["selfcheck-verify", "health-schedule"]
    assert all(r.returncode == 0 for r in last)

    deployment = second.deployment
    assert deployment.ssh("dpkg --audit").strip() == "", "dpkg was left with half-installed packages"
    state = snapshot(deployment.ssh, [], units=service_units(NEW))
    assert state.data["synapse_version"] == DEFAULTS["synapseVersion"]
    assert state.data["postgres_listen_addresses"] == "127.0.0.1", "postgres-config's conf.d is not in effect"
    for unit in service_units(NEW):
        assert state.unit(unit)["ActiveState"] == "active", unit
    # One more complete run: everything is in place, so it passes again (including the self-check).
    assert deployment.recording is not None
    print_steps("second host: one more complete run", run_all(deployment.recording))


def test_data_survives_a_replaced_droplet_on_the_same_volume(second_generation: SecondGeneration) -> None:
    second, first = second_generation, second_generation.first
    if second.failure is not None:
        pytest.fail(f"the replacement host could not be provisioned: {second.failure}")
    deployment = second.deployment

    release = second.release
    assert release is not None
    # The old droplet let go of the volume cleanly while clients were writing.
    assert release.result.returncode == 0, release.result.stderr
    assert "the data volume is released" in release.result.stderr
    assert release.mounts_after == [] and set(release.writers_after.values()) == {"inactive"}, release
    assert release.cluster_state == "shut down", release.cluster_state  # a clean shutdown: no crash recovery
    # The new droplet read the old cluster with PostgreSQL 15 itself, which found it cleanly shut down.
    old_major, new_major = OLD.postgres_major, NEW.postgres_major
    server_log = deployment.ssh(f"cat /var/log/matrix-stack-postgres-upgrade-{old_major}.log")
    assert "database system was shut down at" in server_log, server_log[-2000:]
    assert "automatic recovery in progress" not in server_log and "not properly shut down" not in server_log
    assert volume_mounts(deployment) == OUR_MOUNTS  # a replaced droplet: no /mnt mount

    # The volume came in the layout before (clusters at its root, postgres owning it): moved in place.
    volume_log = step_log(second, "volume-mount")
    assert f"moving {old_major} into {paths.POSTGRES_VOLUME_DIR}" in volume_log, volume_log[-2000:]
    assert deployment.ssh(f"stat -c '%U %a' {paths.DATA_MOUNT}").strip() == "root 755"

    # Debian 13's PostgreSQL 17 holds the data now, verified table by table; 15's cluster is kept.
    postgres_log = step_log(second, "postgres-install")
    assert f"upgrading: PostgreSQL {old_major}'s cluster on the volume" in postgres_log, postgres_log[-2000:]
    assert "rows, equal in both clusters" in postgres_log, postgres_log[-2000:]
    # The upgrade that died midway (see the interruptions) was started again from the beginning, its
    # new cluster discarded and its half-unpacked PostgreSQL 15 made again.
    finished = [r.stderr for results in second.passes for r in results if r.name == "postgres-install"][-1]
    assert f"an earlier upgrade from PostgreSQL {old_major} did not finish" in finished, finished[-3000:]
    assert f"unpacking PostgreSQL {old_major} from Debian" in finished, finished[-3000:]
    marker = dict(line.split("=", 1) for line in deployment.ssh(
        f"cat /var/lib/postgresql/{new_major}/matrix-stack-upgraded-from-{old_major}").splitlines()
        if "=" in line and not line.startswith("#"))
    assert "synapse" in marker["databases"].split() and int(marker["tables"]) > 50 and int(marker["rows"]) > 0
    assert deployment.ssh(f"cat /var/lib/postgresql/{old_major}/main/PG_VERSION").strip() == old_major
    assert deployment.ssh("runuser -u postgres -- psql -XAtc 'SHOW server_version_num'").strip().startswith(new_major)
    assert deployment.ssh(f"test ! -e /var/cache/matrix-stack/postgresql-{old_major}-root && echo gone").strip() == "gone"
    selfcheck = step_log(second, "selfcheck-verify")
    assert f"upgraded from PostgreSQL {old_major}" in selfcheck, selfcheck[-2000:]
    synapse_log = step_log(second, "synapse-config")
    assert "placed the generated signing key" not in synapse_log
    assert signing_key_identity(deployment) == first.signing_key_stat
    assert server_keys(deployment) == first.keys
    deployment.ssh(f"cd {paths.BACKUP_DIR}/{first.backup} && sha256sum --check --quiet --strict SHA256SUMS")  # came along

    assert login(deployment, "admin", deployment.admin_password)[1]  # the same admin password works

    # certbot's account and certificate came with the volume: the new droplet found the first one's lineage.
    certificates_log = step_log(second, "certificates-issue")
    assert "reusing the certificate kept on the data volume" in certificates_log, certificates_log[-3000:]
    links = deployment.ssh(f"for d in {' '.join(paths.CERT_STORE_DIRS)}; do readlink /etc/letsencrypt/$d; done")
    assert links.split() == [f"{paths.CERT_STORE}/{d}" for d in paths.CERT_STORE_DIRS]
    assert deployment.ssh(f"stat -c '%U:%G %a' {paths.CERT_STORE}").strip() == "root:root 700"
    first_version = deployment.ssh(
        f"openssl x509 -noout -serial -fingerprint -sha256 -in /etc/letsencrypt/archive/{deployment.domain}/cert1.pem")
    assert first_version.strip() == first.certificate_after_move  # the lineage's first certificate is the first host's
    # Each test host has its own pebble (another URL, another root; Let's Encrypt is one): the kept certificate
    # is from another CA here, so the lineage is renewed from this one (the same server would keep it, tested
    # in tests/templates/test_certificates.py), and the new one is deployed (served).
    assert deployment.settings.acme_server != first.acme_server
    assert f"ACME server changed ({first.acme_server} -> {deployment.settings.acme_server})" in certificates_log
    assert served_certificate(deployment) != first.certificate_after_move

    bodies, blob = read_room(deployment, first)
    for message in first.messages:
        assert message in bodies
    lost = [m for m in release.acknowledged if m not in bodies]
    assert not lost, f"{len(lost)} of {len(release.acknowledged)} acknowledged messages were lost: {lost[:5]}"
    assert "keep.bin" in bodies
    assert hashlib.sha256(blob).hexdigest() == first.media_sha256


def test_a_volume_in_the_layout_before_is_moved_in_place(second_generation: SecondGeneration) -> None:
    """The first host ran on the layout before (the volume at /var/lib/postgresql, owned by postgres)
    with users and media; the steps, run again on that same droplet, moved it: services stopped, the
    volume remounted at /srv/matrix, the cluster moved into postgresql/, everything started again."""
    first = second_generation.first
    assert first.in_place and [r.returncode for r in first.in_place] == [0] * len(first.in_place), \
        [(r.name, r.stderr[-1000:]) for r in first.in_place if r.returncode]
    log = next(r.stderr for r in first.in_place if r.name == "volume-mount")
    assert f"moving the data volume from {paths.POSTGRES_BASE} to {paths.DATA_MOUNT}" in log, log
    assert f"stopping {paths.SYNAPSE_UNIT} for the move" in log and f"stopping {OLD.postgres_unit} for the move" in log
    assert f"moving {OLD.postgres_major} into {paths.POSTGRES_VOLUME_DIR}" in log, log
    # The self-check (which checks the volume's root is root's), then the checks between deploys.
    assert [r.name for r in first.in_place[-2:]] == ["selfcheck-verify", "health-schedule"]
    # certbot's account and certificate, in /etc on the root disk before, moved to the volume; the same
    # certificate is served, nothing was ordered.
    log = next(r.stderr for r in first.in_place if r.name == "certificates-issue")
    for d in paths.CERT_STORE_DIRS:
        assert f"moved /etc/letsencrypt/{d} to the data volume ({paths.CERT_STORE}/{d})" in log, log
    assert "forcing" not in log and "running the deploy hook" not in log, log
    assert first.certificate and first.certificate_after_move == first.certificate
    bodies, blob = first.room_after_move
    assert set(first.messages) <= set(bodies) and "keep.bin" in bodies
    assert hashlib.sha256(blob).hexdigest() == first.media_sha256


def read_room(deployment: Deployment, first: FirstGeneration) -> tuple[list[str], bytes]:
    """Bob logs in with his password and reads the room's whole history and its file."""

    async def go() -> tuple[list[str], bytes]:
        bob: AsyncClient = matrix_client(HOMESERVER, "bob", deployment.edge_address, deployment.ca_file)
        try:
            assert isinstance(await bob.login(first.bob_password), LoginResponse)
            bodies: list[str] = []
            token = ""
            for _ in range(40):  # newest first, 100 at a time, until the room's beginning
                history = await bob.room_messages(first.room_id, start=token, limit=100)
                assert isinstance(history, RoomMessagesResponse), history
                bodies += [str(getattr(e, "body", "")) for e in history.chunk]
                if not history.chunk or not history.end:
                    break
                token = history.end
            server_name, media_id = first.media_uri.removeprefix("mxc://").split("/", 1)
            async with session(deployment.edge_address, deployment.ca_file,
                               {"Authorization": f"Bearer {bob.access_token}"}) as s:
                url = f"{HOMESERVER}/_matrix/client/v1/media/download/{server_name}/{media_id}"
                async with s.get(url) as response:
                    assert response.status == 200
                    return bodies, await response.read()
        finally:
            await bob.close()

    return run(go)


# -- 6. destroyed, then adopted: a new stack (new secrets) on the volume the destroy kept ----------------
@dataclass
class Adoption:
    second: SecondGeneration
    deployment: Deployment  # the adopting stack's droplet
    destroy: StepResult  # release-volume's delete, which `pulumi destroy` runs before the detach
    bob_token: str  # an access token bob held before the destroy
    cycle_seconds: float  # from the destroy's first command to the adopting stack's passed self-check
    failure: BaseException | None = None


def whoami(deployment: Deployment, token: str) -> tuple[int, str]:
    status, _, body = run(lambda: http_get(f"{HOMESERVER}/_matrix/client/v3/account/whoami", deployment.edge_address,
                                           deployment.ca_file, {"Authorization": f"Bearer {token}"}))
    return status, json.loads(body).get("user_id", "") if status == 200 else body.decode()[:200]


@pytest.fixture(scope="module")
def adoption(second_generation: SecondGeneration) -> Iterator[Adoption]:
    """`pulumi destroy` of the second stack (its release step, then the droplet goes; the volume stays),
    then a new stack with its own name and a new stack life (every generated secret new) adopts the
    volume with `adoptVolume` and provisions a fresh droplet on it."""
    second = second_generation
    if second.failure is not None:
        pytest.fail(f"the replacement host could not be provisioned: {second.failure}")
    old = second.deployment
    assert old.recording is not None
    bob_token = login(old, "bob", second.first.bob_password)[1]
    started = time.monotonic()
    destroy = run_delete(old.recording.named("release-volume"), old.key_file)
    old.host.shutdown()  # the droplet is deleted; the retained volume is detached and kept
    print(f"\ndestroy: release-volume delete {destroy.seconds:.1f} s, rc {destroy.returncode}")
    with deployed_host(FIRST_INDEX, old.host.volume_image, outsider=False, stack="reborn",
                       secret_seed="a new stack life after the destroy", adopt=True, droplet_image=NEW_IMAGE) as new:
        adopted = Adoption(second, new, destroy, bob_token, 0.0)
        try:
            results = new.apply()
            print_steps("adopting stack: provisioning", results)
        except (StepFailed, AssertionError, subprocess.TimeoutExpired) as error:
            adopted.failure = error
            print(f"adopting stack: provisioning failed: {error}")
        adopted.cycle_seconds = time.monotonic() - started
        print(f"destroy-then-adopt cycle (release, new droplet booted, every step run): {adopted.cycle_seconds:.0f} s")
        yield adopted


def test_a_new_stack_adopts_the_volume_a_destroyed_stack_kept(adoption: Adoption) -> None:
    first, old, new = adoption.second.first, adoption.second.deployment, adoption.deployment
    assert adoption.destroy.returncode == 0, adoption.destroy.stderr
    assert "the data volume is released" in adoption.destroy.stderr
    if adoption.failure is not None:
        raise AssertionError(f"the adopting stack's provisioning failed: {adoption.failure}")
    assert new.recording is not None
    (volume,) = new.recording.of_type("digitalocean:index/volume:Volume")
    assert volume.import_id and volume.inputs["name"] == old.host.volume_name  # adopted, not created
    assert new.admin_password != old.admin_password  # the old state's secrets died with it

    def log(step: str) -> str:
        return next(r.stderr for r in new.provisioning if r.name == step)

    # The upgraded cluster is adopted as it is: no second upgrade from the 15 cluster still kept beside it.
    assert f"adopting the existing PostgreSQL {NEW.postgres_major} cluster" in log("postgres-install")
    assert "upgrading" not in log("postgres-install")
    assert "password an earlier stack gave it" in log("admin-user")
    assert "placed the generated signing key" not in log("synapse-config")
    assert volume_mounts(new) == OUR_MOUNTS
    # The volume's ACME account for this address is the first host's, which this host's pebble (restarted: a
    # CA that forgot it) does not know: it is put aside and a new one registered, and the certificate ordered.
    assert "does not know the account kept for it" in log("certificates-issue"), log("certificates-issue")[-3000:]

    # Every secret converged: the admin's password is the new stack's, the old one is refused; Synapse
    # reaches PostgreSQL with the new role password (it serves at all); coturn takes credentials made
    # with the new TURN secret.
    assert password_works(new, "admin", new.admin_password)
    assert not password_works(new, "admin", old.admin_password)
    status, _, body = run(lambda: http_get(f"{HOMESERVER}/_matrix/client/versions", new.edge_address, new.ca_file))
    assert status == 200, body[:300]
    admin_token = login(new, "admin", new.admin_password)[1]
    status, creds = guest_api(new, admin_token, "GET", "/_matrix/client/v3/voip/turnServer")
    assert status == 200, creds
    relay = turn_relay(new.host.address, creds["username"], creds["password"])
    assert relay.returncode == 0 and relay.lost == 0 and relay.sent > 0 and relay.received == relay.sent, \
        relay.output[-2000:]

    # Nothing was lost: users, their sessions, the room with every acknowledged message, media, identity.
    assert whoami(new, adoption.bob_token) == (200, f"@bob:{DOMAIN}")  # access tokens live in the database
    bodies, blob = read_room(new, first)
    assert set(first.messages) <= set(bodies)
    assert adoption.second.release is not None
    assert set(adoption.second.release.acknowledged) <= set(bodies)
    assert hashlib.sha256(blob).hexdigest() == first.media_sha256
    assert server_keys(new) == first.keys
    assert signing_key_identity(new) == first.signing_key_stat
    print(f"destroy-then-adopt cycle: {adoption.cycle_seconds:.0f} s")
