"""nginx sites: rendered for several configs and checked by the real nginx.

`nginx -t` runs on Debian's own /etc/nginx/nginx.conf with the EXACT rendered files at their exact
paths (sites-available + sites-enabled symlinks, conf.d, snippets) and a throwaway certificate at
the lineage path the sites name. The host is never touched: everything runs in a private mount
namespace (an overlay over /etc, tmpfs over /var/www, /run and nginx's log/state directories) and,
for the live test, a private network namespace where nginx really serves 80/443 on loopback in
front of a stand-in Synapse on 127.0.0.1:8008.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components import paths, worker_topology
from components.remote import StepSpec, bundle_text
from components.services import ServiceContext, element, health, nginx, rtc
from tests.pki import origin_pull_pair
from tests.templates.conftest import FAKE_SECRETS, make_context
from tests.templates.sandbox import run_bundles_in_sandbox

NGINX = "/usr/sbin/nginx"
REPO = Path(__file__).resolve().parents[2]

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "subdomains": {"matrixSubdomain": "hs", "chatSubdomain": "element", "turnSubdomain": "relay"},
    "upload-1": {"maxUploadSizeMb": 1},
    "upload-100": {"maxUploadSizeMb": 100, "enableRegistration": "true"},
    "other-domain": {"domain": "chat-server.example.net", "maxUploadSizeMb": 50, "enableRegistration": "false"},
    "workers": {"synapseWorkers": "true", "dropletSize": "s-2vcpu-4gb"},
    "matrix-rtc": {"matrixRtc": "true", "lkJwtServiceSha256": "ab" * 32},
}
WORKERS_CONFIG = CONFIGS["workers"]

# synapseWorkers: requests and the process Synapse's workers documentation sends each to (written
# out here, not derived from components/worker_topology.py, so a wrong table there fails).
ROUTES = [
    ("GET", "/_matrix/client/v3/sync?since=s1&timeout=30000", "sync1"),
    ("GET", "/_matrix/client/r0/sync", "sync1"),
    ("GET", "/_matrix/client/v3/rooms/%21r%3Aexample.org/initialSync", "sync1"),
    # Simplified sliding sync (Element X): a long-poll, on the sync worker as the anchors route it.
    ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1&timeout=30000", "sync1"),
    ("PUT", "/_matrix/client/v3/rooms/%21r%3Aexample.org/send/m.room.message/t%2F1", "client1"),
    ("GET", "/_matrix/client/v3/rooms/%21r%3Aexample.org/messages?dir=b", "client1"),
    ("POST", "/_matrix/client/v3/keys/upload", "client1"),
    ("POST", "/_matrix/client/v3/login", "client1"),
    ("GET", "/_matrix/client/versions", "client1"),
    ("PUT", "/_matrix/federation/v1/send/1700000000000", "client1"),
    ("GET", "/_matrix/federation/v1/version", "client1"),
    ("POST", "/_matrix/key/v2/query", "client1"),
    ("POST", "/_matrix/media/v3/upload", "media1"),
    ("GET", "/_matrix/client/v1/media/download/example.org/abcdef", "media1"),
    ("GET", "/_matrix/federation/v1/media/download/abcdef", "media1"),
    ("GET", "/_matrix/key/v2/server", "main"),
    ("PUT", "/_matrix/client/v3/pushrules/global/override/x", "main"),
    ("PUT", "/_matrix/client/v3/sendToDevice/m.test/1", "main"),
    ("PUT", "/_matrix/client/v3/rooms/%21r%3Aexample.org/typing/%40a%3Aexample.org", "main"),
    ("GET", "/_synapse/client/new_user_consent", "main"),
]
BACKEND_PORTS = {"main": 8008, "sync1": 8083, "client1": 8084, "media1": 8085}


def _step(ctx: ServiceContext) -> StepSpec:
    (step,) = nginx.steps(ctx)
    return step


def _files(ctx: ServiceContext) -> dict[str, str]:
    out = {}
    for f in _step(ctx).files:
        assert isinstance(f.content, str)
        out[f.path] = f.content
    return out


def _site(ctx: ServiceContext, name: str) -> str:
    return _files(ctx)[f"{nginx.SITES_AVAILABLE}/matrix-stack-{name}"]


def _servers(text: str) -> list[str]:
    """Top-level `server { ... }` blocks (brace matching; templates put no braces in strings), not
    the `map` and `upstream` blocks of synapseWorkers."""
    blocks, depth, start, keyword = [], 0, 0, ""
    for m in re.finditer(r"[{}]", text):
        if m.group() == "{":
            if depth == 0:
                start = m.start()
                keyword = text[: m.start()].split("\n")[-1].split()[0]
            depth += 1
        else:
            depth -= 1
            if depth == 0 and keyword == "server":
                blocks.append(text[start : m.end()])
    return blocks


def _locations(server: str) -> dict[str, str]:
    """Each `location SELECTOR { ... }` of a server by its selector, the body up to its own closing brace
    (an `if` block inside it included)."""
    found = {}
    for m in re.finditer(r"location\s+([^{]+)\{", server):
        depth, end = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(server[end], 0)
            end += 1
        found[m.group(1).strip()] = server[m.end():end - 1]
    return found


# ------------------------------------------------------------------------------------------
# The sandbox: a throwaway certificate, the files staged at their exact paths, nginx in namespaces.


def _throwaway_cert(names: list[str]) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _stage(tmp: Path, ctx: ServiceContext, extra: dict[str, str] | None = None) -> Path:
    stage = tmp / "stage"
    for path, content in {**_files(ctx), **(extra or {})}.items():
        target = stage / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    s = ctx.settings
    cert, key = _throwaway_cert(list(s.hostnames))
    live = stage / paths.CERT_LIVE_DIR.lstrip("/") / s.domain
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_text(cert)
    (live / "privkey.pem").write_text(key)
    (live / "privkey.pem").chmod(0o600)
    return stage


def _sandbox(tmp: Path, stage: Path, mode: str, hosts: list[str]) -> dict[str, Any]:
    """Run this file's `__main__` part inside fresh mount + network namespaces; returns its JSON."""
    for tool in (NGINX, "/usr/bin/unshare"):
        assert os.access(tool, os.X_OK), f"{tool} is required (tests/tools/install-deps.sh)"
    assert os.geteuid() == 0, "the nginx sandbox needs root (mount namespaces)"
    scratch = tmp / "ns"
    scratch.mkdir()
    cmd = [
        "unshare", "--mount", "--net", "--propagation", "private", "--",
        sys.executable, __file__, "--sandbox", str(stage), str(scratch), mode, ",".join(hosts),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, f"sandbox failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _nginx_t(tmp: Path, ctx: ServiceContext, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return _sandbox(tmp, _stage(tmp, ctx, extra), "test", list(ctx.settings.hostnames))


# ------------------------------------------------------------------------------------------
# Real nginx -t


@pytest.mark.parametrize("name", list(CONFIGS))
def test_nginx_accepts_the_rendered_sites(tmp_path: Path, name: str) -> None:
    ctx = make_context(**CONFIGS[name])
    result = _nginx_t(tmp_path, ctx)
    assert result["rc"] == 0, result["output"]
    assert "syntax is ok" in result["output"] and "test is successful" in result["output"]
    # Debian's default site is gone, ours are enabled.
    assert result["enabled"] == sorted(nginx.SITE_NAMES)


def test_nginx_t_in_the_sandbox_really_rejects_a_broken_site(tmp_path: Path) -> None:
    """Control: the sandbox runs the real check on our files (a bad directive fails it)."""
    ctx = make_context()
    path = f"{nginx.SITES_AVAILABLE}/matrix-stack-matrix"
    broken = _files(ctx)[path].replace("proxy_http_version 1.1;", "proxy_http_version 1.1; no_such_directive on;")
    result = _nginx_t(tmp_path, ctx, {path: broken})
    assert result["rc"] != 0 and "no_such_directive" in result["output"]


def test_nginx_t_fails_without_the_certificate_lineage(tmp_path: Path) -> None:
    """Control: the certificate path in the sites is the one certbot creates for the apex."""
    ctx = make_context()
    stage = _stage(tmp_path, ctx)
    shutil.rmtree(stage / paths.CERT_LIVE_DIR.lstrip("/") / ctx.settings.domain)
    result = _sandbox(tmp_path, stage, "test", list(ctx.settings.hostnames))
    assert result["rc"] != 0 and f"{paths.CERT_LIVE_DIR}/{ctx.settings.domain}/fullchain.pem" in result["output"]


# ------------------------------------------------------------------------------------------
# Semantics


@pytest.mark.parametrize("mb", [1, 50, 100])
def test_client_max_body_size_equals_the_upload_setting(mb: int) -> None:
    ctx = make_context(maxUploadSizeMb=mb)
    assert ctx.settings.max_upload_size_mb == mb
    every = [(p, v) for p, c in _files(ctx).items() for v in re.findall(r"client_max_body_size\s+([^;]+);", c)]
    assert every == [(f"{nginx.SITES_AVAILABLE}/matrix-stack-matrix", f"{mb}M")]


def test_matrix_site_proxies_only_the_client_and_federation_apis() -> None:
    ctx = make_context()
    https = [s for s in _servers(_site(ctx, "matrix")) if "listen 443" in s]
    assert len(https) == 1
    locations = _locations(https[0])
    proxied = {k: v for k, v in locations.items() if "proxy_pass" in v}
    assert len(proxied) == 1
    ((selector, body),) = proxied.items()
    # No URI part after the upstream's name (not even "/"), so nginx passes the raw request URI; the
    # upstream is Synapse's listener, with idle connections kept for the next request.
    assert re.findall(r"proxy_pass\s+([^;]+);", body) == [f"http://{worker_topology.MAIN_UPSTREAM}"]
    upstream = re.search(r"upstream\s+" + worker_topology.MAIN_UPSTREAM + r"\s*\{([^}]*)\}", _site(ctx, "matrix"))
    assert upstream and re.findall(r"server\s+([^;]+);", upstream.group(1)) == [
        f"{paths.SYNAPSE_LISTEN[0]}:{paths.SYNAPSE_LISTEN[1]}"]
    assert 'proxy_set_header Connection "";' in body
    for header in ("X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme", "Host $host"):
        assert f"proxy_set_header {header};" in body
    assert "proxy_http_version 1.1;" in body
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", body)
    assert timeout and int(timeout.group(1)) >= 90  # /sync long-polls
    kind, regex = selector.split(None, 1)
    assert kind == "~"
    matcher = re.compile(regex)
    for uri in ("/_matrix/client/versions", "/_matrix/federation/v1/version", "/_matrix/key/v2/server",
                "/_matrix/media/v3/upload", "/_synapse/client/pick_idp"):  # fmt: skip
        assert matcher.search(uri), uri
    for uri in ("/_synapse/admin/v1/users/@a:example.org", "/_synapse/metrics", "/", "/health", "/x/_matrix"):
        assert not matcher.search(uri), uri
    assert locations["/"].split() == ["return", "404;"]


def test_well_known_files_parse_and_name_the_right_hosts() -> None:
    for config in CONFIGS.values():
        ctx = make_context(**config)
        s = ctx.settings
        files = _files(ctx)
        base = f"{paths.APEX_ROOT}/.well-known/matrix"
        assert json.loads(files[f"{base}/server"]) == {"m.server": f"{s.matrix_host}:443"}
        client = json.loads(files[f"{base}/client"])
        client.pop("org.matrix.msc4143.rtc_foci", None)  # matrixRtc: its own test below
        assert client == {
            "m.homeserver": {"base_url": f"https://{s.matrix_host}"},
            # Element may never fall back to turn.matrix.org's STUN, whatever a user's device setting says.
            "io.element.voip": {"disable_fallback_ice": True},
        }
        apex = next(x for x in _servers(_site(ctx, "apex")) if "listen 443" in x)
        assert re.search(rf"root\s+\"{re.escape(paths.APEX_ROOT)}\";", apex)
        locations = _locations(apex)
        for name in ("server", "client"):
            body = locations[f"= /.well-known/matrix/{name}"]
            assert "default_type application/json;" in body
            assert 'add_header Access-Control-Allow-Origin "*" always;' in body
        assert locations["/"].split() == ["return", "404;"]


def test_every_cloudflare_range_is_trusted_for_the_real_ip_and_nothing_else() -> None:
    v4 = ["173.245.48.0/20", "103.21.244.0/22", "104.16.0.0/13", "162.158.0.0/15"]
    v6 = ["2400:cb00::/32", "2606:4700::/32", "2a06:98c0::/29"]
    ctx = dataclasses.replace(make_context(), cloudflare_ipv4=v4, cloudflare_ipv6=v6)
    conf = _files(ctx)[nginx.HTTP_CONF]
    assert re.findall(r"^set_real_ip_from\s+(\S+);", conf, re.M) == v4 + v6
    assert re.findall(r"^real_ip_header\s+(\S+);", conf, re.M) == ["CF-Connecting-IP"]
    assert re.search(r"^server_tokens off;", conf, re.M)
    # Nowhere else may a client address be trusted.
    others = "".join(c for p, c in _files(ctx).items() if p != nginx.HTTP_CONF)
    assert "set_real_ip_from" not in others and "real_ip_header" not in others


@pytest.mark.parametrize("bad", [["not-a-cidr"], ["10.0.0.1/8"], ["1.2.3.0/24; include /etc/passwd"]])
def test_bad_cloudflare_ranges_are_refused(bad: list[str]) -> None:
    ctx = dataclasses.replace(make_context(), cloudflare_ipv4=bad)
    with pytest.raises(ValueError):
        nginx.steps(ctx)


def test_no_cloudflare_ranges_is_refused() -> None:
    ctx = dataclasses.replace(make_context(), cloudflare_ipv4=[], cloudflare_ipv6=[])
    with pytest.raises(ValueError):
        nginx.steps(ctx)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_site_is_https_with_the_lineage_and_redirects_http(name: str) -> None:
    ctx = make_context(**CONFIGS[name])
    s = ctx.settings
    files = _files(ctx)
    tls = files[f"{nginx.SNIPPETS}/matrix-stack-tls.conf"]
    assert f'ssl_certificate "{paths.CERT_LIVE_DIR}/{s.domain}/fullchain.pem";' in tls
    assert f'ssl_certificate_key "{paths.CERT_LIVE_DIR}/{s.domain}/privkey.pem";' in tls
    assert re.search(r"^ssl_protocols TLSv1\.2 TLSv1\.3;$", tls, re.M)
    for site, host in (("apex", s.domain), ("chat", s.chat_host), ("matrix", s.matrix_host)):
        plain, secure = _servers(_site(ctx, site))
        assert re.findall(r"listen\s+([^;]+);", plain) == ["80", "[::]:80"]
        assert f'server_name "{host}";' in plain and "return 301 https://$server_name$request_uri;" in plain
        assert re.findall(r"listen\s+([^;]+);", secure) == ["443 ssl http2", "[::]:443 ssl http2"]
        assert f'server_name "{host}";' in secure
        assert "include /etc/nginx/snippets/matrix-stack-tls.conf;" in secure


def test_element_site_headers_survive_add_header_inheritance() -> None:
    """A location with its own add_header loses the server's: each must include the snippet again."""
    ctx = make_context()
    files = _files(ctx)
    headers = files[f"{nginx.SNIPPETS}/matrix-stack-element-headers.conf"]
    base = files[f"{nginx.SNIPPETS}/matrix-stack-headers.conf"]
    for needed in ('X-Frame-Options "SAMEORIGIN"', 'X-Content-Type-Options "nosniff"', "Referrer-Policy",
                   "Content-Security-Policy \"frame-ancestors 'self'\"", "Strict-Transport-Security"):  # fmt: skip
        assert needed in headers + base
    assert "include /etc/nginx/snippets/matrix-stack-headers.conf;" in headers
    secure = next(x for x in _servers(_site(ctx, "chat")) if "listen 443" in x)
    assert re.search(rf"root\s+\"{re.escape(paths.ELEMENT_LINK)}\";", secure)
    server_level = re.sub(r"location\s+[^{]+\{[^}]*\}", "", secure)
    assert "include /etc/nginx/snippets/matrix-stack-element-headers.conf;" in server_level
    locations = _locations(secure)
    no_cache = {k for k, v in locations.items() if 'add_header Cache-Control "no-cache" always;' in v}
    assert no_cache == {"= /index.html", "= /version", r"~ ^/config[^/]*\.json$", "/i18n/"}
    for selector, body in locations.items():
        if "add_header" in body:
            assert "include /etc/nginx/snippets/matrix-stack-element-headers.conf;" in body, selector
    assert "try_files $uri $uri/ =404;" in locations["/"]  # no SPA fallback: config.<host>.json must 404


# Reloading (never restarting) nginx on a change, and not at all without one, is behaviour checked on
# the real host (tests/e2e/test_lifecycle.py: same master PID, new workers; idempotency), as is the
# set of enabled sites (tests/e2e/test_deployment.py); a rejected site is put back by ms_validated
# (test_prelude.py).


def test_no_secret_in_files_or_script_but_the_origin_pull_client_in_a_root_only_file() -> None:
    step = _step(make_context())
    for secret in FAKE_SECRETS.values():
        assert secret.strip() not in step.script
        assert all(secret.strip() not in str(f.content) for f in step.files)
    private = [f for f in step.files if "PRIVATE KEY" in str(f.content)]
    assert [(f.path, f.mode, f.owner) for f in private] == [(paths.ORIGIN_PULL_CLIENT, "0600", "root")]
    # The status page's location holds its token (read by nginx's master, as root).
    (location,) = [f for f in step.files if f.path == health.NGINX_LOCATION]
    assert (location.mode, location.owner) == ("0600", "root")
    assert all(f.mode == "0644" and f.owner == "root" for f in step.files if f not in private and f is not location)


# ------------------------------------------------------------------------------------------
# Live: nginx really serving the rendered sites in a network namespace


STRANGER_CLIENT = "/etc/matrix-stack/stranger-client.pem"
UNKNOWN_NAME = "unknown.example.net"  # a name this origin does not serve (resolves to it in the sandbox)


def _live(tmp: Path, ctx: ServiceContext) -> dict[str, Any]:
    release = f"element-v{ctx.settings.element_version}"
    element_files = {
        f"{paths.ELEMENT_ROOT}/{release}/index.html": "<html>element</html>\n",
        f"{paths.ELEMENT_ROOT}/{release}/config.json": element.config_json(ctx),
        f"{paths.ELEMENT_ROOT}/{release}/version": ctx.settings.element_version + "\n",
        f"{paths.ELEMENT_ROOT}/{release}/i18n/en_EN.json": "{}\n",
        f"{paths.ELEMENT_ROOT}/{release}/bundles/app.js": "console.log(1)\n",
    }
    # A client certificate of another CA: any other Cloudflare zone pulling from this origin.
    stranger = {STRANGER_CLIENT: origin_pull_pair("another Cloudflare customer")[1]}
    stage = _stage(tmp, ctx, {**element_files, **stranger})
    (stage / paths.ELEMENT_LINK.lstrip("/")).symlink_to(release)
    return _sandbox(tmp, stage, "live", list(ctx.settings.hostnames))


def test_live_nginx_serves_the_sites_as_intended(tmp_path: Path) -> None:
    # 127.0.0.0/8 plays Cloudflare here, so CF-Connecting-IP from loopback is trusted.
    ctx = dataclasses.replace(make_context(maxUploadSizeMb=1), cloudflare_ipv4=["127.0.0.0/8"])
    s = ctx.settings
    r = _live(tmp_path, ctx)
    assert r["rc"] == 0, r["output"]
    res = r["responses"]

    client = res["client"]
    assert client["status"] == 200 and client["headers"]["content-type"] == "application/json"
    assert client["headers"]["access-control-allow-origin"] == "*"
    assert "max-age" in client["headers"]["strict-transport-security"]
    assert json.loads(client["body"])["m.homeserver"]["base_url"] == f"https://{s.matrix_host}"
    assert json.loads(res["server"]["body"]) == {"m.server": f"{s.matrix_host}:443"}
    assert res["server"]["headers"]["content-type"] == "application/json"
    assert res["apex-other"]["status"] == 404
    assert "nginx/" not in res["apex-other"]["headers"].get("server", "")  # server_tokens off

    assert res["http"]["status"] == 301 and res["http"]["headers"]["location"] == f"https://{s.matrix_host}/x?y=1"

    # Raw URI passed through; real IP from CF-Connecting-IP; admin API never reaches Synapse.
    seen = r["backend"]
    assert res["versions"]["status"] == 200
    first = seen[0]
    assert first["path"] == "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/t%2F1"
    assert first["headers"]["x-forwarded-for"] == "198.51.100.23"
    assert first["headers"]["x-forwarded-proto"] == "https"
    assert first["headers"]["host"] == s.matrix_host
    assert res["admin"]["status"] == 404
    assert not any(x["path"].startswith("/_synapse/admin") for x in seen)
    assert res["upload-small"]["status"] == 200 and res["upload-big"]["status"] == 413

    index = res["chat-index"]
    assert index["status"] == 200 and index["headers"]["cache-control"] == "no-cache"
    assert index["headers"]["x-frame-options"] == "SAMEORIGIN"
    assert index["headers"]["content-security-policy"] == "frame-ancestors 'self'"
    config = res["chat-config"]
    assert config["status"] == 200 and config["headers"]["cache-control"] == "no-cache"
    assert config["headers"]["x-content-type-options"] == "nosniff"
    assert json.loads(config["body"])["default_server_config"]["m.homeserver"]["server_name"] == s.domain
    assert res["chat-host-config"]["status"] == 404  # Element falls back to config.json
    assert res["chat-version"]["headers"]["cache-control"] == "no-cache"
    assert res["chat-i18n"]["headers"]["cache-control"] == "no-cache"
    bundle = res["chat-bundle"]
    assert bundle["status"] == 200 and "cache-control" not in bundle["headers"]
    assert bundle["headers"]["x-frame-options"] == "SAMEORIGIN" and "strict-transport-security" in bundle["headers"]

    # Encoded dot-segments into the admin API: refused by nginx, never passed on (the raw URI must start
    # with /_matrix/ or /_synapse/client/).
    for name in ENCODED_PATHS:
        assert res[f"encoded-{name}"]["status"] == 404, (name, res[f"encoded-{name}"])
    assert not [x["path"] for x in seen if not x["path"].startswith(("/_matrix/", "/_synapse/client/"))]

    # No log holds a query string: the access log has the paths only, the error log (which names whole
    # request lines) is in root's directory.
    assert res["token-upstream-failed"]["status"] == 502
    logs = r["logs"]
    access = logs[nginx.ACCESS_LOG]["text"]
    assert "/_matrix/client/v3/sync HTTP/" in access and access.count("/_matrix/client/v3/sync") >= 4
    assert [p for p, log in logs.items() if LOGGED_TOKEN in log["text"] and p != nginx.ERROR_LOG] == []
    assert LOGGED_TOKEN in logs[nginx.ERROR_LOG]["text"] and logs[nginx.ERROR_LOG]["mode"] == "0o700"

    # The delegation files are on the homeserver's name too (the redirect beside a website lands there).
    matrix_well_known = res["matrix-well-known"]
    assert matrix_well_known["status"] == 200 and json.loads(matrix_well_known["body"]) == {"m.server": f"{s.matrix_host}:443"}
    assert matrix_well_known["headers"]["access-control-allow-origin"] == "*"


def test_live_nginx_routes_each_path_to_its_worker(tmp_path: Path) -> None:
    """synapseWorkers: the real nginx, in front of one stand-in per Synapse process, sends each request
    where Synapse's docs say, with the raw URI (federation signatures), and logs which process answered."""
    ctx = make_context(**WORKERS_CONFIG)
    r = _sandbox(tmp_path, _stage(tmp_path, ctx), "routing", list(ctx.settings.hostnames))
    assert r["rc"] == 0, r["output"]
    got = {(method, path): port for method, path, port in r["answered_by"]}
    assert got == {(method, path): BACKEND_PORTS[name] for method, path, name in ROUTES}
    assert [path for _, path in r["raw_paths"]] == [path for _, path, _ in ROUTES]
    # The upstream log: one line per request, the path without its query string, the process's address.
    log = r["upstream_log"]
    assert len(log) == len(ROUTES)
    for line, (method, path, name) in zip(log, ROUTES):
        fields = line.split()
        assert fields[1:3] == [method, path.split("?")[0].replace("%21", "!").replace("%3A", ":")
                               .replace("%2F", "/").replace("%40", "@")], line
        assert fields[4] == f"127.0.0.1:{BACKEND_PORTS[name]}", line
        assert "since=" not in line


def test_live_nginx_answers_only_this_zones_cloudflare_for_its_own_names(tmp_path: Path) -> None:
    """Authenticated Origin Pulls: without the client certificate, or with one of another CA (another
    Cloudflare customer's zone), nginx refuses (400) and Synapse sees nothing; a name nginx does not
    serve gets no TLS handshake and no HTTP answer."""
    r = _live(tmp_path, make_context())
    assert r["rc"] == 0, r["output"]
    res = r["responses"]
    assert res["no-client-cert"]["status"] == 400 and "certificate" in res["no-client-cert"]["body"].lower()
    assert res["stranger-cert"]["status"] == 400
    assert res["unknown-name"]["status"] == "tls-refused"
    assert res["unknown-name-http"]["status"] == "closed-without-answer"
    assert res["versions"]["status"] == 200  # the same origin, with the client certificate
    assert not [x for x in r["backend"] if x["path"] == "/_matrix/client/versions"], "a refused request reached Synapse"


def test_live_nginx_keeps_connections_to_synapse_open(tmp_path: Path) -> None:
    """Upstream keep-alive (docs/benchmarks.md: Tuning at 1 CPU): nginx asks Synapse without "Connection: close" and
    sends later requests over a connection it already has, so Synapse sees fewer connections than requests
    (each nginx worker keeps its own; there are fewer workers than probes)."""
    r = _live(tmp_path, make_context())
    assert r["rc"] == 0, r["output"]
    probes = [x for x in r["backend"] if x["path"] == "/_matrix/client/v3/capabilities"]
    assert len(probes) == KEEPALIVE_PROBES and all(r["responses"][f"probe-{i}"]["status"] == 200
                                                   for i in range(KEEPALIVE_PROBES))
    proxied = r["backend"]
    assert [x["headers"].get("connection") for x in proxied] == [None] * len(proxied)
    assert len({x["headers"][":peer"] for x in proxied}) < len(proxied), "every request opened a new connection"


def test_live_nginx_ignores_cf_connecting_ip_from_other_sources(tmp_path: Path) -> None:
    r = _live(tmp_path, make_context())  # loopback is not a Cloudflare range here
    assert r["rc"] == 0, r["output"]
    assert r["backend"][0]["headers"]["x-forwarded-for"] == "127.0.0.1"


# ------------------------------------------------------------------------------------------
# Runs inside the namespaces (python test_nginx.py --sandbox STAGE SCRATCH MODE HOSTS).


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _isolate(scratch: Path) -> None:
    _mount("-t", "tmpfs", "tmpfs", str(scratch))
    (scratch / "upper").mkdir()
    (scratch / "work").mkdir()
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work", "/etc")
    for path in ("/var/www", "/run", "/var/log/nginx", "/var/lib/nginx"):
        if not os.path.isdir(path):
            raise SystemExit(f"{path} is missing on this machine; the sandbox will not create it on the host")
        _mount("-t", "tmpfs", "tmpfs", path)
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    mounts = {line.split()[4]: line.split(" - ")[1].split()[0] for line in mountinfo}
    if mounts.get("/etc") != "overlay" or mounts.get("/var/www") != "tmpfs":
        raise SystemExit("refusing to continue: the sandbox mounts are not in place")


def test_live_nginx_routes_matrix_rtc_and_answers_the_preflight(tmp_path: Path) -> None:
    """matrixRtc: the real nginx sends the token service's paths there without the prefix, with one set of CORS
    headers, answers the browser's preflight itself, and tunnels the SFU's WebSocket (101, then bytes both ways)."""
    ctx = make_context(**CONFIGS["matrix-rtc"])
    r = _sandbox(tmp_path, _stage(tmp_path, ctx), "rtc", list(ctx.settings.hostnames))
    assert r["rc"] == 0, r["output"]
    res = r["responses"]
    assert res["sfu-get"]["status"] == 200 and json.loads(res["sfu-get"]["body"]) == {"path": "/sfu/get"}
    assert res["get-token"]["status"] == 200 and json.loads(res["get-token"]["body"]) == {"path": "/get_token"}
    # One Access-Control-Allow-Origin although the service sends its own (a browser refuses two).
    assert res["sfu-get"]["headers"]["access-control-allow-origin"] == "*"
    assert res["sfu-get"]["header_names"].count("access-control-allow-origin") == 1
    preflight = res["preflight"]
    assert preflight["status"] == 204
    assert preflight["headers"]["access-control-allow-origin"] == "*"
    assert "POST" in preflight["headers"]["access-control-allow-methods"]
    assert "content-type" in preflight["headers"]["access-control-allow-headers"].lower()
    assert r["token_seen"] == [["POST", "/sfu/get"], ["POST", "/get_token"]]  # the preflight never reached it
    assert res["elsewhere"]["status"] == 404
    assert res["websocket"] == {"status_line": "HTTP/1.1 101 Switching Protocols", "echoed": "hello sfu"}
    [upgrade] = r["sfu_seen"]
    assert upgrade["request"] == "GET /rtc?access_token=t HTTP/1.1"
    assert (upgrade["upgrade"], upgrade["connection"].lower()) == ("websocket", "upgrade")


def test_the_well_known_names_this_servers_rtc_focus_only_with_matrix_rtc() -> None:
    on = json.loads(_files(make_context(**CONFIGS["matrix-rtc"]))[f"{paths.APEX_ROOT}/.well-known/matrix/client"])
    off = json.loads(_files(make_context())[f"{paths.APEX_ROOT}/.well-known/matrix/client"])
    assert on["org.matrix.msc4143.rtc_foci"] == [{"type": "livekit",
                                                  "livekit_service_url": "https://matrix.example.org/livekit/jwt"}]
    assert "org.matrix.msc4143.rtc_foci" not in off


def _request(host: str, path: str, *, port: int = 443, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None, client_cert: str | None = paths.ORIGIN_PULL_CLIENT,
             ) -> dict[str, Any]:  # fmt: skip
    """One request as Cloudflare makes it: TLS with SNI, presenting its origin-pull certificate (or
    `client_cert=None`: none); what the server did instead of answering is the status."""
    import http.client
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert)
    conn: http.client.HTTPConnection
    if port == 443:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
    except ssl.SSLError as error:
        return {"status": "tls-refused", "headers": {}, "body": str(error)}
    except http.client.RemoteDisconnected:
        return {"status": "closed-without-answer", "headers": {}, "body": ""}
    data = resp.read().decode(errors="replace")
    conn.close()
    return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()}, "body": data,
            "header_names": [k.lower() for k, _ in resp.getheaders()]}


