"""Execute the program's remote steps for real, exactly as recorded under mocks.

The command provider runs each `remote.Command` by opening an SSH session to the connection's
host, writing `stdin` and running `create`. This runner does the same with the system ssh
client, in the engine's dependency order. There is no second copy of the provisioning here: the
commands, their stdin and their order all come from the program.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.harness import Recording, Registration


@dataclass
class StepResult:
    name: str
    seconds: float
    returncode: int
    stdout: str
    stderr: str


class StepFailed(RuntimeError):
    def __init__(self, result: StepResult) -> None:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-40:])
        super().__init__(f"step {result.name} exited {result.returncode}:\n{tail}")
        self.result = result


def ssh_command(host: str, key_file: Path, port: int = 22, host_key: str | None = None) -> list[str]:
    """ssh as the provider connects: the deploy key, and the pinned host key when the connection has one
    (pulumi-command verifies `host_key`; without it the host key is not checked)."""
    if host_key:
        known_hosts = key_file.with_name(f"known_hosts-{host}-{port}")
        known_hosts.write_text(f"[{host}]:{port} {host_key.strip()}\n" if port != 22 else f"{host} {host_key.strip()}\n")
        checking = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                    "-o", f"HostKeyAlgorithms={host_key.split()[0]}"]
    else:
        checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return [
        "ssh", "-p", str(port), "-i", str(key_file), "-o", "BatchMode=yes", *checking,
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
        f"root@{host}",
    ]


def connect(command: Registration, key_file: Path) -> list[str]:
    """The ssh command line for one recorded command's connection."""
    connection = command.inputs["connection"]
    return ssh_command(connection["host"], key_file, int(connection.get("port", 22)), connection.get("hostKey"))


# pulumi-command dials again when the SSH connection cannot be made (remote/connection.go: every dial error,
# up to the connection's dialErrorLimit, 10 by default, with a growing pause), and only then runs the command.
# The ssh client reports such a failure with exit 255 and one of these before anything ran on the host: e.g.
# sshd re-executing itself on a reload (base-firewall) refuses connections for a moment.
DIAL_ERRORS = ("ssh: connect to host", "kex_exchange_identification", "Connection closed by",
               "Connection reset by")
DEFAULT_DIAL_ERROR_LIMIT = 10


def _ssh(command: Registration, key_file: Path, remote: str, stdin: str | None,
         timeout: float) -> subprocess.CompletedProcess[str]:
    """One ssh session as the provider makes it: dialled again after a connection error, never after the
    command started."""
    limit = int(command.inputs["connection"].get("dialErrorLimit", DEFAULT_DIAL_ERROR_LIMIT))
    pause = 0.1
    for attempt in range(limit + 1):
        proc = subprocess.run([*connect(command, key_file), remote], input=stdin,
                              stdin=subprocess.DEVNULL if stdin is None else None,
                              capture_output=True, text=True, timeout=timeout)
        dial_failed = proc.returncode == 255 and proc.stdout == "" and \
            proc.stderr.startswith(DIAL_ERRORS) and "\n" not in proc.stderr.rstrip("\n")
        if not dial_failed or attempt == limit:
            return proc
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
    raise AssertionError("unreachable")


def run_step(command: Registration, key_file: Path, timeout: float = 1800) -> StepResult:
    """Run one recorded command the way the provider would: ssh, `create` as the command, stdin."""
    inputs = command.inputs
    if inputs.get("environment"):
        raise AssertionError(f"{command.name} uses environment, which needs AcceptEnv on the droplet")
    started = time.monotonic()
    proc = _ssh(command, key_file, inputs["create"], inputs.get("stdin", ""), timeout)
    return StepResult(command.name, time.monotonic() - started, proc.returncode, proc.stdout, proc.stderr)


def run_delete(command: Registration, key_file: Path, timeout: float = 600) -> StepResult:
    """Run a recorded command's `delete` the way the provider does when the engine deletes it (no stdin)."""
    started = time.monotonic()
    proc = _ssh(command, key_file, command.inputs["delete"], None, timeout)
    return StepResult(f"{command.name} (delete)", time.monotonic() - started, proc.returncode, proc.stdout, proc.stderr)


def deploy_key_file(recording: Recording, directory: Path) -> Path:
    """Write the deploy private key the program hands to every step (0600) and return its path."""
    private_key = recording.commands()[0].inputs["connection"]["privateKey"]
    path = directory / "deploy_key"
    path.write_text(private_key)
    path.chmod(0o600)
    return path


def run_all(
    recording: Recording,
    only: Iterable[str] | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Run every recorded step in dependency order (or just `only`); stop at the first failure."""
    wanted = set(only) if only is not None else None
    results: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="matrix-stack-runner-") as tmp:
        key = deploy_key_file(recording, Path(tmp))
        for command in recording.commands():
            if wanted is not None and command.name not in wanted:
                continue
            run_reported_step(command, key, results, on_step)
    return results


def run_reported_step(command: Registration, key_file: Path, results: list[StepResult],
                      on_step: Callable[[StepResult], None] | None) -> None:
    """Run one step, add its result to `results`, tell `on_step`; raise StepFailed if it failed."""
    result = run_step(command, key_file)
    results.append(result)
    if on_step:
        on_step(result)
    if result.returncode != 0:
        raise StepFailed(result)
