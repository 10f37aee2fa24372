"""The one jinja2 environment every template is rendered with.

StrictUndefined turns a missing variable into an error instead of an empty string, and the
quoting filters make every value interpolated into YAML, JSON or shell safe whatever it holds.
"""

from __future__ import annotations

import json
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _tojson(value: Any) -> str:
    """JSON is valid YAML, so one filter quotes values for both formats."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _shquote(value: Any) -> str:
    return shlex.quote(str(value))


def _nginx_quote(value: Any) -> str:
    """A double-quoted nginx string; refuses characters that could end the directive."""
    text = str(value)
    if any(c in text for c in '"\\;{}\n\r$'):
        raise ValueError(f"value {text!r} cannot be placed in an nginx config")
    return f'"{text}"'


def _conf_value(value: Any) -> str:
    """A key=value config line value (coturn); refuses anything that would break the line."""
    text = str(value)
    if any(c in text for c in "\n\r#") or text != text.strip():
        raise ValueError(f"value {text!r} cannot be placed in a key=value config line")
    return text


def _pgpass_field(value: Any) -> str:
    """One field of a libpq password file: ':' and '\\' escaped; a line break cannot be stored."""
    text = str(value)
    if any(c in text for c in "\n\r"):
        raise ValueError("a value with a line break cannot be placed in a password file")
    return text.replace("\\", "\\\\").replace(":", "\\:")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.filters["shquote"] = _shquote
    env.filters["nginxq"] = _nginx_quote
    env.filters["confval"] = _conf_value
    env.filters["pgpass"] = _pgpass_field
    return env


def render(template: str, **context: Any) -> str:
    """Render `templates/<template>` (e.g. `synapse/homeserver.yaml.j2`) with `context`."""
    return environment().get_template(template).render(**context)


def read(template: str) -> str:
    """A template file's raw text, for files that need no rendering (plain scripts)."""
    return (TEMPLATES / template).read_text()
