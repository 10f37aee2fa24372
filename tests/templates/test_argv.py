"""No secret in a program's arguments (issue 26): any local user reads every running program's arguments
in /proc. Secrets reach the server only in files; a script may read one into a variable or source an
env file, and then hand it on only through an environment assignment, a redirection or a builtin.

This scans every step's bundle (its scripts, not the files it writes) and every script a step installs,
for every configuration: taint starts at the keys of secret env files a script sources and at variables
filled from a secret file; a tainted expansion in an argument of an external program is an error. The
end-to-end suite proves the same at run time, every program's argv traced (tests/e2e/test_security.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pytest

from components import review
from components.remote import StepSpec
from tests.templates.conftest import BASE_CONFIG
from tests.templates.test_bundles import CONFIGS, is_script

PLACEHOLDER = "<secret:"
# Shell builtins and keywords: they run inside bash, so their arguments never reach /proc.
BUILTINS = {
    "printf", "echo", "read", "local", "export", "declare", "typeset", "readonly", "unset", "set", "shift", "cd",
    "return", "exit", "[", "[[", "test", ":", "true", "false", "source", ".", "eval", "trap", "wait", "break",
    "continue", "let", "case", "esac", "for", "in", "done", "fi", "mapfile", "readarray", "umask", "shopt", "getopts",
    "command", "builtin", "type", "hash", "pushd", "popd", "exec",
}
KEYWORDS = {"if", "then", "elif", "else", "do", "while", "until", "!", "time", "{", "}"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
HEREDOC = re.compile(r"<<-?\s*'?\"?([A-Za-z_]+)'?\"?")


@dataclass
class Finding:
    where: str
    line: str
    variable: str


def _segments(line: str) -> list[str]:
    """A line cut into simple commands at ; & | ( ) and $( outside quotes (what a program's argv can be)."""
    out, current, quote, i = [], "", "", 0
    while i < len(line):
        c = line[i]
        if quote:
            current += c
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(line):
                current += line[i + 1]
                i += 1
        elif c in "'\"":
            quote = c
            current += c
        elif c == "\\" and i + 1 < len(line):
            current += c + line[i + 1]
            i += 1
        elif c in ";&|()`" or (c == "$" and line[i + 1:i + 2] == "("):
            out.append(current)
            current = ""
            if c == "$":
                i += 1
        else:
            current += c
        i += 1
    return [s for s in (*out, current) if s.strip()]


def _lines(text: str) -> list[str]:
    """Logical lines: continuations joined, comments and here-document bodies (data, not commands) dropped."""
    joined = text.replace("\\\n", " ")
    lines, body_end = [], ""
    for line in joined.splitlines():
        if body_end:
            if line.strip() == body_end:
                body_end = ""
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        heredoc = HEREDOC.search(line)
        if heredoc:
            body_end = heredoc.group(1)
        lines.append(line)
    return lines


def _secret_env_keys(files: dict[str, str]) -> dict[str, set[str]]:
    """For each secret env file (KEY=VALUE lines, a value a secret), the keys holding secrets."""
    found: dict[str, set[str]] = {}
    for path, content in files.items():
        keys = {m.group(1) for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)=.*" + re.escape(PLACEHOLDER), content, re.M)}
        if keys:
            found[path] = keys
    return found


def scan(where: str, text: str, secret_files: dict[str, str]) -> list[Finding]:
    env_keys = _secret_env_keys(secret_files)
    lines = _lines(text)
    functions = {m.group(1) for line in lines if (m := re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\)", line))}
    path_vars = {}  # variables naming a secret file
    for line in lines:
        for m in re.finditer(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line):
            value = m.group(2).strip("'\"")
            if value in secret_files:
                path_vars[m.group(1)] = value
    tainted: set[str] = set()
    for line in lines:
        # Sourcing a secret env file taints its secret keys.
        source = re.search(r"(?:^|\s)(?:\.|source)\s+(\S+)", line)
        if source:
            target = source.group(1).strip("'\"")
            target = path_vars.get(target.lstrip("$").strip("{}"), target)
            tainted |= env_keys.get(target, set())
        # A variable filled from a secret file (by path or by a variable naming it) is a secret.
        assigned = re.match(r"^\s*(?:local\s+)?([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)", line)
        if assigned and (any(path in assigned.group(2) for path in secret_files)
                         or any(f"${v}" in assigned.group(2) or f"${{{v}}}" in assigned.group(2) for v in path_vars)):
            tainted.add(assigned.group(1))
    findings = []
    for line in lines:
        for segment in _segments(line):
            try:
                words = shlex.split(segment, posix=True)
            except ValueError:
                words = segment.split()
            while words and (ASSIGNMENT.match(words[0]) or words[0] in KEYWORDS):
                words = words[1:]
            if not words or words[0] in BUILTINS or words[0] in functions or words[0].endswith(")"):
                continue
            for var in tainted:
                if any(f"${var}" in w or f"${{{var}}}" in w for w in words[1:]):
                    findings.append(Finding(where, line.strip(), var))
    return findings


def _scripts(spec: StepSpec) -> list[tuple[str, str]]:
    installed = [(f"{spec.name}:{f.path}", str(f.content)) for f in spec.files if is_script(f.path, str(f.content))]
    return [(spec.name, spec.script), *installed]


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "closed", "allowlist", "turn-droplet", "managed-db",
                                             "spaces-media", "workers"])
def test_no_script_hands_a_secret_to_a_program_as_an_argument(config: dict[str, str]) -> None:
    raw = {k: v for k, v in BASE_CONFIG.items() if k != "certbotCloudflareToken"}
    steps = review.all_steps(review.placeholder_context({**raw, **config}, "test"))
    secret_files = {f.path: str(f.content) for spec in steps for f in spec.files if PLACEHOLDER in str(f.content)}
    assert secret_files  # the review context marks every generated secret
    findings = [finding for spec in steps for where, text in _scripts(spec)
                for finding in scan(where, text, secret_files)]
    assert not findings, "\n".join(f"{f.where}: ${f.variable} in: {f.line}" for f in findings)
    for spec in steps:
        for where, text in _scripts(spec):
            assert PLACEHOLDER not in text, f"{where} has a secret in its script text"


def test_the_scan_finds_a_secret_in_an_argument_and_not_in_the_environment() -> None:
    """The scanner itself: the self-check's login as it was (issue 26) is found, the fixed one is not."""
    secret_files = {"/root/.matrix-stack/admin.env": "ADMIN_USER=admin\nADMIN_PASSWORD=<secret:admin_password>\n",
                    "/etc/x/redis.conf": "requirepass \"<secret:redis_password>\"\n"}
    before = ('creds=/root/.matrix-stack/admin.env\n. "$creds"\n'
              "jq -n --arg u \"$ADMIN_USER\" --arg p \"$ADMIN_PASSWORD\" \\\n  '{password: $p}' > login.json\n")
    after = ('creds=/root/.matrix-stack/admin.env\n. "$creds"\n'
             "ADMIN_PASSWORD=\"$ADMIN_PASSWORD\" jq -n --arg u \"$ADMIN_USER\" '{password: $ENV.ADMIN_PASSWORD}'\n"
             "printf '%s' \"$ADMIN_PASSWORD\" > f\n")
    assert [f.variable for f in scan("before", before, secret_files)] == ["ADMIN_PASSWORD"]
    assert scan("after", after, secret_files) == []
    redis = 'conf=/etc/x/redis.conf\npassword=$(sed -n "s/x/y/p" "$conf")\n'
    assert scan("env", redis + 'REDISCLI_AUTH="$password" redis-cli ping\n', secret_files) == []
    assert [f.variable for f in scan("argv", redis + 'redis-cli -a "$password" ping\n', secret_files)] == ["password"]
