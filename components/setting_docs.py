"""Pulumi.yaml and the docs' settings page, made from the settings table (setting_table.py).

    python -m components.setting_docs           rewrite Pulumi.yaml and docs/settings.md
    python -m components.setting_docs --check   exit 1 when either differs from what it would write

Pulumi.yaml gets the project's `config` block (each setting's type, description, default and secret flag,
as Pulumi's project schema describes them) and the `template` section `pulumi new` reads: the settings it
asks a new stack for, the providers' tokens among them. A list of objects (users, invitations) carries no `type`
(the schema has none for objects). Nor does a setting `pulumi new` asks for when it is a list: `pulumi new` stores
an answer as text, and the CLI checks a stack's value against a declared type (pulumi/pulumi #10832), so the
program reads such a list from a JSON list or from comma-separated text instead (settings.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from components.setting_table import PROVIDER_QUESTIONS, SETTINGS, Setting

ROOT = Path(__file__).resolve().parent.parent
PULUMI_YAML = ROOT / "Pulumi.yaml"
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
HEADER: dict[str, Any] = {
    "name": "matrix-stack",
    "description": "A private, federating Matrix server (Synapse, PostgreSQL, Element, coturn, nginx, certbot) on "
                   "DigitalOcean behind Cloudflare",
    "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}},
}
QUICKSTART = ("Next: `pulumi up` (about ten minutes), then `pulumi stack output elementUrl` and `pulumi stack output "
              "adminPassword --show-secrets` to sign in to Element as the admin. Every other setting is in "
              "docs/settings.md; keep the project name matrix-stack.")
GENERATED = "# Made by `python -m components.setting_docs` from components/setting_table.py: edit that table, not this file.\n"


def config_declaration(setting: Setting) -> dict[str, Any]:
    """One setting as Pulumi.yaml's config block declares it."""
    declared: dict[str, Any] = {}
    if setting.kind != "objects" and not (setting.kind == "array" and setting.ask):
        declared["type"] = setting.kind
        if setting.kind == "array":
            declared["items"] = {"type": "string"}
    declared["description"] = setting.description
    if setting.secret:
        declared["secret"] = True
    # An untyped default would be typed by the CLI from its value ([]: an array of no declared items); the
    # program's loader applies a list of objects' default instead.
    if not setting.required and setting.kind != "objects":
        declared["default"] = setting.default
    return declared


def template_section() -> dict[str, Any]:
    questions: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.ask:
            questions[setting.key] = {"description": setting.ask, **({"secret": True} if setting.secret else {})}
    for key, question in PROVIDER_QUESTIONS.items():
        questions[key] = {"description": question, "secret": True}
    return {"description": HEADER["description"], "quickstart": QUICKSTART, "config": questions}


def pulumi_yaml() -> str:
    document = {**HEADER, "config": {s.key: config_declaration(s) for s in SETTINGS}, "template": template_section()}
    return GENERATED + yaml.safe_dump(document, sort_keys=False, width=10_000, allow_unicode=True)


def _shown_default(setting: Setting) -> str:
    if setting.required:
        return "required"
    if setting.default in ("", []):
        return "empty"
    return f"`{json.dumps(setting.default) if not isinstance(setting.default, str) else setting.default}`"


def settings_page() -> str:
    """docs/settings.md: every setting, as the table declares it."""
    rows = [f"| `{s.key}` | {'secret' if s.secret else s.kind} | {_shown_default(s)} | {s.description} |"
            for s in SETTINGS]
    return "\n".join([
        "# Settings",
        "",
        "Every setting of the stack, for anyone configuring one. Set them with `pulumi config set <key> <value>`",
        "(lists: `pulumi config set --path '<key>[0]' <value>`, or one comma-separated string; secrets:",
        "`--secret`). Every value is checked before any resource is created; a bad one stops the program with one",
        "line naming the key, the value and what is allowed, and an unknown key (a typo) is refused too.",
        "",
        "This page is made from `components/setting_table.py` by `python -m components.setting_docs`, like",
        "Pulumi.yaml's `config` block; a test fails when either differs from the table.",
        "",
        "| key | type | default | what it does |",
        "|---|---|---|---|",
        *rows,
        "",
        "The providers' own settings: `digitalocean:token` (or `DIGITALOCEAN_TOKEN`), `cloudflare:apiToken` (or",
        "`CLOUDFLARE_API_TOKEN`; or `cloudflare:apiKey` with `cloudflare:email`), and with `mediaStorage: spaces`",
        "`digitalocean:spacesAccessId` and `digitalocean:spacesSecretKey` (or `SPACES_ACCESS_KEY_ID` and",
        "`SPACES_SECRET_ACCESS_KEY`).",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args()
    stale = [path for path, text in ((PULUMI_YAML, pulumi_yaml()), (SETTINGS_PAGE, settings_page()))
             if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from the settings table: run python -m components.setting_docs")
        return 1 if stale else 0
    SETTINGS_PAGE.parent.mkdir(exist_ok=True)
    PULUMI_YAML.write_text(pulumi_yaml())
    SETTINGS_PAGE.write_text(settings_page())
    return 0


if __name__ == "__main__":
    sys.exit(main())
