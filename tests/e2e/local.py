"""Deploy onto a local Debian test host and keep it running for exploration (`make local-server`, also
`make e2e-up`): the program's own steps on a local "droplet", behind the Cloudflare edge stand-in, with no
cloud account.

    python -m tests.e2e.local up [--index N]    deploy, print how to reach it, wait for Ctrl-C
    python -m tests.e2e.local down [--index N]  remove a host left behind (e.g. after kill -9)

The host runs while `up` runs: its stand-ins (registry proxy, ACME, Cloudflare API and edge, Element
release server) live in that process. Ctrl-C (or SIGTERM) tears everything down.

What `up` prints is `instructions()`: shell commands that work as printed on this machine (the e2e suite
runs each of them, tests/e2e/test_local_server.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.deployment import Deployment, deployed_host
from tests.e2e.runner import StepFailed, StepResult, run_all
from tests.e2e.testhost import TestHost

DEFAULT_INDEX = 30
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True)
class Instruction:
    """One thing to do with the local server: what it is for, and the command that does it."""

    what: str
    command: str  # a shell command line, run as printed
    answers: str  # what its output contains when it works


def spki_sha256(certificate_pem: str) -> str:
    """The base64 SHA-256 of a certificate's public key (what Chromium's --ignore-certificate-errors-spki-list
    takes): the edge's CA, which signs every name the edge serves."""
    der = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=certificate_pem, capture_output=True,
                         text=True, check=True).stdout
    key = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der.encode(), capture_output=True,
                         check=True).stdout
    return base64.b64encode(hashlib.sha256(key).digest()).decode()


def login_file(deployment: Deployment, directory: Path) -> Path:
    """The admin's login request (0600), so the password never stands on a command line."""
    path = directory / "admin-login.json"
    path.write_text(json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"},
                                "password": deployment.admin_password}))
    path.chmod(0o600)
    return path


def instructions(deployment: Deployment, directory: Path) -> list[Instruction]:
    """How to reach the local server from this machine, as commands that work as printed."""
    domain, edge, ca = deployment.domain, deployment.edge_address, deployment.ca_file
    assert deployment.edge is not None
    resolve = " ".join(f"--resolve {name}:443:{edge}" for name in (domain, f"matrix.{domain}", f"chat.{domain}"))
    curl = f"curl -sS --cacert {shlex.quote(str(ca))} {resolve}"
    password = directory / "admin-password"
    password.write_text(deployment.admin_password + "\n")
    password.chmod(0o600)
    browser = next((b for b in BROWSERS if shutil.which(b)), BROWSERS[0])
    rules = f"MAP {domain} {edge}, MAP *.{domain} {edge}"
    return [
        Instruction("the Matrix client API, through the edge", f"{curl} https://matrix.{domain}/_matrix/client/versions",
                    '"versions"'),
        Instruction("the delegation file on the server name", f"{curl} https://{domain}/.well-known/matrix/server",
                    f"matrix.{domain}:443"),
        Instruction(f"log in as @admin:{domain} (the password is in {password})",
                    f"{curl} --data @{shlex.quote(str(login_file(deployment, directory)))} "
                    f"https://matrix.{domain}/_matrix/client/v3/login", '"access_token"'),
        Instruction("a shell on the server",
                    f"ssh -i {shlex.quote(str(deployment.key_file))} -o StrictHostKeyChecking=no "
                    f"-o UserKnownHostsFile=/dev/null root@{deployment.host.address} systemctl is-active matrix-synapse",
                    "active"),
        Instruction("Element in a browser (a profile of its own; the names go to the edge, whose CA it trusts)",
                    f"{browser} --user-data-dir=\"$(mktemp -d)\" --no-first-run "
                    f"--host-resolver-rules={shlex.quote(rules)} "
                    f"--ignore-certificate-errors-spki-list={spki_sha256(deployment.edge.ca_cert)} "
                    f"https://chat.{domain}/", "<title>Element"),
    ]


def describe(deployment: Deployment, directory: Path) -> str:
    """The text `up` prints."""
    domain, edge = deployment.domain, deployment.edge_address
    lines = [f"The server's web names ({domain}, matrix.{domain}, chat.{domain}) go through Cloudflare's edge, here "
             f"the edge stand-in on {edge}; turn.{domain} is the host itself, {deployment.host.address} (DNS only).",
             f"Clients trust the edge's CA, as browsers trust Cloudflare's: {deployment.ca_file}", ""]
    for instruction in instructions(deployment, directory):
        lines += [f"{instruction.what}:", f"  {instruction.command}", ""]
    return "\n".join(lines)


def _print_step(result: StepResult) -> None:
    status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
    print(f"  {result.name:24s} {result.seconds:6.1f} s  {status}", flush=True)


def up(index: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    volume_dir = Path(tempfile.mkdtemp(prefix="matrix-stack-local-", dir="/var/tmp"))
    try:
        with deployed_host(index, volume_dir / "volume.img") as deployment:
            print(f"test host {deployment.host.address} is up; provisioning with the program's steps:", flush=True)
            failed = None
            try:
                run_all(deployment.record(), on_step=_print_step)
            except StepFailed as error:
                failed = error
                print(f"\n{error}\n(the host stays up so you can look around)", flush=True)
            print("\n" + describe(deployment, volume_dir), flush=True)
            print(f"Ctrl-C (or `python -m tests.e2e.local down --index {index}`) tears it down.", flush=True)
            try:
                while not stop.wait(1):
                    pass
            except KeyboardInterrupt:
                pass
            return 1 if failed else 0
    finally:
        shutil.rmtree(volume_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--index", type=int, default=DEFAULT_INDEX)
    args = parser.parse_args()
    if args.action == "down":
        TestHost.cleanup(args.index)
        return 0
    return up(args.index)


if __name__ == "__main__":
    sys.exit(main())
