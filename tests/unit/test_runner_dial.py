"""The e2e runner dials as pulumi-command does: a connection the ssh client could not make (refused while sshd
re-executes itself on a reload) is tried again up to the connection's dialErrorLimit; a command that ran and
failed is never run twice. A stand-in `ssh` on PATH plays the client (no host needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e import runner
from tests.harness import Registration

REFUSED = "ssh: connect to host 198.18.1.2 port 22: Connection refused"


def step(dial_error_limit: int) -> Registration:
    inputs = {"create": "true", "stdin": "", "connection": {"host": "198.18.1.2", "dialErrorLimit": dial_error_limit}}
    return Registration(urn="urn:x::command:remote:Command::s", id="s", type="command:remote:Command", name="s",
                        parent="", custom=True, raw_inputs=inputs, dependencies=[], property_dependencies={},
                        protect=False, ignore_changes=[], replace_on_changes=[], additional_secret_outputs=[],
                        delete_before_replace=False, retain_on_delete=False, import_id="", custom_timeouts={},
                        raw_outputs={})


def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, then: str) -> Path:
    """`ssh` that fails to connect `failures` times, then runs `then` (shell); counts its calls."""
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "ssh"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/bash
n=$(( $(cat {calls} 2>/dev/null || echo 0) + 1 )); echo $n > {calls}
if [ $n -le {failures} ]; then echo '{REFUSED}' >&2; exit 255; fi
{then}
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setattr("tests.e2e.runner.time.sleep", lambda _: None)
    return calls


def test_a_refused_connection_is_dialled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_ssh(tmp_path, monkeypatch, failures=3, then="echo ran; exit 0")
    result = runner.run_step(step(10), tmp_path / "key")
    assert (result.returncode, result.stdout, calls.read_text().strip()) == (0, "ran\n", "4")


def test_dialling_stops_at_the_connections_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_ssh(tmp_path, monkeypatch, failures=99, then="exit 0")
    result = runner.run_step(step(2), tmp_path / "key")
    assert (result.returncode, calls.read_text().strip()) == (255, "3")
    assert REFUSED in result.stderr


def test_a_command_that_ran_and_failed_is_not_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_ssh(tmp_path, monkeypatch, failures=0, then="echo '[matrix-stack:s] step output' >&2; exit 255")
    result = runner.run_step(step(10), tmp_path / "key")
    assert (result.returncode, calls.read_text().strip()) == (255, "1")
