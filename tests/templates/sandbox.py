"""Run a real step bundle as root in a throwaway mount and network namespace.

/etc and /var/lib become overlays over the host's (writes vanish with the namespace), and any
extra directories become empty tmpfs, so a step can really write its files and run its script
without touching this machine. Used where a script's behaviour (not just its syntax) is tested.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

_SETUP = r"""
set -euo pipefail
scratch=$1
shift
mount -t tmpfs tmpfs "$scratch"
for d in etc var/lib; do
  mkdir -p "$scratch/$d-upper" "$scratch/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d-upper,workdir=$scratch/$d-work" "/$d"
done
for d in {tmpfs}; do
  mount -t tmpfs tmpfs "$d"
done
[ "$(findmnt -n -o FSTYPE /etc)" = overlay ] && [ "$(findmnt -n -o FSTYPE /var/lib)" = overlay ] \
  || {{ echo "sandbox mounts missing" >&2; exit 99; }}
ip link set lo up
exec bash "$@"
"""


def run_in_sandbox(tmp: Path, driver: str, args: Sequence[str], tmpfs: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run `driver` (bash text) with `args` inside the sandbox; its files live under `tmp`."""
    assert os.geteuid() == 0, "the sandbox needs root (mount namespaces)"
    (tmp / "ns").mkdir(exist_ok=True)
    (tmp / "sandbox.sh").write_text(_SETUP.replace("{tmpfs}", " ".join(tmpfs)).replace("{{", "{").replace("}}", "}"))
    (tmp / "driver.sh").write_text(driver)
    command = ["unshare", "--mount", "--net", "--propagation", "private", "--",
               "bash", str(tmp / "sandbox.sh"), str(tmp / "ns"), str(tmp / "driver.sh"), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


_BUNDLES_DRIVER = r"""
set -uo pipefail
work=$1
shift
{setup}
export PATH="$work/bin:$PATH" STUB_LOG="$work/calls"
i=0
for bundle in "$@"; do
  i=$((i + 1))
  echo "--- bundle $i" >> "$work/calls"
  bash "$bundle" > "$work/out.$i" 2>&1
  echo $? > "$work/rc.$i"
  cp {kept} "$work/kept.$i"
done
"""


def run_bundles_in_sandbox(tmp: Path, setup: str, bundles: Sequence[Path], kept: str,
                           tmpfs: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run step bundles one after another in one sandbox, as successive deploys would, after the bash `setup`.

    Bundle i leaves its output in tmp/out.i, its exit status in tmp/rc.i and a copy of the file `kept` (the
    live file the bundles write) in tmp/kept.i; a `bin` directory under tmp comes first on PATH (stubs log to
    tmp/calls, where each bundle's start is marked `--- bundle i`)."""
    driver = _BUNDLES_DRIVER.replace("{setup}", setup).replace("{kept}", shlex.quote(kept))
    return run_in_sandbox(tmp, driver, [str(tmp), *map(str, bundles)], tmpfs=tmpfs)
