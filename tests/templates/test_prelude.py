"""The shared prelude's file handling, run for real: a config the real tool rejects never stays on disk."""

from __future__ import annotations

from pathlib import Path

from components.remote import RemoteFile, StepSpec, bundle_text
from tests.templates.sandbox import run_in_sandbox

DRIVER = r"""
set -uo pipefail
work=$1
shift
i=0
for bundle in "$@"; do
  i=$((i + 1))
  bash "$bundle" > "$work/out.$i" 2>&1
  echo $? > "$work/rc.$i"
  cat /etc/ms-test/app.conf > "$work/conf.$i" 2>/dev/null || echo ABSENT > "$work/conf.$i"
  cat /etc/ms-test/new.conf > "$work/new.$i" 2>/dev/null || echo ABSENT > "$work/new.$i"
  ls -A /etc/ms-test > "$work/ls.$i" 2>/dev/null || true
done
"""

# The "real tool" here accepts a config unless it says REJECT, as `nginx -t` or Synapse would.
CHECK = 'accepts() { ! grep -q REJECT /etc/ms-test/app.conf; }\nms_validated accepts || exit 3\n'


def _bundle(app: str, new: str | None = None) -> str:
    files = [RemoteFile("/etc/ms-test/app.conf", app)] + ([RemoteFile("/etc/ms-test/new.conf", new)] if new else [])
    spec = StepSpec(name="test-validated", script=CHECK, files=files)
    return bundle_text(spec, [str(f.content) for f in files])


def test_a_rejected_config_is_replaced_by_the_previous_one_and_a_new_file_removed(tmp_path: Path) -> None:
    bundles = [_bundle("good 1\n"), _bundle("REJECT 2\n", new="extra\n"), _bundle("good 3\n")]
    paths = []
    for i, text in enumerate(bundles, 1):
        (tmp_path / f"b{i}.sh").write_text(text)
        paths.append(str(tmp_path / f"b{i}.sh"))
    proc = run_in_sandbox(tmp_path, DRIVER, [str(tmp_path), *paths])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    read = {k: [(tmp_path / f"{k}.{i}").read_text() for i in (1, 2, 3)] for k in ("rc", "conf", "new", "ls", "out")}

    assert read["rc"][0].strip() == "0" and read["conf"][0] == "good 1\n"
    assert read["rc"][1].strip() == "3", read["out"][1]
    assert read["conf"][1] == "good 1\n", "the rejected config stayed on disk"
    assert read["new"][1] == "ABSENT\n", "the rejected new file stayed on disk"
    assert "restored the previous /etc/ms-test/app.conf" in read["out"][1]
    assert read["ls"][1].split() == ["app.conf"]  # no backup copy left behind
    assert read["rc"][2].strip() == "0" and read["conf"][2] == "good 3\n"
    assert read["ls"][2].split() == ["app.conf"]
