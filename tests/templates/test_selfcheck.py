"""Self-check: shellcheck, then the real script run in a throwaway network namespace.

1. Nothing listens on 127.0.0.1: the script must fail and name every broken thing.
2. A small stand-in answers on 127.0.0.1:443 and :5349 like a healthy server (Synapse, nginx,
   Element, coturn TLS): the script must pass; then each answer is broken in turn and the script
   must fail with exactly one message naming it. Requests presenting the origin-pull client
   certificate are the origin's (the script's local checks); requests without it are what the public
   path gets through "Cloudflare" (the names resolve to 127.0.0.1 in the namespace, and curl trusts
   the stand-in's certificate), so Cloudflare's own answers (526, a challenge) can be played too.
   The only changes to the rendered script are where the certificate, the admin credentials and the
   client certificate are read from, and a shorter public-path wait (assignments at its top).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import paths
from components.remote import bundle_text
from components.services import ServiceContext, admin, selfcheck
from tests.templates.conftest import (
    FAKE_SECRETS,
    ORIGIN_PULL_CA,
    ORIGIN_PULL_CLIENT,
    as_postgres,
    make_context,
    postgres_server,
)

CONFIGS = [{}, {"domain": "chat.example.net", "matrixSubdomain": "hs", "chatSubdomain": "web", "turnSubdomain": "t"}]
TOKEN = "syt_TOKENsecret0123456789"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    assert found, f"{name} is not installed: run tests/tools/install-deps.sh"
    return found


def script_of(ctx: ServiceContext) -> str:
    (spec,) = selfcheck.steps(ctx)
    assert spec.name == "selfcheck-verify" and not spec.files
    return spec.script


@pytest.mark.parametrize("config", CONFIGS)
def test_shellcheck_and_no_secrets(config: dict[str, str]) -> None:
    ctx = make_context(**config)
    (spec,) = selfcheck.steps(ctx)
    for secret in FAKE_SECRETS.values():
        assert secret.strip() not in spec.script
    result = subprocess.run(
        [tool("shellcheck"), "-s", "bash", "-"], input=bundle_text(spec, []), capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    s = ctx.settings
    assert f"cert={paths.CERT_LIVE_DIR}/{s.domain}/cert.pem\n" in spec.script
    assert f"admin_credentials={paths.ADMIN_CREDENTIALS}\n" in spec.script
    assert f"matrix_host={s.matrix_host}\n" in spec.script and f"turn_host={s.turn_host}\n" in spec.script


SYSTEMCTL = """#!/bin/bash
case "$1" in
  is-active) [ ! -e {dir}/timer-inactive ] ;;
  show) cat {dir}/backup-result 2>/dev/null || echo success ;;
  *) echo "unexpected: systemctl $*" >&2; exit 1 ;;
esac
"""


DATABASE_PORT = 54331
_database: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def _database_server() -> Iterator[None]:
    """A real PostgreSQL of this machine's release: the check asks it which version runs."""
    with postgres_server(DATABASE_PORT, {"conf.d/socket-only.conf": "listen_addresses = ''\n"}) as (data, sock):
        _database.update(data=data, sock=sock)
        yield
        _database.clear()


