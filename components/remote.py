"""The one mechanism that turns a service's rendered files and setup script into a remote step.

A step is one `pulumi_command.remote.Command`. Its stdin carries a bash bundle: the shared
prelude, every file (base64, with mode and owner) and the step's script. The command line itself
is constant and holds nothing secret; if any file holds a secret, the whole stdin is a secret
Output (encrypted in state) and the command's output is kept secret too. The triggers are hashes
of exactly what the step uses, so an unchanged step never re-runs and a changed one replaces only
itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_command import remote

from components.render import read

# Written to a 0600 temp file and run with stdin closed, so no command inside can swallow the bundle.
RUN_BUNDLE = 'set -e; f=$(mktemp /root/.matrix-stack-step.XXXXXX); trap \'rm -f "$f"\' EXIT; cat > "$f"; bash "$f" </dev/null'

_STEP_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_MODE = re.compile(r"^0[0-7]{3}$")


@dataclass(frozen=True)
class RemoteFile:
    """A file to place on the server. `content` may be a secret Output."""

    path: str
    content: pulumi.Input[str]
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or not _MODE.match(self.mode):
            raise ValueError(f"bad remote file {self.path!r} mode {self.mode!r}")


@dataclass(frozen=True)
class StepSpec:
    """What one step does: its files, its script and the versions it installs.

    `on_delete` is a command the provider runs on the server when the engine deletes the step's
    resource (`pulumi destroy`, or before a replacement): it must be a fixed command line that
    carries no secret, e.g. a script the step installed.
    """

    name: str
    script: str
    files: Sequence[RemoteFile] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    on_delete: str = ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# base64 text never contains an underscore, so this heredoc end marker cannot occur in a file.
HEREDOC_MARKER = "MS_END_OF_FILE"


def trigger_list(spec: StepSpec, contents: Sequence[str]) -> list[str]:
    """Readable per-part hashes: a preview shows which file, script or version changed."""
    parts = [f"script={_digest(spec.script)[:16]}"]
    parts += [f"{f.path}={_digest(c)[:16]} {f.mode} {f.owner}:{f.group}" for f, c in zip(spec.files, contents)]
    parts += [f"version:{k}={v}" for k, v in sorted(spec.versions.items())]
    return parts


# Where a secret-carrying step keeps its commands' output (root only, on the server).
PRIVATE_LOG_DIR = "/var/log/matrix-stack"


def bundle_text(spec: StepSpec, contents: Sequence[str], private_output: bool = False) -> str:
    """The complete bash program a step runs; deterministic for the same inputs.

    `private_output` (a step whose files carry secrets) sends what its commands print to a root-only
    log on the server; only the step's own ms_log lines reach the `pulumi up` output.
    """
    step_hash = _digest("\n".join(trigger_list(spec, contents)))
    marker = HEREDOC_MARKER
    lines = [
        "#!/bin/bash",
        f"# matrix-stack step {spec.name}",
        "set -euo pipefail",
        "umask 022",
        f"MS_STEP={spec.name}",
        f"MS_STEP_HASH={step_hash}",
        f"MS_PRIVATE_LOG={PRIVATE_LOG_DIR}/{spec.name}.log" if private_output else "MS_PRIVATE_LOG=",
        read("remote/prelude.sh"),
    ]
    for file, content in zip(spec.files, contents):
        encoded = base64.encodebytes(content.encode()).decode()
        lines.append(f"ms_put_file {file.path} {file.mode} {file.owner} {file.group} <<'{marker}'")
        lines.append(encoded + marker)
    lines += ["# --- step script ---", spec.script, "# --- end of step script ---", "ms_step_done", ""]
    return "\n".join(lines)


def remote_step(
    spec: StepSpec,
    connection: remote.ConnectionArgs,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
    watch: Sequence[pulumi.Output[Any]] = (),
    replace_with: Sequence[pulumi.Output[Any]] | None = None,
) -> remote.Command:
    """Create the pulumi-command resource for one step, parented to its service component.

    `watch` adds other resources' triggers to this step's, so it re-runs whenever they change
    (the self-check uses it to verify every deployment that changed anything).

    `replace_with` makes the step's identity those values instead of its content: it is replaced
    (its `on_delete` runs first, delete-before-replace) only when one of them changes, while a new
    script or file is an in-place update that re-runs `create` and never runs `on_delete`. The
    volume guard uses it so that its delete command (stop and unmount) runs exactly when the
    attachment or the droplet goes, never because the guard's own script was edited.
    """
    if not _STEP_NAME.match(spec.name):
        raise ValueError(f"bad step name {spec.name!r}")
    carries_secret = any(isinstance(f.content, pulumi.Output) for f in spec.files)
    contents = pulumi.Output.all(*[f.content for f in spec.files])
    bundle = contents.apply(lambda cs: bundle_text(spec, [str(c) for c in cs], private_output=carries_secret))
    triggers = contents.apply(lambda cs: trigger_list(spec, [str(c) for c in cs]))
    if watch:
        watched = pulumi.Output.all(*watch).apply(lambda ts: f"watched={_digest(repr(ts))[:16]}")
        triggers = pulumi.Output.all(triggers, watched).apply(lambda parts: [*parts[0], parts[1]])
    if replace_with is not None:
        triggers = pulumi.Output.all(*replace_with).apply(lambda values: [str(v) for v in values])
    # Triggers are short hashes, never content: plain, so `pulumi preview --diff` names the file or
    # script that changed even in a step whose files carry secrets. A 64-bit prefix of the sha256 of a
    # file that holds a 24-64 character random secret reveals nothing of it.
    triggers = pulumi.Output.unsecret(triggers)
    return remote.Command(
        spec.name,
        connection=connection,
        create=RUN_BUNDLE,
        delete=spec.on_delete or None,
        stdin=bundle,
        triggers=triggers,
        # pulumi-command streams a step's output into the `pulumi up` log as it runs, whatever
        # additional_secret_outputs says (pulumi-command #401, hence its `logging` setting). A
        # secret-carrying step prints only its own ms_log lines, on stderr (bundle_text).
        logging=remote.Logging.STDERR if carries_secret else remote.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            additional_secret_outputs=["stdout", "stderr"] if carries_secret else [],
            custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m", delete="10m"),
            delete_before_replace=replace_with is not None,
        ),
    )
