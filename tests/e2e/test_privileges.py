"""Privilege boundaries on the server, proven by playing the attacker (issue 26).

Each test runs an attack as a service user on the shared host (`runuser -u <user>`, or inside the
service's own sandbox), then triggers what root does on its own (the step, the timer's command, the
certificate renewal's hook) and checks that root's files stayed root's and that nothing was written
outside. Targets are canaries the test makes (a root-owned script in /usr/local/sbin, a root-only
directory), so a successful attack changes only them; everything an attack planted is removed again.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from components import paths
from tests.attacks import LINK_RACER
from tests.e2e.clients import turn_relay
from tests.e2e.deployment import Deployment
from tests.e2e.runner import StepFailed, StepResult, run_all, ssh_command
from tests.e2e.test_security import admin_token, initial_results, turn_credentials  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

OLD_SIGNING_KEY = f"{paths.SYNAPSE_DATA}/signing.key"  # Synapse's own directory, where the key was


def as_user(deployment: Deployment, user: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """A shell script run as a service user (its uid and groups, no login), from /."""
    return deployment.host.ssh(f"cd / && runuser -u {shlex.quote(user)} -- bash -c {shlex.quote(script)}",
                               timeout=timeout)


def meta(deployment: Deployment, path: str) -> str:
    """Owner, group, mode, type and content hash of a path, not following a link."""
    return deployment.ssh(f"stat -c '%U:%G %a %F' {shlex.quote(path)}; "
                          f"if [ -f {shlex.quote(path)} ] && [ ! -L {shlex.quote(path)} ]; then "
                          f"sha256sum < {shlex.quote(path)}; fi").strip()


@contextlib.contextmanager
def canary(deployment: Deployment) -> Iterator[str]:
    """A root-owned script in /usr/local/sbin, like the backup command root's timer runs every night."""
    path = f"/usr/local/sbin/matrix-stack-canary-{secrets.token_hex(4)}"
    deployment.ssh(f"printf '#!/bin/sh\\necho root canary\\n' > {path} && chmod 0755 {path}")
    try:
        yield path
    finally:
        deployment.ssh(f"rm -f {path}")


def run_step(deployment: Deployment, name: str) -> StepResult | StepFailed:
    """One recorded step run again as `pulumi up` would, its failure returned rather than raised."""
    assert deployment.recording is not None
    try:
        (result,) = run_all(deployment.recording, only={name})
        return result
    except StepFailed as failed:
        return failed


def synapse_reconnected(deployment: Deployment) -> None:
    """After a step restarted PostgreSQL under it, Synapse's pooled connections are dead (its next request
    would fail once): restart it as an operator would, and wait until it answers again."""
    deployment.ssh(f"systemctl restart {paths.SYNAPSE_UNIT} && for _ in $(seq 60); do "
                   "[ \"$(curl -fsS http://127.0.0.1:8008/health 2>/dev/null)\" = OK ] && exit 0; sleep 1; done; exit 1")


def step_output(outcome: StepResult | StepFailed) -> str:
    if isinstance(outcome, StepFailed):
        return f"FAILED: {outcome}"
    return outcome.stdout + outcome.stderr


# ---------------------------------------------------------------------------------------------
# 1: Synapse's signing key


