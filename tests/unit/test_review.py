"""`python -m components.review`: the steps a stack would push, written out with no cloud access."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import DEFAULT_CONFIG, ROOT, Recording, parse_bundle


def test_review_writes_exactly_the_scripts_and_files_the_program_pushes(graph: Recording, tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.test.yaml"
    settings = {f"matrix-stack:{k}": v for k, v in DEFAULT_CONFIG.items() if k != "certbotCloudflareToken"}
    stack_file.write_text(yaml.safe_dump({"config": settings}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "components.review", str(out), "--stack-config", str(stack_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    commands = graph.commands()
    assert sorted(p.name for p in out.iterdir()) == sorted(c.name for c in commands)
    for command in commands:
        files, script = parse_bundle(command.inputs["stdin"])
        step = out / command.name
        assert (step / "script.sh").read_text() + "\n" == script, command.name  # the bundle adds a line break
        written = {str(p.relative_to(step / "files")) for p in (step / "files").rglob("*") if p.is_file()}
        assert written == {f.path.lstrip("/") for f in files}, command.name
    # Secrets are placeholders; nothing of the certbot token or any generated value is in the output.
    homeserver = (out / "synapse-config/files/etc/matrix-synapse/homeserver.yaml").read_text()
    assert "<secret:macaroon_secret>" in homeserver
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert DEFAULT_CONFIG["certbotCloudflareToken"] not in everything
