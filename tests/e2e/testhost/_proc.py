"""Bounded subprocess and polling helpers, so no step of the test host can hang forever."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    input_: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with a timeout; raise with its stderr on failure so errors are readable."""
    proc = subprocess.run(
        list(argv), input=input_, capture_output=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return proc


def wait_until(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Poll `probe` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cmdline(pid: int) -> list[str]:
    """The argv of a running process, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pids_matching(pred: Callable[[list[str]], bool]) -> list[int]:
    """PIDs whose argv satisfies `pred`: finds our own leftovers after a crash, by exact argv."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = cmdline(int(entry.name))
            if argv and pred(argv):
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def terminate(pid: int, grace: float = 10, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to one process, then SIGKILL it if it is still there after `grace` seconds."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return


def stop_popen(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Stop a child we started and reap it, bounded."""
    if proc.poll() is None:
        terminate(proc.pid, grace)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