def database_sql(sql: str) -> str:
    result = as_postgres("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(_database["sock"]),
                         "-p", str(DATABASE_PORT), "-d", "postgres", "-c", sql)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_script(script: str, tmp: Path, server: str | None = None, extra_mount: bool = False,
               fill_percent: int = 0, before: str = "") -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The step's bundle (prelude + script), in its own network and mount namespace, optionally with
    the stand-in. A real filesystem (a loop device) stands in for the data volume, mounted once at a
    temporary mount point, or also at a second one with `extra_mount`, filled by a file in its
    backups directory to `fill_percent` % as df counts it. `before` runs in the namespace first, with
    the volume mounted. The check's psql reaches the module's real PostgreSQL (PGHOST, PGPORT)."""
    for name in ("unshare", "ip", "curl", "jq", "openssl", "python3", "losetup", "mkfs.xfs"):
        tool(name)
    (spec,) = selfcheck.steps(make_context())
    # A new image file for every run: a re-made filesystem in a file a loop device just released can
    # meet that device's stale cache ("Structure needs cleaning").
    for old_image in tmp.glob("volume-*.img"):
        old_image.unlink()
    image, data, other = tmp / f"volume-{secrets.token_hex(4)}.img", tmp / "data", tmp / "mnt-auto"
    with open(image, "wb") as f:
        f.truncate(320 * 1024 * 1024)
    subprocess.run(["mkfs.xfs", "-f", "-q", str(image)], check=True, timeout=60)
    data.mkdir(exist_ok=True)
    other.mkdir(exist_ok=True)
    shutil.rmtree(tmp / "steps", ignore_errors=True)  # a run again runs (no "already done" record)
    (tmp / "ready").unlink(missing_ok=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True).stdout.strip()
    script = re.sub(r"(?m)^volume_device=.*$", f"volume_device={loop}", script)
    script = script.replace(f"data_mount={paths.DATA_MOUNT}\n", f"data_mount={data}\n")
    pgbase = tmp / "pgbase"  # where the volume's postgresql/ is bound, as at /var/lib/postgresql
    pgbase.mkdir(exist_ok=True)
    script = script.replace(f"postgres_base={paths.POSTGRES_BASE}\n", f"postgres_base={pgbase}\n")
    client = tmp / "origin-pull-client.pem"
    client.write_text(ORIGIN_PULL_CLIENT)
    client.chmod(0o600)
    script = script.replace(f"origin_pull_client={paths.ORIGIN_PULL_CLIENT}\n", f"origin_pull_client={client}\n")
    script = re.sub(r"(?m)^public_wait=.*$", "public_wait=0", script)  # one try, no wait
    # The public path: every name resolves to the stand-in, whose certificate curl trusts.
    hosts = tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(make_context().settings.hostnames) + " "
                     + " ".join(make_context(**CONFIGS[1]).settings.hostnames) + "\n")
    mounts = f"mount --bind {hosts} /etc/hosts\nexport CURL_CA_BUNDLE={tmp}/cert.pem\n"
    mounts += f"mount {loop} {data}\nmkdir -p {data}/postgresql\nmount --bind {data}/postgresql {pgbase}\n"
    mounts += f"mount {loop} {other}\n" if extra_mount else ""
    mounts += f"export PGHOST={_database['sock']} PGPORT={DATABASE_PORT}\n{before}\n"
    if fill_percent:
        mounts += (f"read -r used avail < <(df -B1 --output=used,avail {data} | tail -n 1)\n"
                   f"mkdir -p {data}/backups && fallocate -l $(( (used + avail) * {fill_percent} / 100 - used + 1048576 ))"
                   f" {data}/backups/old-dumps\n")
    bundle = tmp / "bundle.sh"
    text = bundle_text(type(spec)(name=spec.name, script=script), [])
    # Record "step done" under tmp, not in this machine's /var/lib/matrix-stack.
    state = "MS_STATE_DIR=/var/lib/matrix-stack/steps\n"
    assert state in text
    bundle.write_text(text.replace(state, f"MS_STATE_DIR={tmp}/steps\n"))
    start, stop = "", ""
    if server:
        (tmp / "server.py").write_text(server)
        start = (
            f"python3 {tmp}/server.py > {tmp}/server.log 2>&1 & spid=$!\n"
            f"for _ in $(seq 300); do [ -e {tmp}/ready ] && break; sleep 0.1; done\n"
        )
        stop = "kill $spid\n"
    # systemd does not run in this namespace: a stand-in systemctl reports the backup units as the
    # test sets them (files in tmp); the real timer is checked on the end-to-end host.
    stubs = tmp / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "systemctl").write_text(SYSTEMCTL.format(dir=str(tmp)))
    (stubs / "systemctl").chmod(0o755)
    driver = f"ip link set lo up\n{mounts}export PATH={stubs}:$PATH\n{start}bash {bundle}; rc=$?\n{stop}exit $rc\n"
    try:
        return subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "bash", "-c", driver],
                              capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False, timeout=30)


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("SELF-CHECK FAILED: ")]


def test_fails_naming_everything_when_nothing_answers(tmp_path: Path) -> None:
    ctx = make_context()
    script = script_of(ctx).replace(
        f"admin_credentials={paths.ADMIN_CREDENTIALS}\n", f"admin_credentials={tmp_path}/absent.env\n"
    ).replace(f"cert={paths.CERT_LIVE_DIR}/{ctx.settings.domain}/cert.pem\n", f"cert={tmp_path}/absent.pem\n")
    (tmp_path / "timer-inactive").touch()
    result = run_script(script, tmp_path)
    assert result.returncode != 0
    lines = failures(result)
    expected = [
        "Matrix client API: https://matrix.example.org/_matrix/client/versions",
        "federation key endpoint: https://matrix.example.org/_matrix/key/v2/server",
        "well-known server: https://example.org/.well-known/matrix/server",
        "well-known client: https://example.org/.well-known/matrix/client",
        "Element config: https://chat.example.org/config.json",
        "Element Web: https://chat.example.org/",
        f"certificate: {tmp_path}/absent.pem is missing",
        f"TURN credentials: {tmp_path}/absent.env",
        "public path: client API: https://matrix.example.org/_matrix/client/versions nothing answered",
        "public path: federation keys: https://matrix.example.org/_matrix/key/v2/server nothing answered",
        "public path: well-known server: https://example.org/.well-known/matrix/server nothing answered",
        "public path: well-known client: https://example.org/.well-known/matrix/client nothing answered",
        "public path: Element config: https://chat.example.org/config.json nothing answered",
        "backups: matrix-stack-backup.timer is not active",
    ]
    assert len(lines) == len(expected), result.stderr
    for line, prefix in zip(lines, expected):
        assert line.startswith(f"SELF-CHECK FAILED: {prefix}"), line
    assert "self-check: 14 problem(s)" in result.stderr


# A stand-in that answers like the real server would; BREAK names the one thing it gets wrong.
SERVER = textwrap.dedent(
    """\
    import http.server, json, os, ssl, socket, threading, pathlib
    threading.Timer(100, lambda: os._exit(0)).start()  # never outlive the test
    DIR = pathlib.Path({dir!r}); BREAK = {brk!r}; D = {domain!r}; M = {matrix!r}; C = {chat!r}; T = {turn!r}
    PASSWORD = {password!r}; TOKEN = {token!r}; HS = "https://" + M; ORIGIN_PULL_CA = {origin_pull_ca!r}
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def send(self, code, body, ctype="application/json", headers=()):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code); self.send_header("Content-Type", ctype)
            for k, v in headers: self.send_header(k, v)
            self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
        def authed(self):
            return self.headers.get("Authorization") == "Bearer " + TOKEN
        def cloudflare(self):
            # A request without the origin-pull certificate came the public way: "Cloudflare" may
            # answer in the origin's place.
            if self.connection.getpeercert():
                return False
            if BREAK == "public-526":
                return self.send(526, "<html>Invalid SSL certificate</html>", "text/html") or True
            if BREAK == "public-challenge":
                return self.send(403, "<html>challenge-platform</html>", "text/html", [("cf-mitigated", "challenge")]) or True
            if BREAK == "public-no-origin-pull":
                return self.send(400, "<html>No required SSL certificate was sent</html>", "text/html") or True
            return False
        def do_GET(self):
            host, p = self.headers["Host"], self.path
            if self.cloudflare():
                return
            if host == M and p == "/_matrix/client/versions":
                return self.send(200, {{"versions": [] if BREAK == "versions" else ["v1.11"]}})
            if host == M and p == "/_matrix/key/v2/server":
                name = "other" if BREAK == "key" else D
                return self.send(200, {{"server_name": name, "verify_keys": {{"ed25519:a": {{}}}}}})
            if host == D and p == "/.well-known/matrix/server":
                ctype = "text/plain" if BREAK == "server-type" else "application/json"
                return self.send(200, {{"m.server": M + ":443"}}, ctype)
            if host == D and p == "/.well-known/matrix/client":
                cors = [] if BREAK == "cors" else [("Access-Control-Allow-Origin", "*")]
                return self.send(200, {{"m.homeserver": {{"base_url": HS}}}}, headers=cors)
            if host == C and p == "/config.json":
                url = "https://matrix.example.com" if BREAK == "element-config" else HS
                hs = {{"base_url": url, "server_name": D}}
                return self.send(200, {{"default_server_config": {{"m.homeserver": hs}}}})
            if host == C and p == "/":
                cc = "max-age=3600" if BREAK == "cache" else "no-cache"
                page = "<!doctype html><html><title>Element</title></html>"
                return self.send(200, page, "text/html", [("Cache-Control", cc)])
            if host == M and p == "/_matrix/client/v3/voip/turnServer" and not self.authed():
                return self.send(401, {{"errcode": "M_UNKNOWN_TOKEN"}})
            if host == M and p == "/_matrix/client/v3/voip/turnServer":
                uris = [] if BREAK == "turn" else ["turn:" + T + "?transport=udp", "turn:" + T + "?transport=tcp"]
                return self.send(200, {{"uris": uris, "username": "1:@admin:" + D, "password": "x", "ttl": 86400}})
            self.send(404, {{"errcode": "M_NOT_FOUND"}})
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{{}}")
            if self.headers["Host"] == M and self.path == "/_matrix/client/v3/login":
                # Synapse takes the localpart or the full user id
                ok = body.get("password") == PASSWORD and body["identifier"]["user"] in ("admin", "@admin:" + D)
                if ok and BREAK != "login":
                    with open(DIR / "logins", "a") as logins: logins.write("login\\n")
                    return self.send(200, {{"access_token": TOKEN, "user_id": "@admin:" + D}})
                return self.send(403, {{"errcode": "M_FORBIDDEN"}})
            sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?"
            if self.headers["Host"] == M and self.path.startswith(sliding) and BREAK != "sliding-sync":
                if not self.authed():
                    return self.send(401, {{"errcode": "M_UNKNOWN_TOKEN"}})
                return self.send(200, {{"pos": "1", "lists": {{}}, "rooms": {{}}, "extensions": {{}}}})
            self.send(404, {{"errcode": "M_NOT_FOUND"}})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(DIR / "cert.pem", DIR / "key.pem")
    ctx.verify_mode = ssl.CERT_OPTIONAL; ctx.load_verify_locations(cadata=ORIGIN_PULL_CA)
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 443), H)
    web.socket = ctx.wrap_socket(web.socket, server_side=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    turn = socket.socket(); turn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    turn.bind(("127.0.0.1", 5349)); turn.listen()
    def tls_only():
        while True:
            conn, _ = turn.accept()
            try:
                ctx.wrap_socket(conn, server_side=True).close()
            except Exception:
                conn.close()
    if BREAK != "turn-tls":
        threading.Thread(target=tls_only, daemon=True).start()
    (DIR / "ready").touch()
    threading.Event().wait()
    """
)

BREAKS = {
    "versions": "Matrix client API:",
    "key": "federation key endpoint:",
    "server-type": "well-known server:",
    "cors": "well-known client:",
    "element-config": "Element config:",
    "cache": "Element Web:",
    "turn-tls": "TURN TLS:",
    "login": "TURN credentials: admin login",
    "turn": "TURN credentials: /_matrix/client/v3/voip/turnServer",
    "sliding-sync": "sliding sync:",
    "backup-timer": "backups:",
}
# An origin answering wrong content is wrong through Cloudflare too: the public check names it as well.
PUBLIC_TOO = {"versions": "client API", "key": "federation keys", "element-config": "Element config"}
# Cloudflare answering in the origin's place: every public check names it (five of them).
PUBLIC_BREAKS = {
    "public-526": "Cloudflare answered 526: the origin's certificate is not valid for Full (strict)",
    "public-challenge": "Cloudflare answered a challenge (HTTP 403)",
    "public-no-origin-pull": "the origin refused Cloudflare's request: Cloudflare presents no origin-pull certificate",
}


def stand_in(ctx: ServiceContext, tmp: Path, brk: str) -> tuple[str, str]:
    """The script pointed at a test certificate and credentials file, and the stand-in's source."""
    s = ctx.settings
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={s.domain}",
         "-addext", "subjectAltName=" + ",".join(f"DNS:{h}" for h in s.hostnames),
         "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
        check=True, capture_output=True,
    )
    if brk == "backup-timer":
        (tmp / "timer-inactive").touch()
    password = FAKE_SECRETS["admin_password"]
    # The credentials file exactly as the admin step writes it on the server.
    (admin_step,) = admin.steps(ctx)
    creds = tmp / "admin.env"
    creds.write_text(next(str(f.content) for f in admin_step.files if f.path == paths.ADMIN_CREDENTIALS))
    creds.chmod(0o600)
    script = script_of(ctx).replace(
        f"admin_credentials={paths.ADMIN_CREDENTIALS}\n", f"admin_credentials={creds}\n"
    ).replace(f"cert={paths.CERT_LIVE_DIR}/{s.domain}/cert.pem\n", f"cert={tmp}/cert.pem\n")
    server = SERVER.format(
        dir=str(tmp), brk=brk, domain=s.domain, matrix=s.matrix_host, chat=s.chat_host, turn=s.turn_host,
        password=password, token=TOKEN, origin_pull_ca=ORIGIN_PULL_CA,
    )
    return script, server


