"""The admin-user step: its files, and its script run against a real Synapse (build/synapse-venv, SQLite)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import paths
from components.remote import StepSpec
from components.render import render
from components.services import admin
from tests.templates.conftest import FAKE_SECRETS, make_context
from tests.templates.homeserver import SYNAPSE_VENV, login, register, running_synapse


def _step(**config: str) -> StepSpec:
    (step,) = admin.steps(make_context(**config))
    return step


def test_files_hold_credentials_with_tight_modes() -> None:
    step = _step(adminUser="boss")
    assert step.name == "admin-user"
    files = {f.path: f for f in step.files}
    assert set(files) == {paths.ADMIN_CREDENTIALS, admin.ADMIN_PASSWORD_FILE}
    for f in files.values():
        assert (f.mode, f.owner, f.group) == ("0600", "root", "root")
    assert str(files[admin.ADMIN_PASSWORD_FILE].content).strip() == FAKE_SECRETS["admin_password"]
    # The credentials file is shell-sourceable and says exactly who and what.
    env = subprocess.run(
        [
            "bash",
            "-c",
            'set -eu; source /dev/stdin; printf "%s\\n" "$ADMIN_USER" "$ADMIN_USER_ID" "$ADMIN_PASSWORD" "$HOMESERVER_URL"',
        ],
        input=str(files[paths.ADMIN_CREDENTIALS].content),
        capture_output=True,
        text=True,
        check=True,
    )
    assert env.stdout.splitlines() == ["boss", "@boss:example.org", FAKE_SECRETS["admin_password"], "https://matrix.example.org"]


def test_script_holds_no_secret_and_takes_the_password_from_a_file() -> None:
    step = _step()
    for secret in FAKE_SECRETS.values():
        assert secret.strip() not in step.script
    # The password reaches register_new_matrix_user only as a file, never as an argument.
    assert "--password-file" in step.script and " -p " not in step.script and "--password " not in step.script


# --- the script against a real Synapse ---------------------------------------------------------


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    with running_synapse(tmp_path_factory.mktemp("synapse")) as running:
        yield running


def _run(tmp: Path, config: Path, base_url: str, localpart: str, password: str) -> subprocess.CompletedProcess[str]:
    """Run the real user.sh.j2 (with a minimal ms_log) against the test homeserver."""
    password_file = tmp / "admin-password"
    password_file.write_text(render("admin/password.j2", password=password))
    script = render(
        "admin/user.sh.j2",
        venv=str(SYNAPSE_VENV),
        config=str(config),
        localpart=localpart,
        user_id=f"@{localpart}:example.org",
        password_file=str(password_file),
        marker=str(tmp / "state" / "admin-verified"),
        base_url=base_url,
        health_timeout=10,
    )
    prelude = 'ms_log() { printf "[log] %s\\n" "$*" >&2; }\n'
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + prelude + script],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert password not in result.stdout + result.stderr
    return result


def _logs_in(base_url: str, localpart: str, password: str) -> bool:
    status, _ = login(base_url, localpart, password)
    assert status in (200, 403), status
    return status == 200


def test_admin_user_created_once_and_verified(homeserver: tuple[Path, str], tmp_path: Path) -> None:
    config, base_url = homeserver
    password = "first-Admin-pass-123"
    marker = tmp_path / "state" / "admin-verified"
    first = _run(tmp_path, config, base_url, "admin", password)
    assert first.returncode == 0, first.stderr
    assert "created the admin user @admin:example.org" in first.stderr
    assert "password works, account is a server admin" in first.stderr
    assert marker.stat().st_mode & 0o777 == 0o600

    again = _run(tmp_path, config, base_url, "admin", password)
    assert again.returncode == 0, again.stderr
    assert "verified before" in again.stderr and "created" not in again.stderr

    marker.unlink()  # e.g. a volume from before the marker: check by logging in
    checked = _run(tmp_path, config, base_url, "admin", password)
    assert checked.returncode == 0, checked.stderr
    assert "checking that the stack's adminPassword works" in checked.stderr and "password works" in checked.stderr

    marker.unlink()  # nothing remembered and the password does not work: changed by hand, left alone
    wrong = _run(tmp_path, config, base_url, "admin", "another-password-456")
    assert wrong.returncode != 0
    assert "exists but the stack's adminPassword does not log in" in wrong.stderr
    assert not marker.exists()
    assert _logs_in(base_url, "admin", password) and not _logs_in(base_url, "admin", "another-password-456")

    # The account was left alone: the original password still works.
    ok = _run(tmp_path, config, base_url, "admin", password)
    assert ok.returncode == 0, ok.stderr


def test_a_new_stack_life_sets_its_own_admin_password(homeserver: tuple[Path, str], tmp_path: Path) -> None:
    """A kept volume adopted by a new stack: the remembered password is another stack's, so the step
    sets the account's password to this stack's (the old one stops working) and remembers the new one."""
    config, base_url = homeserver
    old, new = "old-stack-Admin-pass-1", "new-stack-Admin-pass-2"
    assert _run(tmp_path, config, base_url, "adopted", old).returncode == 0
    adopted = _run(tmp_path, config, base_url, "adopted", new)
    assert adopted.returncode == 0, adopted.stderr
    assert "password an earlier stack gave it" in adopted.stderr and "password works" in adopted.stderr
    assert _logs_in(base_url, "adopted", new) and not _logs_in(base_url, "adopted", old)
    again = _run(tmp_path, config, base_url, "adopted", new)
    assert again.returncode == 0 and "verified before" in again.stderr, again.stderr


def test_existing_non_admin_account_is_refused(homeserver: tuple[Path, str], tmp_path: Path) -> None:
    config, base_url = homeserver
    register(config, base_url, "bob", "bob-password-789", tmp_path)
    result = _run(tmp_path, config, base_url, "bob", "bob-password-789")
    assert result.returncode != 0
    assert "exists but is not a server admin" in result.stderr