def test_synapse_cannot_get_the_dns_token_through_its_signing_key(deployment: Deployment) -> None:
    """Synapse replaces every signing key path it can write with a link to certbot's Cloudflare token;
    then `synapse-config` runs and the daily backup is taken. The token file stays root's 0600, no
    backup holds the token, the server keeps its key."""
    token_file = paths.CERTBOT_CREDENTIALS
    token = str(deployment.config["certbotCloudflareToken"])
    token_before, key_before = meta(deployment, token_file), meta(deployment, paths.SYNAPSE_SIGNING_KEY)
    planted = [OLD_SIGNING_KEY, paths.SYNAPSE_SIGNING_KEY]
    attack = "\n".join(
        f"if [ -e {p} ] || [ -L {p} ]; then mv -f {p} {p}.attacker 2>&1 || true; fi\n"
        f"ln -s {token_file} {p} 2>&1 && echo planted {p} || true" for p in planted)
    written = ""
    try:
        out = as_user(deployment, paths.SYNAPSE_USER, attack).stdout.decode()
        print(f"\n  as {paths.SYNAPSE_USER}: {out.strip()}")
        step = run_step(deployment, "synapse-config")
        print(f"  synapse-config after the attack: {step_output(step)[-300:]}")
        made = deployment.host.ssh(f"{paths.BACKUP_COMMAND} attack-signing-key")
        written = made.stdout.decode().strip().splitlines()[-1] if made.returncode == 0 else ""
        leaked = deployment.ssh(f"grep -rlF -- {shlex.quote(token)} {written} || true").strip() if written else ""
        token_after, key_after = meta(deployment, token_file), meta(deployment, paths.SYNAPSE_SIGNING_KEY)
        print(f"  {token_file}: {token_before} -> {token_after}; backup {written or 'failed'}: leaked {leaked or 'nothing'}")
        assert token_after == token_before, "Synapse got the DNS token file"
        assert not leaked, f"the backup copied the token: {leaked}"
        assert isinstance(step, StepResult), step_output(step)
        assert key_after == key_before
    finally:
        restore = "\n".join(f"[ -L {p} ] && rm -f {p}; [ -e {p}.attacker ] && mv -f {p}.attacker {p}; true"
                            for p in planted)
        deployment.ssh(f"{restore}\nchown -h root:root {token_file}; chmod 0600 {token_file}"
                       + (f"\nrm -rf {shlex.quote(written)}" if written else ""))


# ---------------------------------------------------------------------------------------------
# 2: postgres and coturn against root's file handling


def test_postgres_gets_no_root_file_through_a_copy_of_its_config(deployment: Deployment) -> None:
    """postgres (which owns /etc/postgresql) edits its pg_hba.conf so the step rewrites it, and plants a
    link where root used to keep the previous copy (`<file>.ms-previous`), pointing at a root script."""
    conf_dir = f"/etc/postgresql/{deployment.settings.platform.postgres_major}/main"
    with canary(deployment) as target:
        before = meta(deployment, target)
        attack = (f"echo '# postgres was here' >> {conf_dir}/pg_hba.conf && "
                  f"ln -s {target} {conf_dir}/pg_hba.conf.ms-previous && echo planted")
        try:
            print(f"\n  as postgres: {as_user(deployment, 'postgres', attack).stdout.decode().strip()}")
            step = run_step(deployment, "postgres-config")
            after = meta(deployment, target)
            print(f"  {target}: {before} -> {after}")
            assert after == before, "postgres got a root file"
            assert isinstance(step, StepResult), step_output(step)
            assert "postgres was here" not in deployment.ssh(f"cat {conf_dir}/pg_hba.conf")
        finally:
            deployment.ssh(f"rm -f {conf_dir}/pg_hba.conf.ms-previous")
            synapse_reconnected(deployment)


