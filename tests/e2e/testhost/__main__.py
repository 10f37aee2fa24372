"""Manual use: `python -m tests.e2e.testhost up --index 1 --key ~/.ssh/id_ed25519.pub`.

`up` boots a test host, prints its addresses and stays in the foreground (the proxy, pebble, the
Cloudflare stand-in and the mail relay live with this process); Ctrl-C or SIGTERM tears it down.
`down [--index N]` removes leftovers of a crashed run; `build` only builds the cached rootfs.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from . import rootfs
from .host import TestHost


def _up(args: argparse.Namespace) -> None:
    host = TestHost(args.index, Path(args.key).read_text(), args.volume_name, args.domain,
                    Path(args.volume_image) if args.volume_image else None,
                    identity_file=Path(args.identity) if args.identity else None,
                    outsider=args.outsider)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with host:
        print(f"guest            {host.address}  (ssh -i {host.identity_file} root@{host.address})")
        print(f"host side        {host.host_side_address}")
        print(f"proxy            {host.proxy_url}")
        print(f"ACME directory   {host.acme_directory}")
        print(f"pebble TLS CA    {host.pebble_tls_ca_file}")
        print(f"issuing root     {host.client_ca_file}")
        print(f"Cloudflare API   {host.cloudflare_api_url}")
        if host.smtp is not None:
            relay = host.smtp
            print(f"mail relay       {relay.name} = {relay.address}:{relay.starttls_port} (STARTTLS), "
                  f":{relay.tls_port} (TLS); login {relay.username} / {relay.password}; CA {relay.ca_file}")
        print(f"volume           {host.volume_image} -> {host.volume_guest_path}")
        if args.outsider:
            print(f"outsider         {host.outsider_address} (ip netns exec {host.addr.outsider_netns} ...)")
        print("Ctrl-C to tear down", flush=True)
        while not stop.wait(1):
            if not host.machine_running:
                print("guest powered off")
                break


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.testhost")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot a test host and keep it up until Ctrl-C")
    up.add_argument("--index", type=int, default=1)
    up.add_argument("--key", required=True, help="public key file to authorize for root")
    up.add_argument("--identity", help="matching private key (default: a generated one)")
    up.add_argument("--volume-name", default="e2e")
    up.add_argument("--volume-image", help="image file (default under /var/lib/matrix-stack-e2e)")
    up.add_argument("--domain", default="example.test")
    up.add_argument("--outsider", action="store_true", help="also create the outsider namespace")
    down = sub.add_parser("down", help="remove leftovers (default: of every index)")
    down.add_argument("--index", type=int)
    sub.add_parser("build", help="build the cached rootfs image")
    args = parser.parse_args()
    if args.command == "up":
        _up(args)
    elif args.command == "down":
        TestHost.cleanup(args.index)
    else:
        print(rootfs.cached_rootfs())


if __name__ == "__main__":
    main()