@pytest.mark.parametrize("config", CONFIGS)
def test_passes_against_a_healthy_server(config: dict[str, str], tmp_path: Path) -> None:
    ctx = make_context(**config)
    script, server = stand_in(ctx, tmp_path, "")
    result = run_script(script, tmp_path, server)
    assert result.returncode == 0, result.stderr
    assert "self-check passed" in result.stderr
    for secret in (TOKEN, FAKE_SECRETS["admin_password"]):
        assert secret not in result.stdout + result.stderr


def logins(tmp: Path) -> int:
    return len((tmp / "logins").read_text().splitlines()) if (tmp / "logins").exists() else 0


def test_the_admin_session_is_kept_so_repeated_checks_do_not_hit_synapses_login_limit(tmp_path: Path) -> None:
    """Synapse allows an account 5 logins, then one per 333 s: ten `pulumi up`s in a row log in once."""
    script, server = stand_in(make_context(), tmp_path, "")
    for _ in range(3):
        result = run_script(script, tmp_path, server)
        assert result.returncode == 0, result.stderr
    assert logins(tmp_path) == 1
    token = tmp_path / "selfcheck-admin.token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip() == TOKEN


def test_a_token_synapse_no_longer_knows_is_replaced_by_a_new_login(tmp_path: Path) -> None:
    script, server = stand_in(make_context(), tmp_path, "")
    token = tmp_path / "selfcheck-admin.token"
    token.write_text("revoked-token\n")
    token.chmod(0o600)
    result = run_script(script, tmp_path, server)
    assert result.returncode == 0, result.stderr
    assert logins(tmp_path) == 1 and token.read_text().strip() == TOKEN


