"""Local stand-ins for what the guest cannot download here: the Element release tarball.

GitHub release downloads are unreachable, so the test serves a tarball shaped like Element's
(`element-v<version>/index.html`, `config.sample.json`, `version`) from the host side of the
test network, and the program is configured with its real sha256 through `elementDownloadUrl`
and `elementSha256`, the same settings a user with a mirror would use.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class ElementRelease:
    url_template: str
    sha256: str
    version: str


def build_tarball(directory: Path, version: str) -> Path:
    """Write element-v<version>.tar.gz with the files the deployment and its checks rely on."""
    top = f"element-v{version}"
    files = {
        "index.html": (
            f'<!doctype html>\n<html lang="en"><head><title>Element {version}</title></head>'
            '<body><section id="matrixchat"></section></body></html>\n'
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


@contextmanager
def element_release_server(
    address: str, port: int, directory: Path, versions: tuple[str, ...]
) -> Iterator[dict[str, ElementRelease]]:
    """Serve tarballs for `versions` on address:port until the block ends."""
    releases = {}
    for version in versions:
        path = build_tarball(directory, version)
        releases[version] = ElementRelease(
            url_template=f"http://{address}:{port}/element-v{{version}}.tar.gz",
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            version=version,
        )
    server = ThreadingHTTPServer((address, port), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield releases
    finally:
        server.shutdown()
        server.server_close()
