"""One source for every setting (components/setting_table.py): the loader, Pulumi.yaml's config block and
template section, and the docs' settings page are all made from it, and what `pulumi new` stores works."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from pulumi.automation._project_settings import ProjectTemplate

from components import setting_docs
from components.setting_table import PROVIDER_QUESTIONS, SETTINGS
from components.settings import ALL_KEYS, DEFAULTS, REQUIRED, Settings, field_name, load
from tests.harness import DEFAULT_CONFIG, config_strings

# What Pulumi's project schema allows in a config declaration and in a template's config value
# (pulumi/pulumi sdk/go/common/workspace/project.json; the template's, as the Python SDK's
# pulumi.automation ProjectTemplateConfigValue reads it).
DECLARATION_KEYS = {"type", "description", "secret", "default", "items"}
TYPES = {"string", "integer", "boolean", "array"}
TEMPLATE_VALUE_KEYS = {"description", "default", "secret"}


def raw(**changes: object) -> dict[str, str]:
    plain = {k.split(":", 1)[1]: v for k, v in config_strings({**DEFAULT_CONFIG}).items()}
    return {**plain, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()}}


def test_pulumi_yaml_and_the_settings_page_are_what_the_table_makes() -> None:
    """Edited by hand, or the table changed without regenerating: `python -m components.setting_docs` fixes it."""
    assert setting_docs.PULUMI_YAML.read_text() == setting_docs.pulumi_yaml()
    assert setting_docs.SETTINGS_PAGE.read_text() == setting_docs.settings_page()


def test_the_config_block_is_what_pulumis_project_schema_accepts_and_matches_the_loader() -> None:
    project = yaml.safe_load(setting_docs.PULUMI_YAML.read_text())
    declared = project["config"]
    assert list(declared) == list(ALL_KEYS)
    for key, declaration in declared.items():
        assert set(declaration) <= DECLARATION_KEYS and declaration["description"], key
        if "type" in declaration:
            assert declaration["type"] in TYPES, key
            assert (declaration["type"] == "array") == ("items" in declaration), key  # arrays must say their items
        objects = next(s for s in SETTINGS if s.key == key).kind == "objects"
        assert ("default" in declaration) == (key not in REQUIRED and not objects), key
        if key in DEFAULTS and not objects:
            assert declaration["default"] == DEFAULTS[key], key


def test_pulumi_new_asks_a_new_stack_for_every_required_setting_and_the_providers_tokens() -> None:
    template = ProjectTemplate.from_dict(yaml.safe_load(setting_docs.PULUMI_YAML.read_text())["template"])
    assert template.description and template.quickstart
    raw_template = yaml.safe_load(setting_docs.PULUMI_YAML.read_text())["template"]
    for value in raw_template["config"].values():
        assert set(value) <= TEMPLATE_VALUE_KEYS and value["description"]
    assert set(REQUIRED) | set(PROVIDER_QUESTIONS) == set(template.config)
    secrets = {key for key, value in template.config.items() if value.secret}
    assert secrets == {s.key for s in SETTINGS if s.secret and s.key in REQUIRED} | set(PROVIDER_QUESTIONS)


def test_what_pulumi_new_stores_for_a_list_is_read_as_the_list() -> None:
    """`pulumi new` stores every answer as text: a list it asked for is one comma-separated string, which the
    config block leaves untyped (so the CLI does not refuse it) and the loader splits."""
    settings = load(raw(sshAllowedCidrs="203.0.113.7/32, 2001:db8::/48"))[0]
    assert settings.ssh_allowed_cidrs == ("203.0.113.7/32", "2001:db8::/48")
    assert load(raw(sshAllowedCidrs=["203.0.113.7/32"]))[0].ssh_allowed_cidrs == ("203.0.113.7/32",)
    untyped = yaml.safe_load(setting_docs.PULUMI_YAML.read_text())["config"]["sshAllowedCidrs"]
    assert "type" not in untyped
    with pytest.raises(Exception, match="sshAllowedCidrs\\[1\\]"):
        load(raw(sshAllowedCidrs="203.0.113.7/32, not-a-cidr"))


def test_every_setting_is_a_field_of_the_settings_and_nothing_else_is_declared() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == {field_name(s.key) for s in SETTINGS if not s.secret} | {"stack", "tuning"}


def test_the_settings_page_lists_every_setting_with_its_default() -> None:
    page = setting_docs.SETTINGS_PAGE.read_text()
    for setting in SETTINGS:
        (row,) = [line for line in page.splitlines() if line.startswith(f"| `{setting.key}` |")]
        assert setting.description in row
        assert ("required" in row) == setting.required