@pytest.mark.parametrize("brk", sorted(BREAKS))
def test_each_broken_thing_gets_one_message(brk: str, tmp_path: Path) -> None:
    ctx = make_context()
    script, server = stand_in(ctx, tmp_path, brk)
    result = run_script(script, tmp_path, server)
    assert result.returncode != 0
    lines = failures(result)
    expected = [BREAKS[brk]] + ([f"public path: {PUBLIC_TOO[brk]}:"] if brk in PUBLIC_TOO else [])
    assert len(lines) == len(expected), result.stderr
    for line, prefix in zip(lines, expected):
        assert line.startswith(f"SELF-CHECK FAILED: {prefix}"), result.stderr
    for secret in (TOKEN, FAKE_SECRETS["admin_password"]):
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("brk", sorted(PUBLIC_BREAKS))
def test_cloudflare_answering_in_the_origins_place_fails_every_public_check(brk: str, tmp_path: Path) -> None:
    """The origin is healthy (every local check passes); the public path gets Cloudflare's answer."""
    script, server = stand_in(make_context(), tmp_path, brk)
    result = run_script(script, tmp_path, server)
    assert result.returncode != 0
    lines = failures(result)
    # A challenge on Element's page is the user's choice (browsers pass it): a warning, not a failure.
    expected = 4 if brk == "public-challenge" else 5
    assert len(lines) == expected, result.stderr
    assert all(line.startswith("SELF-CHECK FAILED: public path: ") and PUBLIC_BREAKS[brk] in line for line in lines), lines
    element_failed = any("Element config" in line for line in lines)
    assert element_failed == (brk != "public-challenge"), lines
    if brk == "public-challenge":
        warning = "warning: public path: Element config: https://chat.example.org/config.json is behind a Cloudflare challenge"
        assert warning in result.stderr


