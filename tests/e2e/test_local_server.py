"""The local server (`make local-server`) works as it says: every command it prints, run as printed against
the shared deployment, answers what it should. The browser's command gets the flags a test needs to run it
without a screen (headless, as root without Chromium's sandbox, the DOM printed after Element's scripts ran).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.deployment import Deployment
from tests.e2e.local import BROWSERS, describe, instructions

pytestmark = pytest.mark.e2e
HEADLESS = ("--headless=new --no-sandbox --disable-gpu --disable-background-networking --disable-component-update "
            "--disable-sync --virtual-time-budget=20000 --dump-dom")


def test_every_command_the_local_server_prints_works_as_printed(deployment: Deployment, tmp_path: Path) -> None:
    printed = describe(deployment, tmp_path)
    for instruction in instructions(deployment, tmp_path):
        assert f"  {instruction.command}\n" in printed  # what runs here is what `up` prints
        command = instruction.command
        if command.split()[0] in BROWSERS:
            command = command.replace(" https://", f" {HEADLESS} https://")
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180)
        print(f"\n  {instruction.what}: exit {done.returncode}, {len(done.stdout)} bytes")
        assert done.returncode == 0, done.stderr[-2000:]
        assert instruction.answers in done.stdout, done.stdout[-2000:]