def test_postgres_cannot_redirect_roots_config_into_another_directory(deployment: Deployment) -> None:
    """postgres swaps its conf.d (where root's step writes matrix-stack.conf) for a link to a root
    directory (think /etc/ld.so.conf.d): the step refuses, and writes nothing there."""
    conf_dir = f"/etc/postgresql/{deployment.settings.platform.postgres_major}/main"
    target = f"/usr/local/lib/matrix-stack-canary-{secrets.token_hex(4)}"
    deployment.ssh(f"install -d -m 0755 {target}")
    attack = f"cd {conf_dir} && mv conf.d conf.d.real && ln -s {target} conf.d && echo swapped"
    try:
        print(f"\n  as postgres: {as_user(deployment, 'postgres', attack).stdout.decode().strip()}")
        step = run_step(deployment, "postgres-config")
        inside = deployment.ssh(f"ls -A {target}").split()
        print(f"  postgres-config: {step_output(step)[-200:]!r}; {target} holds {inside}")
        assert inside == [], f"root wrote {inside} into {target}"
        # The step carries secrets, so what its commands said is in its root-only log on the server.
        said = deployment.ssh("tail -n 5 /var/log/matrix-stack/postgres-config.log")
        assert isinstance(step, StepFailed) and "conf.d is a symbolic link" in said and "refused" in said, said
    finally:
        deployment.ssh(f"cd {conf_dir} && if [ -L conf.d ]; then rm conf.d && mv conf.d.real conf.d; fi; rm -rf {target}")
        run_step(deployment, "postgres-config")  # puts matrix-stack.conf back, restarts PostgreSQL if needed
        synapse_reconnected(deployment)