def test_a_second_mount_of_the_data_volume_fails_the_check(tmp_path: Path) -> None:
    """DigitalOcean's own /mnt mount next to ours: the volume must be mounted exactly once."""
    script, server = stand_in(make_context(), tmp_path, "")
    result = run_script(script, tmp_path, server, extra_mount=True)
    assert result.returncode != 0
    lines = failures(result)
    assert lines == [f"SELF-CHECK FAILED: data volume: mounted at '{tmp_path}/data {tmp_path}/pgbase[/postgresql] "
                     f"{tmp_path}/mnt-auto', expected exactly once at {tmp_path}/data with its postgresql/ at "
                     f"{tmp_path}/pgbase"], result.stderr


def test_a_volume_filling_up_warns_at_80_percent_and_fails_at_95_naming_the_biggest_user(tmp_path: Path) -> None:
    script, server = stand_in(make_context(), tmp_path, "")
    healthy = run_script(script, tmp_path, server)
    assert healthy.returncode == 0 and "data volume:" not in healthy.stderr, healthy.stderr
    filling = run_script(script, tmp_path, server, fill_percent=selfcheck.DISK_WARN_PERCENT + 2)
    assert filling.returncode == 0, filling.stderr
    warning = re.search(r"warning: data volume: (\d+) % full \(biggest: ([^)]*)\): raise volumeSizeGb", filling.stderr)
    assert warning, filling.stderr
    assert selfcheck.DISK_WARN_PERCENT <= int(warning.group(1)) < selfcheck.DISK_FAIL_PERCENT
    assert warning.group(2).startswith(f"{tmp_path}/data/backups ")
    full = run_script(script, tmp_path, server, fill_percent=selfcheck.DISK_FAIL_PERCENT + 1)
    assert full.returncode != 0
    (line,) = failures(full)
    assert re.match(rf"SELF-CHECK FAILED: data volume: (9[5-9]|100) % full \(biggest: {tmp_path}/data/backups ", line), line


