"""The deployed server, used the way its users use it: real Matrix clients, browsers' requests, TURN.

Every request goes through nginx on 443 from the host side of the test network, which the
deployment's firewall treats as Cloudflare (its address is the mocked Cloudflare range).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
from typing import Any

import pytest
from nio import (
    JoinResponse,
    LoginResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    UploadResponse,
)

from components import paths, synapse_lock
from components.services import maintenance, nginx
from components.settings import DEFAULTS
from tests.e2e.accounts import create_user, login
from tests.e2e.clients import http_get, matrix_client, run, session, turn_relay, turn_server
from tests.e2e.deployment import DOMAIN, ELEMENT_TAMPERED, HOMESERVER, Deployment
from tests.e2e.runner import StepFailed, run_all, run_step
from tests.e2e.testhost import droplet

pytestmark = pytest.mark.e2e


def test_every_provisioning_step_passed_including_the_self_check(deployment: Deployment) -> None:
    assert deployment.recording is not None
    names = [r.name for r in deployment.provisioning]
    assert names == [c.name for c in deployment.recording.commands()]  # every recorded step ran, in order
    assert all(r.returncode == 0 for r in deployment.provisioning)
    # The self-check is no longer the last step: the health checks' schedule follows it.
    selfcheck = [r for r in deployment.provisioning if r.name == "selfcheck-verify"]
    assert selfcheck and "self-check passed" in selfcheck[-1].stderr
    assert names[-1] == "health-schedule" and "the checks of the server pass" in deployment.provisioning[-1].stderr


def test_secret_carrying_steps_print_only_their_own_lines(deployment: Deployment) -> None:
    """pulumi-command streams a step's output into the `pulumi up` log; a step whose files carry secrets
    prints only its ms_log lines, and what its commands printed stays in a root-only log on the server."""
    assert deployment.recording is not None
    private = [c.name for c in deployment.recording.commands() if c.is_secret("stdin")]
    assert "synapse-config" in private and "postgres-config" in private
    for result in deployment.provisioning:
        if result.name in private:
            assert result.stdout == "", result.name
            assert all(line.startswith(f"[matrix-stack:{result.name}] ") for line in result.stderr.splitlines()), (
                result.name, result.stderr[-1000:])
            mode = deployment.ssh(f"stat -c '%a %U' /var/log/matrix-stack/{result.name}.log").split()
            assert mode == ["600", "root"], result.name


# -- the droplet as DigitalOcean makes it (tests/e2e/testhost/droplet.py) ---------------------------
def test_the_droplet_serves_the_host_key_its_user_data_installed(deployment: Deployment) -> None:
    assert deployment.recording is not None
    pinned = {c.inputs["connection"]["hostKey"] for c in deployment.recording.commands()}
    assert len(pinned) == 1
    scanned = subprocess.run(["ssh-keyscan", "-T", "10", deployment.host.address], capture_output=True, text=True,
                             timeout=60).stdout.split("\n")
    served = {" ".join(line.split()[1:3]) for line in scanned if line and not line.startswith("#")}
    assert served == pinned  # exactly the pinned key: cloud-init removed every other host key
    assert deployment.ssh("cloud-init status --format json | jq -r .status").strip() == "done"
    # cloud-init itself accepts the user data as the program declared it (its schema, no warnings).
    assert deployment.ssh("cmp /var/lib/cloud/instance/user-data.txt -", stdin=deployment.user_data) == ""
    assert "Valid" in deployment.ssh("cloud-init schema -c /var/lib/cloud/instance/user-data.txt 2>&1")


def test_a_step_refuses_a_host_with_another_key(deployment: Deployment, tmp_path: Any) -> None:
    """An impostor (here: the pin changed to another key) gets no stdin: ssh stops before the step runs."""
    assert deployment.recording is not None
    first = deployment.recording.commands()[0]
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    assert other.returncode == 0
    impostor_pin = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    first.raw_inputs["connection"] = {**first.inputs["connection"], "hostKey": impostor_pin}
    try:
        result = run_step(first, deployment.key_file)
    finally:
        deployment.record()  # back to the program's own recording
    assert result.returncode == 255 and "Host key verification failed" in result.stderr, result.stderr
    assert "[matrix-stack:" not in result.stderr  # nothing of the step ran


def test_the_data_volume_is_mounted_once_where_the_program_wants_it(deployment: Deployment) -> None:
    """DigitalOcean auto-mounted the new volume at /mnt/<name> (fstab); the volume step took that over:
    the volume's root at /srv/matrix, its postgresql/ bound at /var/lib/postgresql, nothing else."""
    name = deployment.host.volume_name
    device = deployment.ssh(f"readlink -f {deployment.host.volume_guest_path}").strip()
    mounts = deployment.ssh(f"findmnt -rn -S {device} -o TARGET,FSROOT").splitlines()
    assert sorted(mounts) == [f"{paths.DATA_MOUNT} /", f"{paths.POSTGRES_BASE} /postgresql"]
    fstab = deployment.ssh("cat /etc/fstab")
    assert f"# disabled by matrix-stack (the volume is mounted at {paths.DATA_MOUNT}): {droplet.fstab_line(name)}" in fstab
    (volume_step,) = [r for r in deployment.provisioning if r.name == "volume-mount"]
    assert f"unmounting the volume from {droplet.auto_mount_point(name)}" in volume_step.stderr