def test_coturn_gets_no_root_file_when_its_certificate_is_renewed(deployment: Deployment) -> None:
    """As turnserver, a racer swaps every new file in coturn's certificate directory for a link to a root
    script; then certbot renews the certificate for real (its deploy hook copies it for coturn), and the
    hook runs as certbot runs it twenty more times with coturn's copy removed each time."""
    lineage = f"{paths.CERT_LIVE_DIR}/{deployment.domain}"
    names = shlex.quote(" ".join(deployment.settings.hostnames))
    hook = f"RENEWED_LINEAGE={lineage} RENEWED_DOMAINS={names} {paths.CERT_DEPLOY_HOOK}"
    with canary(deployment) as target:
        before = meta(deployment, target)
        deployment.ssh("rm -f /run/ms-race-stop")
        racer = subprocess.Popen(
            [*ssh_command(deployment.host.address, deployment.key_file),
             f"cd / && runuser -u turnserver -- python3 -c {shlex.quote(LINK_RACER)} {paths.COTURN_TLS_DIR} {target} "
             "/run/ms-race-stop"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(1)
            started = time.monotonic()
            renewal = deployment.host.ssh(f"certbot renew --cert-name {deployment.domain} --force-renewal "
                                          "--no-random-sleep-on-renew", timeout=300)
            print(f"\n  certbot renew: exit {renewal.returncode} in {time.monotonic() - started:.1f} s")
            assert renewal.returncode == 0, renewal.stderr.decode()[-1500:]
            runs = 0
            while runs < 20 and meta(deployment, target) == before:
                runs += 1
                deployment.ssh(f"rm -f {paths.COTURN_TLS_DIR}/privkey.pem 2>/dev/null; {hook} >/dev/null 2>&1 || true")
        finally:
            deployment.ssh("touch /run/ms-race-stop")
            racer_out = racer.communicate(timeout=60)[0].decode()
            deployment.ssh("rm -f /run/ms-race-stop")
        after = meta(deployment, target)
        swaps = racer_out.count("swapped")
        print(f"  the racer swapped {swaps} names; {target}: {before} -> {after} after {runs} hook runs")
        try:
            assert after == before, "coturn got a root file"
            listing = deployment.ssh(f"stat -c '%n %U:%G %a %F' {paths.COTURN_TLS_DIR} {paths.COTURN_TLS_DIR}/*")
            assert f"{paths.COTURN_TLS_DIR} root:turnserver 750 directory" in listing, listing
            assert f"{paths.COTURN_TLS_DIR}/privkey.pem root:turnserver 640 regular file" in listing, listing
            assert deployment.ssh(f"cmp {lineage}/privkey.pem {paths.COTURN_TLS_DIR}/privkey.pem && echo same").strip() == "same"
        finally:
            deployment.ssh(f"find {paths.COTURN_TLS_DIR} -type l -delete 2>/dev/null; {hook} >/dev/null 2>&1 || true; "
                           "systemctl restart coturn")


# ---------------------------------------------------------------------------------------------
# 5: the metadata service (DigitalOcean serves the droplet's user data, the pinned host key's private half)


METADATA = "169.254.169.254"
# The stand-in's port: nginx's default server holds *:80 in the guest (the real service is on 80; the
# guard refuses the address whatever the port).
METADATA_PORT = 8169


@contextlib.contextmanager
def metadata_service(deployment: Deployment, marker: str) -> Iterator[None]:
    """A stand-in of DigitalOcean's metadata service in the guest (the test host has none): the user data
    at http://169.254.169.254:8169/metadata/v1/user-data, answered by a root-run server."""
    deployment.ssh(
        "systemctl stop ms-metadata 2>/dev/null; systemctl reset-failed ms-metadata 2>/dev/null; "
        f"ip addr replace {METADATA}/32 dev lo && install -d -m 0755 /run/ms-metadata/metadata/v1 && "
        f"printf '%s\\n' {marker} > /run/ms-metadata/metadata/v1/user-data && "
        f"systemd-run --unit=ms-metadata --quiet python3 -m http.server --bind {METADATA} {METADATA_PORT} "
        "--directory /run/ms-metadata && "
        f"for _ in $(seq 50); do curl -s --noproxy '*' -o /dev/null http://{METADATA}:{METADATA_PORT}/ && break; "
        "sleep 0.1; done")
    try:
        yield
    finally:
        deployment.ssh(f"systemctl stop ms-metadata; ip addr del {METADATA}/32 dev lo; rm -rf /run/ms-metadata")


SERVICE_USERS = (paths.SYNAPSE_USER, "turnserver", "postgres", "www-data", "nobody")


def test_no_service_user_reads_the_metadata_service(deployment: Deployment) -> None:
    marker = f"ssh_keys-ed25519_private-{secrets.token_hex(8)}"
    fetch = f"curl -sS --noproxy '*' --max-time 3 http://{METADATA}:{METADATA_PORT}/metadata/v1/user-data 2>&1 || true"
    with metadata_service(deployment, marker):
        as_root = deployment.ssh(fetch)
        seen = {user: as_user(deployment, user, fetch).stdout.decode().strip() for user in SERVICE_USERS}
    print(f"\n  root: {as_root.strip()!r}")
    for user, answer in seen.items():
        print(f"  {user}: {answer[:120]!r}")
    assert marker in as_root  # the stand-in answers: what follows is the firewall's doing
    got = [user for user, answer in seen.items() if marker in answer]
    assert not got, f"{got} read the droplet's user data"


# ---------------------------------------------------------------------------------------------
# 6: coturn, the one daemon the whole internet talks to, in a sandbox


def test_coturn_runs_sandboxed_and_still_relays(deployment: Deployment, admin_token: str) -> None:  # noqa: F811
    """What a shell in coturn's place gets: its mount namespace, its user, and the kernel's view of the
    process. It may write nowhere that outlives it or that root reads; and coturn still relays."""
    pid = deployment.ssh("systemctl show -P MainPID coturn.service").strip()
    assert pid.isdigit() and pid != "0"

    def status_of(process: str) -> dict[str, str]:
        return dict(line.split(":\t", 1) for line in deployment.ssh(f"cat /proc/{process}/status").splitlines()
                    if ":\t" in line)

    # The test host's container manager filters every process's syscalls already: coturn's own filter is
    # what it has beyond the container's init.
    status, init = status_of(pid), status_of("1")
    # Written in coturn's view and seen in root's: a write that outlives coturn or that root may read.
    writes = {}
    for target in ("/var/tmp", "/tmp", "/dev/shm", paths.COTURN_TLS_DIR, "/etc/coturn", "/var/lib/turn", "/root"):
        name = f"{target}/ms-coturn-was-here"
        probe = deployment.host.ssh(
            f"nsenter -t {pid} -m -- setpriv --reuid=turnserver --regid=turnserver --init-groups -- "
            f"sh -c 'touch {name} && echo wrote' 2>&1; test -e {name} && echo SEEN-BY-ROOT; rm -f {name}; "
            f"nsenter -t {pid} -m -- rm -f {name}")
        writes[target] = probe.stdout.decode().strip()[-120:]
    print(f"\n  coturn {pid}: NoNewPrivs {status['NoNewPrivs'].strip()}, seccomp filters {status['Seccomp_filters'].strip()} "
          f"(the container's init: {init['Seccomp_filters'].strip()}), CapBnd {status['CapBnd'].strip()}")
    for target, answer in writes.items():
        print(f"    write to {target}: {answer}")
    username, password = turn_credentials(deployment, admin_token, "sandboxed")
    relay = turn_relay(deployment.host.address, username, password)
    print(f"  relay through the sandboxed coturn: sent {relay.sent}, received {relay.received}, lost {relay.lost}")
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["Seccomp_filters"]) > int(init["Seccomp_filters"])
    assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0
    assert not [t for t, answer in writes.items() if "SEEN-BY-ROOT" in answer], writes
    assert relay.returncode == 0 and relay.sent > 0 and relay.received == relay.sent, relay.output[-1500:]


# ---------------------------------------------------------------------------------------------
# 12: the volume carries no setuid program and no device


def test_a_setuid_program_or_a_device_on_the_volume_gives_nothing(deployment: Deployment) -> None:
    """A volume adopted from elsewhere may carry a setuid-root program or a device node: the volume is
    mounted nosuid,nodev, so Synapse running one stays itself, and the device cannot be opened."""
    program, device = f"{paths.SYNAPSE_DATA}/ms-suid-id", f"{paths.SYNAPSE_DATA}/ms-device"
    options = deployment.ssh(f"findmnt -no OPTIONS {paths.DATA_MOUNT}; findmnt -no OPTIONS {paths.POSTGRES_BASE}")
    deployment.ssh(f"cp /usr/bin/id {program} && chmod 4755 {program} && mknod -m 0666 {device} c 1 3")
    try:
        ran = as_user(deployment, paths.SYNAPSE_USER, f"{program} -u; echo x > {device} && echo OPENED || true")
        out = ran.stdout.decode() + ran.stderr.decode()
    finally:
        deployment.ssh(f"rm -f {program} {device}")
    print(f"\n  mounts: {options.split()}; Synapse ran them: {out.strip()!r}")
    assert out.splitlines()[0].strip() != "0", "a setuid-root program on the volume ran as root"
    assert "OPENED" not in out
    for line in options.splitlines():
        assert {"nosuid", "nodev"} <= set(line.split(",")), line


# ---------------------------------------------------------------------------------------------
# 15: sshd takes keys only, whatever the image says


def test_ssh_offers_keys_only(deployment: Deployment) -> None:
    attempt = subprocess.run(
        ["ssh", "-p", "22", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "PreferredAuthentications=password,keyboard-interactive",
         "-o", "ConnectTimeout=10", f"root@{deployment.host.address}", "true"],
        capture_output=True, text=True, timeout=60)
    methods = re.search(r"Permission denied \(([^)]*)\)", attempt.stderr)
    effective = dict(line.split(" ", 1) for line in deployment.ssh("sshd -T").splitlines() if " " in line)
    print(f"\n  without a key: {attempt.stderr.strip().splitlines()[-1:]}; sshd -T: "
          f"{ {k: effective.get(k) for k in ('passwordauthentication', 'kbdinteractiveauthentication', 'permitrootlogin')} }")
    assert attempt.returncode != 0 and methods and methods.group(1) == "publickey", attempt.stderr
    assert effective.get("passwordauthentication") == "no"
    assert effective.get("kbdinteractiveauthentication") == "no"
    assert effective.get("permitrootlogin") in ("without-password", "prohibit-password")
