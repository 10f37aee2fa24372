"""An HTTPS release mirror for the template tests' sandboxes: the download steps insist on https, so the
sandbox trusts a throwaway CA as the droplet trusts a public one and serves `<work>/serve` on loopback."""

from __future__ import annotations

from pathlib import Path

from tests import pki


def mirror_driver(port: int, per_bundle: str) -> str:
    """A sandbox driver: start the mirror, then run each bundle given as an argument, recording its exit code
    and output as rc.<i> and out.<i>, then `per_bundle` (bash, with $work and $i) for what else to keep."""
    return r"""
set -uo pipefail
work=$1
shift
cat "$work/tls/ca.pem" >> /etc/ssl/certs/ca-certificates.crt
python3 - "$work" > "$work/http.log" 2>&1 <<'PY' &
import functools, http.server, ssl, sys
work = sys.argv[1]
server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), functools.partial(
    http.server.SimpleHTTPRequestHandler, directory=f"{work}/serve"))
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(f"{work}/tls/cert.pem", f"{work}/tls/key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
server=$!
trap 'kill "$server"' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/PORT) 2>/dev/null && break; sleep 0.05; done
i=0
for bundle in "$@"; do
  i=$((i + 1))
  bash "$bundle" > "$work/out.$i" 2>&1
  echo $? > "$work/rc.$i"
PER_BUNDLE
done
""".replace("PORT", str(port)).replace("PER_BUNDLE", per_bundle)


def write_mirror_tls(tmp: Path, name: str) -> None:
    """The mirror's CA and its certificate for 127.0.0.1, under tmp/tls."""
    tls = tmp / "tls"
    tls.mkdir(exist_ok=True)
    ca_key = pki.private_key_pem(f"{name} test CA")
    ca = pki.self_signed_cert(f"{name} test CA", ca_key, {"common_name": f"{name} test CA"}, True,
                              ["cert_signing", "crl_signing", "digital_signature"], 24 * 365)
    cert, key = pki.server_cert(f"{name} test", ca_key, ca, ["127.0.0.1"])
    (tls / "ca.pem").write_text(ca)
    (tls / "cert.pem").write_text(cert + ca)
    (tls / "key.pem").write_text(key)