def test_a_failed_last_backup_is_reported_without_failing(tmp_path: Path) -> None:
    script, server = stand_in(make_context(), tmp_path, "")
    (tmp_path / "backup-result").write_text("exit-code\n")
    result = run_script(script, tmp_path, server)
    assert result.returncode == 0, result.stderr
    assert "WARNING: the last backup failed: journalctl -u matrix-stack-backup.service" in result.stderr


def _upgrade_marker(tmp: Path, system_identifier: str, tables: list[str]) -> str:
    """A command writing the marker an upgrade from PostgreSQL 14 leaves (the old cluster kept too)."""
    major = make_context().settings.platform.postgres_major
    body = (f"# matrix-stack: PostgreSQL 14 -> {major} upgrade, verified by row counts\n"
            "upgraded_at=2026-12-01T10:00:00Z\nold_cluster=/var/lib/postgresql/14/main\ndatabases=postgres \n"
            f"tables={len(tables)}\nrows=7\nsystem_identifier={system_identifier}\n"
            + "".join(f"{t} 7\n" for t in tables))
    (tmp / "marker").write_text(body)
    return (f"mkdir -p {tmp}/pgbase/{major} {tmp}/pgbase/14/main && echo 14 > {tmp}/pgbase/14/main/PG_VERSION\n"
            f"cp {tmp}/marker {tmp}/pgbase/{major}/matrix-stack-upgraded-from-14\n")


def test_an_upgraded_database_is_reported_with_its_verified_counts(tmp_path: Path) -> None:
    database_sql("CREATE TABLE IF NOT EXISTS kept (n int)")
    identifier = database_sql("SELECT system_identifier FROM pg_control_system()")
    script, server = stand_in(make_context(), tmp_path, "")
    result = run_script(script, tmp_path, server, before=_upgrade_marker(tmp_path, identifier, ["postgres.public.kept"]))
    assert result.returncode == 0, result.stderr
    assert "database: upgraded from PostgreSQL 14 at 2026-12-01T10:00:00Z: 1 tables, 7 rows verified equal, all present; " \
           "PostgreSQL 14's cluster is kept at" in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["another-cluster", "table-gone"])
def test_an_upgrade_the_running_database_does_not_match_fails(tmp_path: Path, case: str) -> None:
    database_sql("CREATE TABLE IF NOT EXISTS kept (n int)")
    identifier = database_sql("SELECT system_identifier FROM pg_control_system()")
    tables = ["postgres.public.kept"]
    if case == "another-cluster":
        identifier = str(int(identifier) + 1)
    else:
        tables.append("postgres.public.dropped_since")
    script, server = stand_in(make_context(), tmp_path, "")
    result = run_script(script, tmp_path, server, before=_upgrade_marker(tmp_path, identifier, tables))
    assert result.returncode != 0
    expected = ("the running PostgreSQL" if case == "another-cluster"
                else "1 table(s) copied in the upgrade from PostgreSQL 14 are gone")
    assert [line for line in failures(result) if "database:" in line] == [
        line for line in failures(result) if expected in line] != [], result.stderr
