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


PRIVATE_DRIVER = r"""
set -uo pipefail
work=$1
bash "$2" > "$work/stdout" 2> "$work/stderr"
echo $? > "$work/rc"
stat -c '%a %U' /var/log/matrix-stack/test-private.log > "$work/mode"
cp /var/log/matrix-stack/test-private.log "$work/log"
"""


def test_a_secret_carrying_step_prints_only_its_own_lines_and_keeps_tool_output_private(tmp_path: Path) -> None:
    script = ('echo "password=TOOLECHOEDSECRET" >&2\necho "stdout TOOLECHOEDSECRET"\n'
              'ms_log "configured the thing"\nfalse\n')
    spec = StepSpec(name="test-private", script=script, files=[RemoteFile("/etc/ms-test/secret.conf", "x", mode="0600")])
    (tmp_path / "b.sh").write_text(bundle_text(spec, ["x"], private_output=True))
    proc = run_in_sandbox(tmp_path, PRIVATE_DRIVER, [str(tmp_path), str(tmp_path / "b.sh")], tmpfs=["/var/log"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1"
    assert "TOOLECHOEDSECRET" not in out + err
    assert "[matrix-stack:test-private] configured the thing" in err
    assert "[matrix-stack:test-private] FAILED (exit 1); what its commands printed is in " \
           "/var/log/matrix-stack/test-private.log on the server (root only)" in err
    log = (tmp_path / "log").read_text()
    assert "password=TOOLECHOEDSECRET" in log and "stdout TOOLECHOEDSECRET" in log and "configured the thing" in log
    assert (tmp_path / "mode").read_text().split() == ["600", "root"]


# A stand-in for a fresh droplet's `apt-get update` (apt-daily, cloud-init): the package lists' lock,
# the same fcntl lock apt takes, held for $2 seconds; its release time written to $work/released.
APT_LOCK_DRIVER = r"""
set -uo pipefail
work=$1 hold=$2 bundle=$3
mkdir -p /var/lib/apt/lists
python3 - "$work" "$hold" <<'PY' &
import fcntl, sys, time
work, hold = sys.argv[1], float(sys.argv[2])
with open("/var/lib/apt/lists/lock", "w") as lock:
    fcntl.lockf(lock, fcntl.LOCK_EX)
    open(f"{work}/held", "w").close()
    time.sleep(hold)
    open(f"{work}/released", "w").write(repr(time.time()))
PY
holder=$!
for _ in $(seq 100); do [ -e "$work/held" ] && break; sleep 0.1; done
bash "$bundle" > "$work/out" 2>&1
echo $? > "$work/rc"
kill "$holder" 2>/dev/null
wait
"""

# An `apt-get update` with no sources: offline, it only takes the lists' lock and rebuilds the cache.
APT_UPDATE = ("ms_apt -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/var/empty update\n"
              "python3 -c 'import time; print(repr(time.time()))' > \"$MS_TEST_WORK/finished\"\n")


def _apt_bundle(tmp_path: Path, wait: int) -> Path:
    script = f"export MS_TEST_WORK={tmp_path}\nMS_APT_LOCK_WAIT={wait}\n" + APT_UPDATE
    bundle = tmp_path / "apt.sh"
    bundle.write_text(bundle_text(StepSpec(name="test-apt", script=script, files=[]), []))
    return bundle


def test_apt_waits_for_an_update_another_apt_is_running(tmp_path: Path) -> None:
    bundle = _apt_bundle(tmp_path, wait=60)
    proc = run_in_sandbox(tmp_path, APT_LOCK_DRIVER, [str(tmp_path), "6", str(bundle)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = (tmp_path / "out").read_text()
    assert (tmp_path / "rc").read_text().strip() == "0", out
    assert "another apt is running" in out and "waiting for it" in out, out
    assert "Could not get lock" not in out, out  # the retried attempts' errors are not reported
    assert float((tmp_path / "finished").read_text()) >= float((tmp_path / "released").read_text())


def test_apt_gives_up_on_a_lock_held_past_its_wait(tmp_path: Path) -> None:
    bundle = _apt_bundle(tmp_path, wait=3)
    proc = run_in_sandbox(tmp_path, APT_LOCK_DRIVER, [str(tmp_path), "60", str(bundle)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = (tmp_path / "out").read_text()
    assert (tmp_path / "rc").read_text().strip() != "0", out
    assert "E: Could not get lock /var/lib/apt/lists/lock" in out, out
    assert not (tmp_path / "finished").exists()


ENABLE_DRIVER = r"""
set -uo pipefail
work=$1
shift
export WORK=$work PATH=$work/bin:$PATH
i=0
for step in "$@"; do
  i=$((i + 1))
  case $step in
    stop:*) rm -f "$work/active-${step#stop:}"; continue ;;
    disable:*) rm -f "$work/enabled-${step#disable:}"; continue ;;
  esac
  bash "$step" > "$work/out.$i" 2>&1
  echo $? > "$work/rc.$i"
  echo "--- run $i" >> "$work/calls"
done
"""
# systemctl as far as ms_enable uses it: enable (and --now) remembered in files, is-enabled and is-active answered.
ENABLE_SYSTEMCTL = r"""#!/bin/bash
echo "systemctl $*" >> "$WORK/calls"
unit=${!#}
case $1 in
  is-enabled) if [ -e "$WORK/enabled-$unit" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  is-active) [ -e "$WORK/active-$unit" ] ;;
  enable) touch "$WORK/enabled-$unit"; case " $* " in *" --now "*) touch "$WORK/active-$unit" ;; esac ;;
esac
"""


def _enable_bundle(content: str) -> str:
    files = [RemoteFile("/etc/ms-test/unit.conf", content)]
    spec = StepSpec(name="test-enable", script="ms_enable --now demo.service\nms_enable demo.timer\n", files=files)
    return bundle_text(spec, [content])


def test_ms_enable_skips_enabled_running_units_only_when_the_step_changed_nothing(tmp_path: Path) -> None:
    """A re-run of an unchanged step calls no `systemctl enable` (the slow part of a re-run); a changed step,
    or a unit disabled or stopped by hand since, is enabled (and started) again."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "systemctl").write_text(ENABLE_SYSTEMCTL)
    (tmp_path / "bin" / "systemctl").chmod(0o755)
    (tmp_path / "same.sh").write_text(_enable_bundle("v1\n"))
    (tmp_path / "changed.sh").write_text(_enable_bundle("v2\n"))
    same, changed = str(tmp_path / "same.sh"), str(tmp_path / "changed.sh")
    runs = [same, same, "stop:demo.service", same, "disable:demo.timer", same, changed]
    proc = run_in_sandbox(tmp_path, ENABLE_DRIVER, [str(tmp_path), *runs])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls").read_text().split("--- run ")
    enables = [[c for c in run.splitlines() if c.startswith("systemctl enable")] for run in calls[:-1]]
    for i in (1, 2, 4, 6, 7):
        assert (tmp_path / f"rc.{i}").read_text().strip() == "0", (tmp_path / f"out.{i}").read_text()
    assert enables[0] == ["systemctl enable --quiet --now demo.service", "systemctl enable --quiet demo.timer"]
    assert enables[1] == [], "an unchanged re-run enabled again"
    assert enables[2] == ["systemctl enable --quiet --now demo.service"], "a stopped unit was not started"
    assert enables[3] == ["systemctl enable --quiet demo.timer"], "a disabled unit was not enabled"
    assert enables[4] == ["systemctl enable --quiet --now demo.service", "systemctl enable --quiet demo.timer"]


# A service user's directory under /etc, as /etc/postgresql is postgres's and /etc/redis redis's: the
# user (nobody here) plants links where root's step will write, then the step runs as root.
ATTACK_DRIVER = r"""
set -uo pipefail
work=$1 attack=$2 bundle=$3 attacker=$4
install -d -m 0755 -o nobody -g nogroup /etc/ms-svc /etc/ms-svc/conf.d
install -d -m 0700 /etc/ms-root
printf 'root secret\n' > /etc/ms-root/canary
chmod 0600 /etc/ms-root/canary
printf 'old\n' > /etc/ms-svc/app.conf
chown nobody:nogroup /etc/ms-svc/app.conf
runuser -u "$attacker" -- bash -c "$attack" > "$work/attack" 2>&1
bash "$bundle" > "$work/out" 2>&1
echo $? > "$work/rc"
stat -c '%U:%G %a' /etc/ms-root/canary > "$work/canary.meta"
cat /etc/ms-root/canary > "$work/canary"
ls -A /etc/ms-root > "$work/root.ls"
find /etc/ms-svc -printf '%P %y %u\n' | sort > "$work/svc.ls"
cat /etc/ms-svc/app.conf > "$work/app" 2>/dev/null || echo ABSENT > "$work/app"
"""


def _attack(tmp_path: Path, attack: str, files: list[RemoteFile], attacker: str = "nobody") -> dict[str, str]:
    spec = StepSpec(name="test-attack", script="", files=files)
    (tmp_path / "b.sh").write_text(bundle_text(spec, [str(f.content) for f in files]))
    proc = run_in_sandbox(tmp_path, ATTACK_DRIVER, [str(tmp_path), attack, str(tmp_path / "b.sh"), attacker])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = ("rc", "out", "attack", "canary", "canary.meta", "root.ls", "svc.ls", "app")
    return {name: (tmp_path / name).read_text() for name in names}


def _root_file_untouched(seen: dict[str, str]) -> None:
    assert seen["canary"] == "root secret\n", seen["out"]
    assert seen["canary.meta"].split() == ["root:root", "600"], seen["out"]
    assert seen["root.ls"].split() == ["canary"], seen["out"]


def test_a_planted_link_for_the_previous_copy_gets_the_service_no_root_file(tmp_path: Path) -> None:
    """The attack of issue 26 on `ms_put_file`'s old `cp -p FILE FILE.ms-previous`: a link where the copy
    of the replaced file used to go. The copy is kept in a root-only place, never next to the file."""
    attack = "ln -s /etc/ms-root/canary /etc/ms-svc/app.conf.ms-previous"
    seen = _attack(tmp_path, attack, [RemoteFile("/etc/ms-svc/app.conf", "new\n", owner="nobody", group="nogroup")])
    assert seen["rc"].strip() == "0", seen["out"]
    _root_file_untouched(seen)
    assert seen["app"] == "new\n"


def test_a_planted_link_at_the_file_is_replaced_not_followed(tmp_path: Path) -> None:
    attack = "rm /etc/ms-svc/app.conf && ln -s /etc/ms-root/canary /etc/ms-svc/app.conf"
    seen = _attack(tmp_path, attack, [RemoteFile("/etc/ms-svc/app.conf", "new\n", mode="0640", owner="nobody",
                                                 group="nogroup")])
    assert seen["rc"].strip() == "0", seen["out"]
    _root_file_untouched(seen)
    assert "app.conf f nobody" in seen["svc.ls"].splitlines() and seen["app"] == "new\n"


def test_a_directory_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    """conf.d in the service's directory becomes a link to a root directory: root must not write into it
    (a file of the service's in /etc/ld.so.conf.d or /etc/modprobe.d would be root for it)."""
    attack = "mv /etc/ms-svc/conf.d /etc/ms-svc/old.d && ln -s /etc/ms-root /etc/ms-svc/conf.d"
    seen = _attack(tmp_path, attack, [RemoteFile("/etc/ms-svc/conf.d/app.conf", "new\n", owner="nobody",
                                                 group="nogroup")])
    assert seen["rc"].strip() != "0"
    assert "conf.d is a symbolic link" in seen["out"] and "refused" in seen["out"]
    _root_file_untouched(seen)


def test_a_hard_link_is_replaced_never_chowned(tmp_path: Path) -> None:
    """With fs.protected_hardlinks off a user can hard-link a root file into its directory (root makes the
    link here, as the sysctl is on): the step replaces the link with a new file of the same content
    instead of chowning and chmodding the file it shares its inode with."""
    attack = "rm /etc/ms-svc/app.conf && ln /etc/ms-root/canary /etc/ms-svc/app.conf"
    seen = _attack(tmp_path, attack, [RemoteFile("/etc/ms-svc/app.conf", "root secret\n", owner="nobody",
                                                 group="nogroup")], attacker="root")
    assert seen["rc"].strip() == "0", seen["out"]
    _root_file_untouched(seen)
