"""Local stand-ins for what the guest cannot download here: the Element release tarball.

GitHub release downloads are unreachable, so the test serves tarballs shaped like Element's
(`element-v<version>/index.html`, `config.sample.json`, `version`) with detached `.asc`
signatures from the host side of the test network. They are signed by a key the test generates
(Element's own key cannot sign them), and the program is pointed at them the way a user with a
re-signing mirror would do it: `elementDownloadUrl`, `elementSigningKey` and
`elementSigningFingerprint`. The server checks the signature with the same gpg call as for a real
release. A version listed in `tampered` gets a valid signature over a tarball that is then
replaced, as a compromised mirror would serve it. The mirror speaks HTTPS (elementDownloadUrl must be
https), its certificate from the edge stand-in's CA, which the droplets trust like a public CA.
"""

from __future__ import annotations

import hashlib
import io
import ssl
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests import pki
from tests.e2e.edge import shared_edge
from tests.signing import Signer


@dataclass(frozen=True)
class ElementRelease:
    url_template: str
    sha256: str
    version: str
    signing_key: str
    signing_fingerprint: str


def build_tarball(directory: Path, version: str, extra: str = "") -> Path:
    """Write element-v<version>.tar.gz with the files the deployment and its checks rely on."""
    top = f"element-v{version}"
    files = {
        "index.html": (
            f'<!doctype html>\n<html lang="en"><head><title>Element {version}</title></head>'
            f'<body><section id="matrixchat"></section>{extra}</body></html>\n'
        ),
        "config.sample.json": '{"default_server_config": {}}\n',
        "version": f"{version}\n",
        "i18n/en_EN.json": "{}\n",
    }
    path = directory / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def build_releases(address: str, port: int, directory: Path, versions: tuple[str, ...],
                   tampered: tuple[str, ...] = ()) -> dict[str, ElementRelease]:
    """Signed tarballs for `versions` (and tampered ones for `tampered`) in `directory`, to be served
    at https://address:port/ (the URLs are known before the server runs: the program records them)."""
    signer = Signer(directory / "gnupg", "Mirror Release Signer")
    releases = {}
    try:
        for version in (*versions, *tampered):
            path = build_tarball(directory, version)
            signer.sign(path)
            if version in tampered:
                build_tarball(directory, version, extra="<script>/* not what was signed */</script>")
            releases[version] = ElementRelease(
                url_template=f"https://{address}:{port}/element-v{{version}}.tar.gz",
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                version=version,
                signing_key=signer.public_key,
                signing_fingerprint=signer.fingerprint,
            )
    finally:
        signer.close()
    return releases


@contextmanager
def release_server(address: str, port: int, directory: Path) -> Iterator[None]:
    """Serve `directory` over HTTPS on address:port until the block ends (a certificate for the address from
    the edge stand-in's CA)."""
    server = ThreadingHTTPServer((address, port), partial(_QuietHandler, directory=str(directory)))
    edge = shared_edge(lambda: Path(tempfile.mkdtemp(prefix="matrix-stack-edge-", dir="/var/tmp")))
    cert, key = pki.server_cert(f"element mirror {address}", edge.ca_key, edge.ca_cert, [address])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="matrix-stack-mirror-tls-") as tls:  # not under the served directory
        (Path(tls) / "cert.pem").write_text(cert + edge.ca_cert)
        (Path(tls) / "key.pem").write_text(key)
        context.load_cert_chain(Path(tls) / "cert.pem", Path(tls) / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
