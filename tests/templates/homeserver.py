"""A real Synapse (build/synapse-venv) from the stack's rendered homeserver.yaml, for tests of the steps that talk
to it: SQLite instead of PostgreSQL, paths in a temp dir, a free port on loopback, relaxed login limits (the
tests log in many times in a row)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from components import paths
from components.services import synapse
from tests.templates.conftest import make_context

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = ROOT / "build" / "synapse-venv"
RELAXED = {"per_second": 100, "burst_count": 100}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_synapse(tmp: Path, overrides: dict[str, Any] | None = None, **config: str) -> Iterator[tuple[Path, str]]:
    """Synapse from the config step of a stack with `config` (raw settings), `overrides` merged into its
    homeserver.yaml; yields the config file and the base URL, and stops Synapse afterwards."""
    assert (SYNAPSE_VENV / "bin" / "python").exists(), "build/synapse-venv missing: run tests/tools/install-deps.sh"
    (step,) = [s for s in synapse.steps(make_context(**{"federation": "off", **config})) if s.name == "synapse-config"]
    files = {f.path: str(f.content) for f in step.files}
    cfg = yaml.safe_load(files[paths.SYNAPSE_CONFIG])
    port = _free_port()
    cfg["listeners"][0]["port"] = port
    cfg["database"] = {"name": "sqlite3", "args": {"database": str(tmp / "homeserver.db")}}
    cfg.update(
        log_config=str(tmp / "log.yaml"),
        media_store_path=str(tmp / "media"),
        signing_key_path=str(tmp / "signing.key"),
        pid_file=str(tmp / "homeserver.pid"),
        rc_login={k: RELAXED for k in ("address", "account", "failed_attempts")},
        **(overrides or {}),
    )
    config_file = tmp / "homeserver.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    log = yaml.safe_load(files[paths.SYNAPSE_LOG_CONFIG])
    log["handlers"]["file"]["filename"] = str(tmp / "homeserver.log")
    (tmp / "log.yaml").write_text(yaml.safe_dump(log))
    (tmp / "signing.key").write_text(files[synapse.SIGNING_KEY_STAGED])
    base_url = f"http://127.0.0.1:{port}"
    stderr_path = tmp / "synapse.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen([str(SYNAPSE_VENV / "bin" / "python"), "-m", "synapse.app.homeserver", "-c",
                                 str(config_file)], stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/health", timeout=2) as r:
                    if r.read() == b"OK":
                        break
            except OSError:
                pass
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "synapse did not start"
            time.sleep(0.5)
        yield config_file, base_url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def register(config: Path, base_url: str, localpart: str, password: str, tmp: Path, admin: bool = False) -> None:
    """An account made the way the admin step makes one (shared-secret registration), password from a file."""
    password_file = tmp / f"{localpart}.password"
    password_file.write_text(password + "\n")
    subprocess.run([str(SYNAPSE_VENV / "bin" / "register_new_matrix_user"), "-c", str(config), "-u", localpart,
                    "--password-file", str(password_file), "--admin" if admin else "--no-admin", base_url],
                   capture_output=True, text=True, check=True)


def call(base_url: str, method: str, path: str, body: dict[str, Any] | None = None,
         token: str = "") -> tuple[int, dict[str, Any]]:
    """One client-server or admin API request: (HTTP status, JSON body), errors included."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def login(base_url: str, localpart: str, password: str) -> tuple[int, dict[str, Any]]:
    return call(base_url, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": password})
