"""A small forward proxy so the guest reaches the package registries and nothing else.

HTTP (absolute-form requests) and CONNECT, to ports 80 and 443 only, and only to the host names in
the host's own apt and pip configuration (`hostconfig.registry_hosts`); anything else gets 403.
It runs on its own event loop in a daemon thread, bound to the host side of the guest's veth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ALLOWED_PORTS = frozenset({80, 443})
HEADER_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
MAX_HEADER = 64 * 1024


def _reply(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT):
            writer.write(data)
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


class ForwardProxy:
    """Forward proxy restricted to an allow-list of host names; start() and stop() are bounded."""

    def __init__(self, bind: str, port: int, allowed_hosts: frozenset[str]) -> None:
        self.bind = bind
        self.port = port
        self.allowed_hosts = allowed_hosts
        self.denied: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def allows(self, host: str, port: int) -> bool:
        return port in ALLOWED_PORTS and host.lower().rstrip(".") in self.allowed_hosts

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises if the address cannot be bound."""
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.bind, self.port, reuse_address=True)
        )
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"proxy-{self.bind}")
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and all open connections, then stop the loop thread."""
        if self._thread is None:
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        if not self._loop.is_running():
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
            if len(head) > MAX_HEADER:
                raise ValueError("header too large")
            await self._forward(head, reader, writer)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            with contextlib.suppress(OSError):
                writer.write(_reply("400 Bad Request"))
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def _forward(self, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host, port = host.strip("[]"), int(port_text)
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                writer.write(_reply("400 Bad Request"))
                return
            host, port = url.hostname, url.port or 80
        if not self.allows(host, port):
            self.denied.append(f"{host}:{port}")
            log.info("proxy: denied %s %s:%s", method, host, port)
            writer.write(_reply("403 Forbidden"))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (TimeoutError, OSError):
            writer.write(_reply("502 Bad Gateway"))
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            kept = [h for h in header_lines if h and h.split(":", 1)[0].strip().lower()
                    not in ("proxy-connection", "proxy-authorization", "connection", "keep-alive")]
            # One request per connection: the next request may be for another host.
            lines = [f"{method} {path} {version}", *kept, "Connection: close", "", ""]
            up_writer.write("\r\n".join(lines).encode("latin-1"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
