"""Boot a root filesystem with systemd-nspawn in a given network namespace, rebooting on request.

The host has no systemd and no dbus, hence --register=no --keep-unit. nspawn exits with 133 when the
guest reboots, so a supervisor thread starts it again; any other exit ends the loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from ._proc import pids_matching, stop_popen, terminate
from .limits import Limits

NSPAWN = "/usr/bin/systemd-nspawn"
REBOOT_EXIT = 133


def nspawn_argv(root: Path, name: str, netns: str, binds: list[str]) -> list[str]:
    """The nspawn command line; the flags are the ones verified on a systemd-less, cgroup-v1 host."""
    return [
        NSPAWN, "-b", "-D", str(root), f"--machine={name}",
        f"--network-namespace-path=/run/netns/{netns}", "--capability=CAP_NET_ADMIN",
        "--register=no", "--keep-unit", "--resolv-conf=off", "--timezone=off",
        "--console=passive", *(f"--bind={b}" for b in binds),
    ]


class Machine:
    """One nspawn container; `boots` counts guest starts so callers can tell a reboot happened."""

    def __init__(self, root: Path, name: str, netns: str, binds: list[str], log: Path,
                 limits: Limits | None = None) -> None:
        self.argv = nspawn_argv(root, name, netns, binds)
        self.limits = limits
        self.name = name
        self.log = log
        self.boots = 0
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"nspawn-{self.name}")
        self._thread.start()

    def _loop(self) -> None:
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        while not self._stopping.is_set():
            with self._lock, open(self.log, "ab") as log:
                if self._stopping.is_set():
                    break
                self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True,
                                              preexec_fn=self.limits.join if self.limits else None)
                self.boots += 1
            code = self._proc.wait()
            self.exit_codes.append(code)
            if code != REBOOT_EXIT:
                break

    def stop(self, timeout: float = 60) -> None:
        """Power the guest off (SIGTERM makes nspawn ask systemd to shut down), kill if it hangs."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            stop_popen(proc, grace=timeout)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        remove_runtime_dirs(self.name)

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the guest to power off by itself; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()


def remove_runtime_dirs(name: str) -> None:
    """nspawn leaves per-machine directories under /run/systemd/nspawn; remove ours."""
    for sub in ("propagate", "unix-export", "incoming"):
        shutil.rmtree(f"/run/systemd/nspawn/{sub}/{name}", ignore_errors=True)


def kill_leftovers(name: str, timeout: float = 30) -> None:
    """Stop nspawn processes of machine `name` left by a crashed run (matched by exact argv)."""
    for pid in pids_matching(lambda argv: argv[0] == NSPAWN and f"--machine={name}" in argv):
        terminate(pid, grace=timeout)
    remove_runtime_dirs(name)


def leftover_pids(name: str) -> list[int]:
    return pids_matching(lambda argv: argv[0] == NSPAWN and f"--machine={name}" in argv)