def _stand_in(port: int, answer: Callable[[str, dict[str, str]], bytes],
              extra_headers: dict[str, str] | None = None) -> Any:
    """A JSON server on 127.0.0.1:`port` in a thread, speaking HTTP/1.1 as Synapse does (a connection may
    carry several requests); `answer(path, headers)` gives each body, with the client's port as ":peer"."""
    import http.server
    import threading

    class StandIn(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = answer(self.path, {**headers, ":peer": str(self.client_address[1]), ":method": self.command})
            self.send_response(200)
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_OPTIONS = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


KEEPALIVE_PROBES = 5
# Issue 26: encoded forms of /_synapse/admin/ that nginx's normalised $uri sees as /_matrix/...
ENCODED_PATHS = {
    "dot-slash": "/_synapse/admin/v2/users/..%2F..%2F..%2F..%2F_matrix%2Fclient%2Fversions",
    "dot-segments": "/_synapse/admin/v1/..%2F..%2F..%2F_matrix/client/versions",
    "encoded-dots": "/_synapse/admin/%2E%2E/%2E%2E/_matrix/client/versions",
    "encoded-prefix": "/%5Fmatrix/client/versions",
    "encoded-synapse": "/%5Fsynapse/client/../admin/v1/server_version",
}
LOGGED_TOKEN = "syt_bG9nZ2Vk_TOKEN0in0a0query0string"


def _live_checks(hosts: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def synapse(path: str, headers: dict[str, str]) -> bytes:
        seen.append({"path": path, "headers": headers})
        if "since=s1" in path:  # Synapse failing mid-request: nginx answers 502 and logs an error
            raise ConnectionAbortedError(path)
        return b'{"versions": ["v1.11"]}'

    backend = _stand_in(8008, synapse)
    apex, matrix, chat = hosts[0], hosts[1], hosts[2]
    cf = {"CF-Connecting-IP": "198.51.100.23"}
    res = {
        "versions": _request(
            matrix,
            "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/t%2F1",
            method="PUT",
            body=b"{}",
            headers=cf,
        ),
        "admin": _request(matrix, "/_synapse/admin/v1/users/@admin:example.org", headers=cf),
        "upload-small": _request(matrix, "/_matrix/media/v3/upload", method="POST", body=b"x" * 500_000),
        "upload-big": _request(matrix, "/_matrix/media/v3/upload", method="POST", body=b"x" * 2_000_000),
        "client": _request(apex, "/.well-known/matrix/client"),
        "server": _request(apex, "/.well-known/matrix/server"),
        "apex-other": _request(apex, "/index.html"),
        "http": _request(matrix, "/x?y=1", port=80),
        "chat-index": _request(chat, "/"),
        "chat-config": _request(chat, "/config.json"),
        "chat-host-config": _request(chat, f"/config.{chat}.json"),
        "chat-version": _request(chat, "/version"),
        "chat-i18n": _request(chat, "/i18n/en_EN.json"),
        "chat-bundle": _request(chat, "/bundles/app.js"),
        "matrix-well-known": _request(matrix, "/.well-known/matrix/server"),
        "no-client-cert": _request(matrix, "/_matrix/client/versions", client_cert=None),
        "stranger-cert": _request(matrix, "/_matrix/client/versions", client_cert=STRANGER_CLIENT),
        "unknown-name": _request(UNKNOWN_NAME, "/"),
        "unknown-name-http": _request(UNKNOWN_NAME, "/", port=80),
    }
    for i in range(KEEPALIVE_PROBES):  # one after another, each on a new connection to nginx
        res[f"probe-{i}"] = _request(matrix, "/_matrix/client/v3/capabilities", headers=cf)
    # Raw URIs that normalise into /_matrix/ (nginx's $uri) while Synapse routes them elsewhere.
    for name, path in ENCODED_PATHS.items():
        res[f"encoded-{name}"] = _request(matrix, path, headers=cf)
    # A token in a query string, on every site, answered and failing (Synapse gone: 502, an error line).
    for host in (apex, matrix, chat, UNKNOWN_NAME):
        res[f"token-{host}"] = _request(host, f"/_matrix/client/v3/sync?access_token={LOGGED_TOKEN}")
    res["token-upstream-failed"] = _request(matrix, f"/_matrix/client/v3/sync?access_token={LOGGED_TOKEN}&since=s1")
    backend.shutdown()
    return res, seen


def _routing_checks(matrix: str) -> dict[str, Any]:
    """One stand-in per Synapse process, each telling which port it listens on; every ROUTES request."""
    raw_paths: list[tuple[int, str]] = []

    def process(port: int) -> Callable[[str, dict[str, str]], bytes]:
        def answer(path: str, headers: dict[str, str]) -> bytes:
            raw_paths.append((port, path))
            return json.dumps({"port": port}).encode()
        return answer

    servers = [_stand_in(port, process(port)) for port in BACKEND_PORTS.values()]
    answered = []
    for method, path, _ in ROUTES:
        response = _request(matrix, path, method=method, body=b"{}" if method != "GET" else None)
        answered.append((method, path, json.loads(response["body"])["port"] if response["status"] == 200 else None))
    for server in servers:
        server.shutdown()
    return {"answered_by": answered, "raw_paths": raw_paths,
            "upstream_log": Path(nginx.UPSTREAM_LOG).read_text().splitlines()}


RTC_ORIGIN = "https://chat.example.org"


def _rtc_checks(matrix: str) -> dict[str, Any]:
    """matrixRtc: stand-ins for lk-jwt-service (which sends its own CORS header, as the real one does) and for
    the SFU (which accepts a WebSocket upgrade and then echoes bytes); requests as Cloudflare passes them on."""
    import base64
    import hashlib
    import socket
    import ssl
    import threading

    token_seen: list[tuple[str, str]] = []

    def token(path: str, headers: dict[str, str]) -> bytes:
        token_seen.append((headers.get(":method", ""), path))
        return json.dumps({"path": path}).encode()

    token_server = _stand_in(rtc.TOKEN_SERVICE_LISTEN[1], token, extra_headers={"Access-Control-Allow-Origin": "*"})
    sfu_seen: list[dict[str, str]] = []
    listener = socket.create_server(("127.0.0.1", rtc.SFU_SIGNAL_PORT))

    def sfu() -> None:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        lines = head.decode().split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        sfu_seen.append({"request": lines[0], **fields})
        accept = base64.b64encode(hashlib.sha1((fields.get("sec-websocket-key", "") +
                                                "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn.sendall(conn.recv(4096))  # echo the first bytes the client sends through the tunnel
        conn.close()

    threading.Thread(target=sfu, daemon=True).start()
    res: dict[str, Any] = {
        "sfu-get": _request(matrix, "/livekit/jwt/sfu/get", method="POST", body=b"{}",
                            headers={"Origin": RTC_ORIGIN, "Content-Type": "application/json"}),
        "get-token": _request(matrix, "/livekit/jwt/get_token", method="POST", body=b"{}"),
        "preflight": _request(matrix, "/livekit/jwt/sfu/get", method="OPTIONS",
                              headers={"Origin": RTC_ORIGIN, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "content-type"}),
        "elsewhere": _request(matrix, "/livekit/other"),
    }
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(paths.ORIGIN_PULL_CLIENT)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", 443), timeout=10), server_hostname=matrix) as tls:
        tls.sendall((f"GET /livekit/sfu/rtc?access_token=t HTTP/1.1\r\nHost: {matrix}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        tls.sendall(b"hello sfu")
        echoed = tls.recv(4096)
    res["websocket"] = {"status_line": answer.decode().split("\r\n")[0], "echoed": echoed.decode()}
    token_server.shutdown()
    listener.close()
    return {"responses": res, "token_seen": token_seen, "sfu_seen": sfu_seen}


def _sandbox_main(stage: Path, scratch: Path, mode: str, hosts: list[str]) -> None:
    _isolate(scratch)
    shutil.copytree(stage, "/", symlinks=True, dirs_exist_ok=True)
    enabled = Path("/etc/nginx/sites-enabled")
    (enabled / "default").unlink(missing_ok=True)  # what the step script does
    os.makedirs(nginx.PRIVATE_LOG_DIR, mode=0o700, exist_ok=True)  # ... and this
    for site in nginx.SITE_NAMES:
        (enabled / site).symlink_to(f"../sites-available/{site}")
    test = subprocess.run([NGINX, "-t"], capture_output=True, text=True)
    result: dict[str, Any] = {
        "rc": test.returncode,
        "output": test.stdout + test.stderr,
        "enabled": sorted(p.name for p in enabled.iterdir()),
    }
    if mode in ("live", "routing", "rtc") and test.returncode == 0:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        with open("/etc/hosts", "a") as hosts_file:
            hosts_file.write(f"127.0.0.1 {' '.join(hosts)} {UNKNOWN_NAME}\n")
        server = subprocess.Popen([NGINX, "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)
        try:
            import socket
            import time

            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", 443), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            if mode == "routing":
                result.update(_routing_checks(hosts[1]))
            elif mode == "rtc":
                result.update(_rtc_checks(hosts[1]))
            else:
                result["responses"], result["backend"] = _live_checks(hosts)
                result["logs"] = {str(p): {"text": p.read_text(), "mode": oct(p.parent.stat().st_mode & 0o777)}
                                  for p in Path("/var/log/nginx").rglob("*.log")}
        finally:
            server.terminate()
            server.wait(timeout=10)
        result["output"] += server.stderr.read() if server.stderr else ""
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--sandbox":
        _sandbox_main(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5].split(","))
    else:
        raise SystemExit("usage: test_nginx.py --sandbox STAGE SCRATCH MODE HOSTS")


def test_the_sites_step_puts_back_the_previous_site_when_nginx_rejects_a_new_one(tmp_path: Path) -> None:
    """The real nginx-sites bundle (prelude, files, script) in a sandbox with the real `nginx -t`: a site nginx
    rejects fails the step, the previous one is back in place, and nginx is not reloaded."""
    ctx = make_context()
    (step,) = nginx.steps(ctx)
    contents = [str(f.content) for f in step.files]
    path = f"{nginx.SITES_AVAILABLE}/matrix-stack-matrix"
    index = [f.path for f in step.files].index(path)
    broken = list(contents)
    broken[index] = contents[index].replace("proxy_http_version 1.1;", "proxy_http_version 1.1; no_such_directive on;")
    for i, texts in enumerate((contents, broken), 1):
        (tmp_path / f"b{i}.sh").write_text(bundle_text(step, texts, private_output=True))
    cert, key = _throwaway_cert(list(ctx.settings.hostnames))
    (tmp_path / "fullchain.pem").write_text(cert)
    (tmp_path / "privkey.pem").write_text(key)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/bash\necho "systemctl $*" >> {tmp_path}/calls\n')
    (bindir / "systemctl").chmod(0o755)
    live = f"{paths.CERT_LIVE_DIR}/{ctx.settings.domain}"
    setup = (f"mkdir -p {shlex.quote(live)} /var/log/nginx && "
             f'cp "$work/fullchain.pem" "$work/privkey.pem" {shlex.quote(live)}/')
    proc = run_bundles_in_sandbox(tmp_path, setup, [tmp_path / "b1.sh", tmp_path / "b2.sh"],
                                  f"{nginx.SITES_AVAILABLE}/matrix-stack-matrix", tmpfs=["/var/log", "/run"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {i: (tmp_path / f"out.{i}").read_text() for i in (1, 2)}
    assert (tmp_path / "rc.1").read_text().strip() == "0", out[1][-3000:]
    assert (tmp_path / "rc.2").read_text().strip() != "0"
    assert "nginx rejects the new configuration" in out[2], out[2][-3000:]
    assert (tmp_path / "kept.1").read_text() == contents[index]
    assert (tmp_path / "kept.2").read_text() == contents[index], "the rejected site stayed in place"
    assert "reload" not in (tmp_path / "calls").read_text().split("--- bundle 2", 1)[1]
