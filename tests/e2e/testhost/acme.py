"""Debian's pebble ACME test server and pebble-challtestsrv as the DNS it validates against.

Pebble gets a throwaway CA and a TLS certificate for the address it listens on (the host side of the
guest's veth). challtestsrv serves DNS on <host>:8053 (for pebble) and <host>:53 (the guest's
resolver) and takes TXT records (fed by the Cloudflare stand-in) and A records (fed by the edge
stand-in: the zones' names) on its management API <host>:8055. Pebble's issuing root changes on every start; fetch
it from the management API (/roots/0) after start.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

from ._proc import pids_matching, run, stop_popen, terminate, wait_until

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
ACME_PORT = 14000
MANAGEMENT_PORT = 15000
DNS_PORT = 8053
GUEST_DNS_PORT = 53  # the same answers on the standard port: the guest's resolver (/etc/resolv.conf)
CHALLTESTSRV_PORT = 8055
START_TIMEOUT = 30.0


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def _runs(binary: str, argv: list[str]) -> bool:
    return argv[0] == binary


def make_tls(state: Path, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `address`; returns (ca, cert, key) paths."""
    ca_key, ca, key, csr, cert = (state / n for n in
                                  ("tls-ca.key", "tls-ca.pem", "tls.key", "tls.csr", "tls.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "30",
         "-subj", "/CN=matrix-stack e2e pebble TLS CA"])
    run(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={address}"])
    ext = state / "tls.ext"
    ext.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "30", "-out", str(cert), "-extfile", str(ext)])
    return ca, cert, key


class Pebble:
    """pebble + challtestsrv for one test host, bound to `address`, state and logs in `state`."""

    def __init__(self, address: str, state: Path) -> None:
        self.address = address
        self.state = state
        self.tls_ca_file = state / "tls-ca.pem"
        self.root_file = state / "pebble-root.pem"
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def directory_url(self) -> str:
        return f"https://{self.address}:{ACME_PORT}/dir"

    @property
    def challtestsrv_url(self) -> str:
        return f"http://{self.address}:{CHALLTESTSRV_PORT}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.state / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        (self.state / f"{name}.pid").write_text(str(proc.pid))

    def start(self) -> None:
        """Start both servers and wait (bounded) until they listen; then save pebble's root."""
        self.state.mkdir(parents=True, exist_ok=True)
        _, cert, key = make_tls(self.state, self.address)
        config = self.state / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{self.address}:{ACME_PORT}",
            "managementListenAddress": f"{self.address}:{MANAGEMENT_PORT}",
            "certificate": str(cert), "privateKey": str(key),
            # HTTP-01 on port 80, as Let's Encrypt checks it (the TURN droplet's certificate).
            "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._spawn("challtestsrv", [
            CHALLTESTSRV, "-dns01", f"{self.address}:{DNS_PORT},{self.address}:{GUEST_DNS_PORT}",
            "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"{self.address}:{CHALLTESTSRV_PORT}",
            # A name nobody published has no address (not challtestsrv's default 127.0.0.1 / ::1).
            "-defaultIPv4", "", "-defaultIPv6", "",
        ], env)
        # NOSLEEP: validate at once; AUTHZREUSE=0: renewals redo the challenge;
        # NONCEREJECT=0: no random badNonce errors, so a failure means something.
        self._spawn("pebble", [PEBBLE, "-config", str(config),
                               "-dnsserver", f"{self.address}:{DNS_PORT}"],
                    {**env, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0",
                     "PEBBLE_WFE_NONCEREJECT": "0"})
        for port in (CHALLTESTSRV_PORT, ACME_PORT, MANAGEMENT_PORT):
            wait_until(f"pebble port {port}", functools.partial(_port_open, self.address, port),
                       START_TIMEOUT, interval=0.2)
        self.root_file.write_bytes(self.fetch_root())

    def fetch_root(self) -> bytes:
        """PEM of pebble's current issuing root (trust it to verify certificates pebble issued)."""
        ctx = ssl.create_default_context(cafile=str(self.tls_ca_file))
        url = f"https://{self.address}:{MANAGEMENT_PORT}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            data: bytes = resp.read()
        return data

    def publish_address(self, name: str, address: str) -> None:
        """Have the DNS stand-in answer `name` with `address`, as public DNS would (names outside the zones)."""
        for path, body in (("/clear-a", {"host": f"{name}."}), ("/add-a", {"host": f"{name}.", "addresses": [address]})):
            request = urllib.request.Request(self.challtestsrv_url + path, data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    def stop(self) -> None:
        for proc in self._procs:
            stop_popen(proc, grace=5)
        self._procs.clear()
        for name in ("pebble", "challtestsrv"):
            (self.state / f"{name}.pid").unlink(missing_ok=True)

    @staticmethod
    def kill_leftovers(state: Path) -> None:
        """Kill pebble/challtestsrv of a crashed run, by the pid files and config paths it left."""
        for name, binary in (("pebble", PEBBLE), ("challtestsrv", CHALLTESTSRV)):
            pid_file = state / f"{name}.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text() or 0)
                if pid in pids_matching(functools.partial(_runs, binary)):
                    terminate(pid, grace=5)
                pid_file.unlink(missing_ok=True)