def test_synapse_runs_exactly_the_packages_of_its_versions_lock(deployment: Deployment) -> None:
    """Two deploys of one synapseVersion install the same code: the venv holds the lock's pins, no more."""
    platform = deployment.settings.platform
    lock = synapse_lock.lock_path(DEFAULTS["synapseVersion"], platform.python).read_text()
    freeze = deployment.ssh(f"{paths.SYNAPSE_VENV}/bin/pip freeze --disable-pip-version-check")
    # pip freeze leaves these out on Python 3.11 (Debian 12), and lists setuptools from 3.12 on (Debian 13).
    tooling = {"pip", "setuptools", "wheel", "distribute"}
    locked = {k: v for k, v in synapse_lock.pins(lock).items() if k not in tooling}
    frozen = synapse_lock.pins(freeze)
    assert {k: v for k, v in frozen.items() if k not in tooling} == locked
    assert all(frozen[k] == synapse_lock.pins(lock)[k] for k in tooling & frozen.keys())  # if listed, the locked one
    stamp = deployment.ssh(f"cat {paths.SYNAPSE_VENV}/matrix-stack-lock.sha256").strip()
    assert stamp == hashlib.sha256(lock.encode()).hexdigest()


def test_the_weekly_database_upkeep_is_scheduled_and_vacuums_synapses_tables(deployment: Deployment) -> None:
    """The timer waits for Sunday; one run of its service vacuums and analyses Synapse's database."""
    assert deployment.ssh(f"systemctl is-active {maintenance.TIMER}").strip() == "active"
    assert deployment.ssh(f"systemctl is-enabled {maintenance.TIMER}").strip() == "enabled"
    count = ("runuser -u postgres -- psql -XAtq -d synapse -c "
             "\"SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'events' AND last_vacuum > now() - interval '1 hour'\"")
    assert deployment.ssh(f"cd / && {count}").strip() == "0"  # autovacuum is not what the check below sees
    started = deployment.ssh("date -u '+%Y-%m-%d %H:%M:%S'").strip()
    deployment.ssh(f"systemctl start {maintenance.SERVICE}", timeout=600)  # oneshot: returns when done
    assert deployment.ssh(f"systemctl show -P Result {maintenance.SERVICE}").strip() == "success"
    assert deployment.ssh(f"cd / && {count}").strip() == "1"
    journal = deployment.ssh(f"journalctl -u {maintenance.SERVICE} --since '{started}' --no-pager -o cat")
    print(f"\n  {journal.strip().splitlines()[-1] if journal.strip() else journal}")
    assert "VACUUM (ANALYZE) of synapse done; database size " in journal


