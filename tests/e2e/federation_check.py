"""The checks the public Matrix federation tester makes, run on one test server against another.

Runs inside a guest with Synapse's own venv (signedjson ships with Synapse), so DNS is the test
network's DNS stand-in and TLS trust is the guest's store, as for that server's Synapse. For
SERVER_NAME: the server discovery of the server-server spec (/.well-known/matrix/server on 443,
redirects followed), the target's addresses, then for each address a TLS connection with the target
name as SNI (certificate verified), the federation version endpoint and the server's signing keys:
named for the server, valid for a while yet, and each one's signature verifying over the document.
Prints one JSON object. Usage: python federation_check.py SERVER_NAME
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import time
import urllib.request
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       urllib.request.HTTPSHandler(context=ssl.create_default_context()))


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to one address with the target's name as SNI and Host."""

    def __init__(self, address: str, name: str, port: int) -> None:
        super().__init__(name, port, timeout=30, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _get(address: str, name: str, port: int, path: str) -> tuple[int, Any]:
    connection = _Pinned(address, name, port)
    try:
        connection.request("GET", path, headers={"User-Agent": "matrix-stack federation check"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body.decode(errors="replace")[:200]


def check(server_name: str) -> dict[str, Any]:
    report: dict[str, Any] = {"server": server_name, "errors": []}
    errors: list[str] = report["errors"]
    with NO_PROXY.open(f"https://{server_name}/.well-known/matrix/server", timeout=30) as response:
        report["well_known_url"] = response.geturl()
        delegated = json.load(response)["m.server"]
    report["m.server"] = delegated
    host, _, port_text = delegated.rpartition(":") if ":" in delegated else (delegated, "", "8448")
    port = int(port_text)
    addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    report["addresses"] = addresses
    if not addresses:
        errors.append(f"{host} has no address")
    for address in addresses:
        status, version = _get(address, host, port, "/_matrix/federation/v1/version")
        if status != 200 or "server" not in version:
            errors.append(f"{address}: federation version endpoint answered {status}")
        else:
            report.setdefault("versions", {})[address] = version["server"]
        status, keys = _get(address, host, port, "/_matrix/key/v2/server")
        if status != 200 or keys.get("server_name") != server_name:
            errors.append(f"{address}: keys answered {status} for {keys.get('server_name') if status == 200 else '-'}")
            continue
        if keys.get("valid_until_ts", 0) <= time.time() * 1000:
            errors.append(f"{address}: keys are expired (valid_until_ts {keys.get('valid_until_ts')})")
        verified = []
        for key_id, key in keys.get("verify_keys", {}).items():
            verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
            try:
                verify_signed_json(keys, server_name, verify_key)
                verified.append(key_id)
            except SignatureVerifyException as error:
                errors.append(f"{address}: signature by {key_id} does not verify: {error}")
        if not verified:
            errors.append(f"{address}: no verify key signs the keys")
        report.setdefault("verified_keys", {})[address] = verified
    return report


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
