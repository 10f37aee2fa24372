"""Deploy onto a local Debian test host and keep it running for exploration (`make e2e-up`).

    python -m tests.e2e.local up [--index N]    deploy, print how to reach it, wait for Ctrl-C
    python -m tests.e2e.local down [--index N]  remove a host left behind (e.g. after kill -9)

The host runs while `up` runs: its stand-ins (registry proxy, ACME, Cloudflare API, Element
release server) live in that process. Ctrl-C (or SIGTERM) tears everything down.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.e2e.deployment import DOMAIN, deployed_host
from tests.e2e.runner import StepFailed, StepResult
from tests.e2e.testhost import TestHost

DEFAULT_INDEX = 30


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
                from tests.e2e.runner import run_all

                run_all(deployment.record(), on_step=_print_step)
            except StepFailed as error:
                failed = error
                print(f"\n{error}\n(the host stays up so you can look around)", flush=True)
            admin_file = volume_dir / "admin-password"
            if deployment.recording is not None:
                admin_file.write_text(deployment.admin_password + "\n")
                admin_file.chmod(0o600)
            address = deployment.host.address
            print(
                f"""
Reach it from this machine (there is no DNS: map the names to the host's address):
  curl --cacert {deployment.ca_file} --resolve matrix.{DOMAIN}:443:{address} https://matrix.{DOMAIN}/_matrix/client/versions
  names: {DOMAIN}, matrix.{DOMAIN}, chat.{DOMAIN}, turn.{DOMAIN} -> {address}
  CA to trust (pebble's issuing root): {deployment.ca_file}
  admin user: @admin:{DOMAIN}, password in {admin_file}
  ssh: ssh -i {deployment.key_file} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{address}
Ctrl-C (or `python -m tests.e2e.local down --index {index}`) tears it down.""",
                flush=True,
            )
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