def test_first_boot_package_activity_overlapped_the_first_apt_step(deployment: Deployment) -> None:
    """The model's first-boot apt held dpkg's lock while base-packages wanted it: apt waited, nothing failed.

    The model holds the package lists' lock before dpkg's, but in every run here the step's
    `apt-get update` came only after that phase (what delays it in this container was not pinned
    down), so the steps' wait for the lists' lock is proven against a real apt in
    tests/templates/test_prelude.py instead."""
    (base,) = [r for r in deployment.provisioning if r.name == "base-packages"]
    output = base.stderr + base.stdout
    model = deployment.ssh("journalctl -o short-precise --no-pager -u e2e-droplet-first-boot-apt")
    assert "Waiting for cache lock" in output, output[:3000] + model
    assert deployment.ssh("test -e /var/lib/e2e-first-boot-apt.done && echo done").strip() == "done"


@pytest.fixture(scope="module")
def users(deployment: Deployment) -> dict[str, tuple[str, str]]:
    """The admin (password from the stack output) and a second user created by the admin."""
    admin_id, admin_token = login(deployment, "admin", deployment.admin_password)
    assert admin_id == f"@admin:{DOMAIN}"
    bob_password = secrets.token_urlsafe(16)
    create_user(deployment, admin_token, "bob", bob_password)
    return {"admin": ("admin", deployment.admin_password), "bob": ("bob", bob_password)}


def test_admin_and_a_second_user_chat_both_ways_and_share_media(
    deployment: Deployment, users: dict[str, tuple[str, str]]
) -> None:
    media = os.urandom(11 * 1024 * 1024)

    async def go() -> None:
        address, ca = deployment.edge_address, deployment.ca_file
        alice = matrix_client(HOMESERVER, "admin", address, ca)
        bob = matrix_client(HOMESERVER, "bob", address, ca)
        try:
            assert isinstance(await alice.login(users["admin"][1]), LoginResponse)
            assert isinstance(await bob.login(users["bob"][1]), LoginResponse)
            room = await alice.room_create(name="e2e", invite=[f"@bob:{DOMAIN}"])
            assert isinstance(room, RoomCreateResponse), room
            assert isinstance(await bob.join(room.room_id), JoinResponse)
            sent = await alice.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"})
            assert isinstance(sent, RoomSendResponse), sent
            reply = await bob.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello alice"})
            assert isinstance(reply, RoomSendResponse), reply

            upload, _ = await alice.upload(
                lambda *_: media, content_type="application/octet-stream", filename="blob.bin", filesize=len(media)
            )
            assert isinstance(upload, UploadResponse), upload
            await alice.room_send(
                room.room_id, "m.room.message", {"msgtype": "m.file", "body": "blob.bin", "url": upload.content_uri}
            )

            for reader, expected in ((bob, "hello bob"), (alice, "hello alice")):
                history = await reader.room_messages(room.room_id, start="", limit=20)
                assert isinstance(history, RoomMessagesResponse), history
                bodies = [getattr(e, "body", None) for e in history.chunk]
                assert expected in bodies

            server_name, media_id = upload.content_uri.removeprefix("mxc://").split("/", 1)
            async with session(address, ca, {"Authorization": f"Bearer {bob.access_token}"}) as s:
                url = f"{HOMESERVER}/_matrix/client/v1/media/download/{server_name}/{media_id}"
                async with s.get(url) as response:
                    assert response.status == 200
                    assert await response.read() == media
        finally:
            await alice.close()
            await bob.close()

    run(go)


