"""Every step's complete bundle (prelude + files + script) and every script it installs passes shellcheck."""

from __future__ import annotations

import subprocess

import pytest

from components import review
from components.remote import bundle_text
from tests.templates.conftest import make_context

CONFIGS = [
    {},
    {"federation": "off", "enableRegistration": "true", "maxUploadSizeMb": "100"},
    {
        "federation": "allowlist",
        "federationAllowlist": '["matrix.org"]',
        "enableUrlPreviews": "true",
        "enableJemalloc": "false",
        "dropletSize": "s-4vcpu-8gb",
        "turnRelayPorts": "50000-50999",
        "sshPublicKeys": '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserOne a@b"]',
    },
    {"turnDroplet": "true"},  # the main droplet's coturn-off and the TURN droplet's own steps
    {"database": "managed"},  # postgres-managed, and the tools through matrix-stack-db
    {"mediaStorage": "spaces"},  # media-offload, and the backup's copy to the bucket
    # synapse-redis, the workers' start, check and removal, the self-check's worker section
    {"synapseWorkers": "true", "dropletSize": "s-2vcpu-4gb", "mediaStorage": "spaces"},
]


def is_script(path: str, content: str) -> bool:
    return path.endswith(".sh") or content.startswith("#!/bin/bash")


def all_steps(config: dict[str, str]) -> list[tuple[str, str]]:
    """(name, text) of every step's bundle and of every script file a step installs."""
    out = []
    for spec in review.all_steps(make_context(**config)):
        out.append((spec.name, bundle_text(spec, [str(f.content) for f in spec.files])))
        out += [(f"{spec.name}:{f.path}", str(f.content)) for f in spec.files if is_script(f.path, str(f.content))]
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "closed", "allowlist", "turn-droplet", "managed-db", "spaces-media",
                                             "workers"])
def test_every_bundle_passes_shellcheck(config: dict[str, str]) -> None:
    for name, bundle in all_steps(config):
        result = subprocess.run(
            ["shellcheck", "--shell=bash", "--severity=warning", "-"], input=bundle, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{name}:\n{result.stdout}"


def test_step_names_are_unique_and_bundles_deterministic() -> None:
    first, second = all_steps({}), all_steps({})
    names = [name for name, _ in first]
    assert len(names) == len(set(names))
    assert first == second


def test_repository_scripts_pass_shellcheck() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scripts = [root / ".ci" / "run", *sorted((root / "tests" / "tools").glob("*.sh"))]
    result = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout
