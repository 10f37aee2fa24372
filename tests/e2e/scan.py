"""A small bounded port scanner and STUN probe (stdlib only: it also runs in the outsider namespace).

    python tests/e2e/scan.py tcp ADDRESS [--timeout S] [--concurrency N]   -> {"open": [...], "seconds": ...}
    python tests/e2e/scan.py udp ADDRESS PORT [--timeout S]                -> {"answer": ..., ...}

The TCP scan makes one connect attempt per port (1-65535), at most `concurrency` at a time, each
given up after `timeout` seconds: it ends by itself. Only test addresses (198.18.0.0/15) are allowed.
"""

from __future__ import annotations

import argparse
import collections
import errno
import ipaddress
import json
import os
import resource
import select
import socket
import struct
import sys
import time

TEST_NET = ipaddress.ip_network("198.18.0.0/15")
STUN_MAGIC = 0x2112A442
STUN_BINDING_REQUEST = 0x0001
STUN_BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020


def _check_target(address: str) -> None:
    if ipaddress.ip_address(address) not in TEST_NET:
        raise SystemExit(f"refusing to probe {address}: not a test address in {TEST_NET}")


def tcp_scan(address: str, timeout: float, concurrency: int, ports: range) -> dict[str, object]:
    """Non-blocking connects driven by epoll: at most `concurrency` in flight, each `timeout` long.

    Readiness is collected before deadlines are enforced, so a slow loop never turns an answered
    connect into "filtered".
    """
    states: dict[int, str] = {}
    pending = iter(ports)
    in_flight: dict[int, tuple[socket.socket, int, float]] = {}  # fd -> (socket, port, deadline)
    order: collections.deque[tuple[int, int]] = collections.deque()  # (fd, port) in deadline order
    poller = select.epoll()
    started = time.monotonic()
    exhausted = False

    def finish(fd: int, state: str) -> None:
        sock, port, _ = in_flight.pop(fd)
        states[port] = state
        poller.unregister(fd)
        sock.close()

    try:
        while True:
            while not exhausted and len(in_flight) < concurrency:
                port = next(pending, None)
                if port is None:
                    exhausted = True
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((address, port))
                if err not in (0, errno.EINPROGRESS):
                    states[port] = "refused" if err == errno.ECONNREFUSED else "error"
                    sock.close()
                    continue
                in_flight[sock.fileno()] = (sock, port, time.monotonic() + timeout)
                order.append((sock.fileno(), port))
                poller.register(sock.fileno(), select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
            if not in_flight:
                break
            for fd, _ in poller.poll(0.05):
                if fd in in_flight:
                    err = in_flight[fd][0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    finish(fd, "open" if err == 0 else "refused" if err == errno.ECONNREFUSED else "error")
            now = time.monotonic()
            while order:
                fd, port = order[0]
                live = in_flight.get(fd)
                if live is not None and live[1] == port and live[2] > now:
                    break
                order.popleft()
                if live is not None and live[1] == port:
                    finish(fd, "filtered")
    finally:
        for sock, _, _ in in_flight.values():
            sock.close()
        poller.close()
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return {
        "open": sorted(p for p, s in states.items() if s == "open"),
        "refused": sorted(p for p, s in states.items() if s == "refused")[:50],
        "counts": counts,
        "seconds": round(time.monotonic() - started, 2),
    }


def stun_binding_request() -> tuple[bytes, bytes]:
    """A minimal RFC 5389 Binding Request (20-byte header, no attributes) and its transaction id."""
    transaction = os.urandom(12)
    return struct.pack("!HHI", STUN_BINDING_REQUEST, 0, STUN_MAGIC) + transaction, transaction


def parse_binding_response(data: bytes, transaction: bytes) -> dict[str, object]:
    kind, length, magic = struct.unpack("!HHI", data[:8])
    result: dict[str, object] = {
        "type": kind,
        "magic_ok": magic == STUN_MAGIC,
        "transaction_ok": data[8:20] == transaction,
        "mapped": None,
    }
    offset, end = 20, min(len(data), 20 + length)
    while offset + 4 <= end:
        attr, size = struct.unpack("!HH", data[offset : offset + 4])
        value = data[offset + 4 : offset + 4 + size]
        if attr == XOR_MAPPED_ADDRESS and len(value) >= 8 and value[1] == 1:
            port = struct.unpack("!H", value[2:4])[0] ^ (STUN_MAGIC >> 16)
            raw = struct.unpack("!I", value[4:8])[0] ^ STUN_MAGIC
            result["mapped"] = f"{ipaddress.IPv4Address(raw)}:{port}"
        offset += 4 + size + (-size % 4)
    return result


def udp_probe(address: str, port: int, timeout: float, tries: int = 3) -> dict[str, object]:
    """Send a STUN Binding Request (up to `tries` times) and report the answer, ICMP refusal or silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        for _ in range(tries):
            packet, transaction = stun_binding_request()
            sock.send(packet)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                return {"answer": "refused"}
            return {"answer": "stun", **parse_binding_response(data, transaction), "source": sock.getsockname()[0]}
    return {"answer": "none"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["tcp", "udp"])
    parser.add_argument("address")
    parser.add_argument("port", nargs="?", type=int)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2000)
    args = parser.parse_args()
    _check_target(args.address)
    if args.mode == "tcp":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(hard, args.concurrency + 256)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        concurrency = min(args.concurrency, wanted - 64)
        result = tcp_scan(args.address, args.timeout, concurrency, range(1, 65536))
    else:
        if args.port is None:
            parser.error("udp needs a port")
        result = udp_probe(args.address, args.port, args.timeout)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