def test_upload_above_the_limit_is_refused(deployment: Deployment, users: dict[str, tuple[str, str]]) -> None:
    limit_mb = int(deployment.config.get("maxUploadSizeMb", 50))

    async def go() -> int:
        client = matrix_client(HOMESERVER, "bob", deployment.edge_address, deployment.ca_file)
        try:
            await client.login(users["bob"][1])
            async with session(
                deployment.edge_address, deployment.ca_file, {"Authorization": f"Bearer {client.access_token}"}
            ) as s:
                data = io.BytesIO(b"x" * ((limit_mb + 1) * 1024 * 1024))
                async with s.post(
                    f"{HOMESERVER}/_matrix/media/v3/upload", data=data, headers={"Content-Type": "application/octet-stream"}
                ) as response:
                    return response.status
        finally:
            await client.close()

    assert run(go) == 413


@pytest.mark.parametrize("name", ["server", "client"])
def test_well_known_files_are_json_with_cors(deployment: Deployment, name: str) -> None:
    status, headers, body = run(
        lambda: http_get(deployment.url("apex", f"/.well-known/matrix/{name}"), deployment.edge_address, deployment.ca_file)
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers.get("Access-Control-Allow-Origin") == "*"
    document = json.loads(body)
    if name == "server":
        assert document == {"m.server": f"matrix.{DOMAIN}:443"}
    else:
        assert document["m.homeserver"]["base_url"] == HOMESERVER
        # Served as Element reads it: no fallback to turn.matrix.org's STUN server, ever.
        assert document["io.element.voip"] == {"disable_fallback_ice": True}


def test_element_is_served_with_its_config_and_headers(deployment: Deployment) -> None:
    address, ca = deployment.edge_address, deployment.ca_file
    status, headers, body = run(lambda: http_get(deployment.url("chat", "/"), address, ca))
    assert status == 200 and b"matrixchat" in body
    assert "no-cache" in headers.get("Cache-Control", "")
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert "frame-ancestors" in headers.get("Content-Security-Policy", "") or headers.get("X-Frame-Options")
    status, headers, body = run(lambda: http_get(deployment.url("chat", "/config.json"), address, ca))
    assert status == 200 and "no-cache" in headers.get("Cache-Control", "")
    config = json.loads(body)
    assert config["default_server_config"]["m.homeserver"]["base_url"] == HOMESERVER
    assert config["default_server_config"]["m.homeserver"]["server_name"] == DOMAIN
    # Calls: Element Call and Jitsi off (no MatrixRTC backend here yet), 1:1 legacy calls left on.
    assert config["element_call"] == {"disable": True}
    assert config["features"] == {"feature_group_calls": False, "feature_video_rooms": False,
                                  "feature_element_call_video_rooms": False}
    assert config["setting_defaults"]["UIFeature.widgets"] is False
    assert "UIFeature.voip" not in config["setting_defaults"] and "jitsi" not in config


def _served_element(deployment: Deployment) -> tuple[str, bytes]:
    """The release the symlink names, and the index page nginx serves for chat.<domain>."""
    link = deployment.ssh("readlink /var/www/element").strip()
    status, _, body = run(lambda: http_get(deployment.url("chat", "/"), deployment.edge_address, deployment.ca_file))
    assert status == 200
    return link, body


def test_the_default_element_release_is_served_after_its_signature_was_verified(deployment: Deployment) -> None:
    version = DEFAULTS["elementVersion"]
    link, body = _served_element(deployment)
    assert link == f"element-v{version}" and f"<title>Element {version}</title>".encode() in body
    (step,) = [r for r in deployment.provisioning if r.name == "element-web"]
    fingerprint = deployment.config["elementSigningFingerprint"]
    assert f"signature of element-v{version} verified: signed by {fingerprint}" in step.stderr


def test_a_tampered_element_upgrade_is_refused_and_the_running_release_keeps_serving(deployment: Deployment) -> None:
    before = _served_element(deployment)
    try:
        with pytest.raises(StepFailed) as failure:
            deployment.apply_changes(elementVersion=ELEMENT_TAMPERED)
        assert failure.value.result.name == "element-web"
        assert f"Element {ELEMENT_TAMPERED} NOT installed: BAD signature" in failure.value.result.stderr
        assert _served_element(deployment) == before
        assert f"element-v{ELEMENT_TAMPERED}" not in deployment.ssh("ls -A /var/www")
    finally:
        deployment.apply_changes(elementVersion=DEFAULTS["elementVersion"])
    assert _served_element(deployment) == before


def test_nginx_serves_exactly_our_sites(deployment: Deployment) -> None:
    """Debian's default site (which would answer any Host) is gone; only the three sites are enabled."""
    enabled = deployment.ssh("ls -1 /etc/nginx/sites-enabled").split()
    assert sorted(enabled) == sorted(nginx.SITE_NAMES)


def test_http_redirects_to_https(deployment: Deployment) -> None:
    status, headers, _ = run(lambda: _plain_http_get(deployment, f"chat.{DOMAIN}", "/"))
    assert status == 301 and headers["Location"].startswith(f"https://chat.{DOMAIN}")


async def _plain_http_get(deployment: Deployment, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    async with (
        session(deployment.edge_address, deployment.ca_file) as s,
        s.get(f"http://{host}{path}", allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def turn_credentials(deployment: Deployment, users: dict[str, tuple[str, str]]) -> dict[str, Any]:
    _, token = login(deployment, "bob", users["bob"][1])
    return turn_server(HOMESERVER, token, deployment.edge_address, deployment.ca_file)


def test_turn_credentials_allocate_a_relay(deployment: Deployment, users: dict[str, tuple[str, str]]) -> None:
    creds = turn_credentials(deployment, users)
    assert any(f"turn.{DOMAIN}" in uri for uri in creds["uris"])
    assert creds["username"] and creds["password"]
    relay = turn_relay(deployment.host.address, creds["username"], creds["password"])
    assert relay.returncode == 0, relay.output[-2000:]
    assert relay.lost == 0 and relay.send_dropped == 0, relay.output[-2000:]
    assert relay.sent > 0 and relay.received == relay.sent, relay.output[-2000:]


def test_self_check_fails_naming_synapse_when_it_is_down(deployment: Deployment) -> None:
    assert deployment.recording is not None
    deployment.ssh("systemctl stop matrix-synapse")
    try:
        with pytest.raises(StepFailed) as failure:
            run_all(deployment.recording, only={"selfcheck-verify"})
        assert "client" in str(failure.value).lower()
    finally:
        deployment.ssh(
            "systemctl start matrix-synapse; for _ in $(seq 90); do "
            "curl -fs http://127.0.0.1:8008/health >/dev/null && exit 0; sleep 1; done; exit 1"
        )
    run_all(deployment.recording, only={"selfcheck-verify"})  # healthy again once Synapse is back


def served_certificate(deployment: Deployment, port: int, server_name: str) -> bytes:
    """The DER certificate the origin presents on `port` for `server_name`, verified against pebble."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(deployment.origin_ca_file))
    with (
        socket.create_connection((deployment.host.address, port), timeout=15) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate
    return certificate


def test_forced_renewal_reaches_nginx_and_coturn(deployment: Deployment) -> None:
    before = {
        port: served_certificate(deployment, port, host) for port, host in ((443, f"matrix.{DOMAIN}"), (5349, f"turn.{DOMAIN}"))
    }
    assert before[443] == before[5349]
    deployment.ssh(f"certbot renew --force-renewal --no-random-sleep-on-renew --cert-name {DOMAIN} --quiet", timeout=300)
    after = {
        port: served_certificate(deployment, port, host) for port, host in ((443, f"matrix.{DOMAIN}"), (5349, f"turn.{DOMAIN}"))
    }
    live = deployment.ssh(f"openssl x509 -in /etc/letsencrypt/live/{DOMAIN}/cert.pem -outform DER | base64 -w0")
    import base64

    assert after[443] != before[443], "nginx still serves the old certificate"
    assert after[443] == after[5349] == base64.b64decode(live), "nginx and coturn must serve the renewed certificate"
