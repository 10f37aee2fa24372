"""Certificates: the certbot call, the secret handling, and the real bundle + deploy hook in a sandbox.

The sandbox runs the exact step bundle as root in private mount/network namespaces (overlays over
/etc and /var/lib) with stand-ins for certbot, systemctl and nginx on PATH that record their calls,
so the decisions the script and hook make (issue, run the hook, reload, copy for coturn, restart)
are observed for real. The real `turnserver` user (Debian's coturn package) receives the copy.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import paths
from components.remote import StepSpec, bundle_text
from components.render import render
from components.services import ServiceContext, certificates
from tests.attacks import LINK_RACER
from tests.templates.conftest import BASE_CONFIG, FAKE_SECRETS, make_context
from tests.templates.sandbox import run_in_sandbox

TOKEN = BASE_CONFIG["certbotCloudflareToken"]
PEBBLE = "https://pebble.test:14000/dir"
OTHER_CA = "https://acme.other-ca.test/directory"  # another ACME CA: switching to it forces a new certificate


def _steps(ctx: ServiceContext) -> dict[str, StepSpec]:
    return {s.name: s for s in certificates.steps(ctx)}


def _certbot_call(run: dict[str, Any]) -> list[str]:
    """The first `certbot certonly` call a sandboxed run of the issue step made, as certbot received it."""
    (line, *_) = [c for c in run["calls"].splitlines() if c.startswith("certbot certonly")]
    return shlex.split(line)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"acmeServer": PEBBLE, "matrixSubdomain": "hs", "chatSubdomain": "web", "turnSubdomain": "relay"}],
)
def test_certbot_command(tmp_path: Path, overrides: dict[str, str]) -> None:
    ctx = make_context(**overrides)
    s = ctx.settings
    (run,) = _run(tmp_path, ctx, [_bundle(ctx)], active=())
    assert run["rc"] == "0", run["out"]
    args = _certbot_call(run)
    assert args[:2] == ["certbot", "certonly"]

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert "--dns-cloudflare" in args and "--standalone" not in args
    assert value("--dns-cloudflare-credentials") == paths.CERTBOT_CREDENTIALS
    assert value("--dns-cloudflare-propagation-seconds") == "10"  # the plugin's default first
    assert value("--cert-name") == s.domain
    assert [args[i + 1] for i, a in enumerate(args) if a == "-d"] == list(s.hostnames)
    assert s.hostnames == (s.domain, f"{s.matrix_subdomain}.{s.domain}", f"{s.chat_subdomain}.{s.domain}",
                           f"{s.turn_subdomain}.{s.domain}")  # fmt: skip
    assert value("--server") == s.acme_server
    assert value("-m") == s.letsencrypt_email
    for flag in ("--agree-tos", "--non-interactive", "--keep-until-expiring", "--expand"):
        assert flag in args
    assert "--force-renewal" not in args  # only when the ACME server changed (tested below)


def _turn_context() -> ServiceContext:
    return dataclasses.replace(make_context(turnDroplet="true"), role="turn", droplet_ipv6="")


def test_the_turn_droplet_holds_no_token_and_proves_control_by_http(tmp_path: Path) -> None:
    """Issue 26: the TURN droplet gets no Cloudflare token; it orders turn. alone by HTTP-01 (certbot's own
    server on port 80). One an earlier version ordered by DNS-01 is ordered again (renewals then use
    HTTP-01 too) and the token file that version left is removed."""
    ctx = _turn_context()
    steps = _steps(ctx)
    assert not [f for s in steps.values() for f in s.files if TOKEN in str(f.content)]
    assert paths.CERTBOT_CREDENTIALS not in {f.path for s in steps.values() for f in s.files}
    earlier = ("install -d -m 0700 /etc/letsencrypt/renewal /etc/letsencrypt/live/DOMAIN\n"
               "printf 'dns_cloudflare_api_token = old\\n' > CRED\n"
               "for f in cert fullchain privkey; do echo old > /etc/letsencrypt/live/DOMAIN/$f.pem; done\n"
               "printf '[renewalparams]\\nauthenticator = dns-cloudflare\\nserver = %s\\n' SERVER "
               "> /etc/letsencrypt/renewal/DOMAIN.conf\n")
    earlier = (earlier.replace("DOMAIN", ctx.settings.domain).replace("CRED", paths.CERTBOT_CREDENTIALS)
               .replace("SERVER", ctx.settings.acme_server))
    upgraded, again = _run(tmp_path, ctx, [_bundle(ctx), _bundle(ctx)], active=("coturn",), before=earlier)
    assert upgraded["rc"] == "0" and again["rc"] == "0", upgraded["out"] + again["out"]
    args = _certbot_call(upgraded)
    assert args[args.index("--standalone"):args.index("--standalone") + 5] == [
        "--standalone", "--preferred-challenges", "http", "--http-01-port", "80"]
    assert not [a for a in args if "dns-cloudflare" in a]
    assert [args[i + 1] for i, a in enumerate(args) if a == "-d"] == [ctx.settings.turn_host]
    assert "--force-renewal" in args and "forcing a new certificate" in upgraded["out"]
    assert f"{paths.CERTBOT_CREDENTIALS} " not in upgraded["stat"]  # gone
    assert "systemctl restart coturn" in upgraded["calls"]
    assert "--force-renewal" not in _certbot_call(again)


def test_token_only_in_a_root_0600_file() -> None:
    ctx = make_context()
    steps = _steps(ctx)
    (cred,) = [f for f in steps["certificates-issue"].files if f.path == paths.CERTBOT_CREDENTIALS]
    assert (cred.mode, cred.owner, cred.group) == ("0600", "root", "root")
    lines = [x for x in str(cred.content).splitlines() if x and not x.startswith("#")]
    assert lines == [f"dns_cloudflare_api_token = {TOKEN}"]
    for step in steps.values():
        assert TOKEN not in step.script
        for secret in FAKE_SECRETS.values():
            assert secret.strip() not in step.script
        for f in step.files:
            if f.path != paths.CERTBOT_CREDENTIALS:
                assert TOKEN not in str(f.content)
    (hook,) = [f for f in steps["certificates-issue"].files if f.path == paths.CERT_DEPLOY_HOOK]
    assert (hook.mode, hook.owner) == ("0755", "root")


INSTALL_DRIVER = r"""
set -uo pipefail
work=$1
export WORK=$work PATH=$work/bin:$PATH
for installed in "" "certbot" "certbot python3-certbot-dns-cloudflare"; do
  echo "$installed" > "$work/installed"
  bash "$2" > "$work/out" 2>&1 || { cat "$work/out"; exit 1; }
  echo "--- installed: $installed" >> "$work/calls"
done
"""
# dpkg-query answers from $WORK/installed; apt-get only records what it was asked.
DPKG_QUERY = r"""#!/bin/bash
if grep -qw -- "${!#}" "$WORK/installed"; then printf 'install ok installed'; else exit 1; fi
"""
APT_GET = r"""#!/bin/bash
echo "apt-get $*" >> "$WORK/calls"
"""


def test_install_step_installs_only_what_is_missing(tmp_path: Path) -> None:
    """certbot and the Cloudflare plugin, each only when dpkg does not have it (an apt-get with nothing to do
    costs a re-run about a second); with both there, no apt at all, and the step still completes."""
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    for name, text in (("dpkg-query", DPKG_QUERY), ("apt-get", APT_GET)):
        (work / "bin" / name).write_text(text)
        (work / "bin" / name).chmod(0o755)
    spec = _steps(make_context())["certificates-install"]
    (tmp_path / "bundle.sh").write_text(bundle_text(spec, [str(f.content) for f in spec.files]))
    proc = run_in_sandbox(tmp_path, INSTALL_DRIVER, [str(work), str(tmp_path / "bundle.sh")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [[c.split(" install ", 1)[1] for c in run.splitlines() if " install " in c]
            for run in re.split(r"--- installed: .*\n", (work / "calls").read_text())[:3]]
    assert runs == [["--no-install-recommends certbot python3-certbot-dns-cloudflare"],
                    ["--no-install-recommends python3-certbot-dns-cloudflare"], []]


def test_shellcheck_bundles_and_hook() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required (tests/tools/install-deps.sh)"
    for step in certificates.steps(make_context(acmeServer=PEBBLE)):
        text = bundle_text(step, [str(f.content) for f in step.files])
        proc = subprocess.run([shellcheck, "-"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, step.name + proc.stdout
        for f in step.files:
            if f.path.endswith(".sh"):
                proc = subprocess.run([shellcheck, "-"], input=str(f.content), capture_output=True, text=True)
                assert proc.returncode == 0, f.path + proc.stdout


# ------------------------------------------------------------------------------------------
# Sandbox

# Stand-ins, recording every call in $WORK/calls.
CERTBOT = r"""#!/bin/bash
echo "certbot $*" >> "$WORK/calls"
failures=$(cat "$WORK/failures" 2>/dev/null || echo 0)
if [ "$failures" -gt 0 ]; then  # the CA found no TXT record yet
  echo $((failures - 1)) > "$WORK/failures"
  echo "Some challenges have failed." >&2
  exit 1
fi
name= server= force= authenticator=
while [ $# -gt 0 ]; do
  case $1 in
    --cert-name) name=$2; shift ;;
    --server) server=$2; shift ;;
    --force-renewal) force=1 ;;
    --standalone) authenticator=standalone ;;
    --dns-cloudflare) authenticator=dns-cloudflare ;;
  esac
  shift
done
if [ -e "$WORK/forgotten-account" ] && [ -d "/etc/letsencrypt/accounts/${server#*://}" ]; then  # the CA forgot it
  mkdir -p /var/log/letsencrypt
  echo '{"type": "urn:ietf:params:acme:error:accountDoesNotExist"}' > /var/log/letsencrypt/letsencrypt.log
  exit 1
fi
live=/etc/letsencrypt/live/$name
if [ ! -f "$live/cert.pem" ] || [ -n "$force" ]; then
  mkdir -p "$live" /etc/letsencrypt/renewal
  head -c 32 /dev/urandom | base64 > "$live/cert.pem"
  cp "$live/cert.pem" "$live/fullchain.pem"
  head -c 32 /dev/urandom | base64 > "$live/privkey.pem"
  printf '[renewalparams]\nauthenticator = %s\nserver = %s\n' "$authenticator" "$server" > "/etc/letsencrypt/renewal/$name.conf"
fi
"""
SYSTEMCTL = r"""#!/bin/bash
echo "systemctl $*" >> "$WORK/calls"
unit=${!#}
case $1 in
  is-active) [ -e "$WORK/active-$unit" ] ;;
  is-enabled) if [ -e "$WORK/enabled-$unit" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  enable) touch "$WORK/enabled-$unit"; case " $* " in *" --now "*) touch "$WORK/active-$unit" ;; esac ;;
esac
"""
NGINX = r"""#!/bin/bash
echo "nginx $*" >> "$WORK/calls"
"""

# The data volume: its own filesystem at DATA_MOUNT, root's 0755 (as volume-mount leaves it).
VOLUME = f"install -d {paths.DATA_MOUNT} && mount -t tmpfs -o mode=0755 volume {paths.DATA_MOUNT}"

DRIVER = r"""
set -uo pipefail
work=$1
shift
export WORK=$work PATH=$work/bin:$PATH
VOLUME
# what an earlier version left
i=0
for bundle in "$@"; do
  i=$((i + 1))
  case $bundle in
    other-lineage) RENEWED_LINEAGE=/etc/letsencrypt/live/elsewhere.test HOOK > "$work/out.$i" 2>&1 ;;
    *) bash "$bundle" > "$work/out.$i" 2>&1 ;;
  esac
  echo $? > "$work/rc.$i"
  echo "--- end of run $i" >> "$work/calls"
  stat -c '%n %U:%G %a' CRED "$work"/../tls-missing /etc/coturn/tls /etc/coturn/tls/* > "$work/stat.$i" 2>/dev/null
  sha256sum /etc/coturn/tls/fullchain.pem /etc/letsencrypt/live/DOMAIN/fullchain.pem > "$work/sum.$i" 2>/dev/null || true
done
"""


def _run(tmp: Path, ctx: ServiceContext, bundles: list[str], active: tuple[str, ...],
         failures: int = 0, before: str = "") -> list[dict[str, Any]]:
    assert subprocess.run(["getent", "passwd", "turnserver"], stdout=subprocess.DEVNULL).returncode == 0, (
        "coturn must be installed"
    )
    work = tmp / "work"
    (work / "bin").mkdir(parents=True)
    for name, text in (("certbot", CERTBOT), ("systemctl", SYSTEMCTL), ("nginx", NGINX)):
        (work / "bin" / name).write_text(text)
        (work / "bin" / name).chmod(0o755)
    for unit in active:
        (work / f"active-{unit}").touch()
    (work / "failures").write_text(f"{failures}\n")  # certbot's first `failures` tries fail
    args = []
    for i, text in enumerate(bundles, 1):
        if text == "other-lineage":
            args.append(text)
            continue
        (tmp / f"bundle{i}.sh").write_text(text)
        args.append(str(tmp / f"bundle{i}.sh"))
    driver = DRIVER.replace("HOOK", paths.CERT_DEPLOY_HOOK).replace("CRED", paths.CERTBOT_CREDENTIALS)
    driver = driver.replace("# what an earlier version left\n", before + "\n").replace("VOLUME", VOLUME)
    proc = run_in_sandbox(tmp, driver.replace("DOMAIN", ctx.settings.domain), [str(work), *args], tmpfs=["/srv"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = re.split(r"--- end of run \d+\n", (work / "calls").read_text())
    return [
        {
            "rc": (work / f"rc.{i}").read_text().strip(),
            "out": (work / f"out.{i}").read_text(),
            "calls": calls[i - 1],
            "stat": (work / f"stat.{i}").read_text(),
            "sums": (work / f"sum.{i}").read_text().split(),
        }
        for i in range(1, len(bundles) + 1)
    ]


def _bundle(ctx: ServiceContext) -> str:
    step = _steps(ctx)["certificates-issue"]
    return bundle_text(step, [str(f.content) for f in step.files])


def test_issue_runs_the_hook_once_and_renews_only_when_needed(tmp_path: Path) -> None:
    ctx = make_context(acmeServer=PEBBLE)
    staging = make_context(acmeServer=OTHER_CA)
    first, again, switched, other = _run(
        tmp_path, ctx, [_bundle(ctx), _bundle(ctx), _bundle(staging), "other-lineage"], active=("nginx", "coturn")
    )
    for run in (first, again, switched, other):
        assert run["rc"] == "0", run["out"]
        assert TOKEN not in run["out"] and TOKEN not in run["calls"]

    # First issuance: certbot, then the deploy hook (nginx -t before reload; coturn copy + restart).
    calls = first["calls"].splitlines()
    assert calls[0].startswith("certbot certonly ") and f"--server {PEBBLE}" in calls[0]
    assert "--force-renewal" not in calls[0]
    assert " -d " + " -d ".join(ctx.settings.hostnames) + " " in calls[0]
    assert f"--cert-name {ctx.settings.domain} " in calls[0]
    assert calls.index("nginx -t -q") < calls.index("systemctl reload nginx")
    assert "systemctl restart coturn" in calls
    assert calls[-1] == "systemctl enable --quiet --now certbot.timer"
    assert f"{paths.CERTBOT_CREDENTIALS} root:root 600" in first["stat"]
    # coturn's copy is root's: coturn (group turnserver) may read it, never replace it.
    assert f"{paths.COTURN_TLS_DIR} root:turnserver 750" in first["stat"]
    assert f"{paths.COTURN_TLS_DIR}/fullchain.pem root:turnserver 640" in first["stat"]
    assert f"{paths.COTURN_TLS_DIR}/privkey.pem root:turnserver 640" in first["stat"]
    assert first["sums"][0] == first["sums"][2]  # coturn's copy is the live certificate

    # Re-run, nothing changed: certbot keeps the certificate, no hook, no reload, no restart, and the
    # timer, enabled and active, is not enabled again.
    calls = again["calls"].splitlines()
    assert [c.split()[0] + " " + c.split()[1] for c in calls] == [
        "certbot certonly", "systemctl is-enabled", "systemctl is-active"]

    # ACME server changed: a new certificate from the new server, deployed again.
    calls = switched["calls"].splitlines()
    assert "--force-renewal" in calls[0] and f"--server {OTHER_CA}" in calls[0]
    assert "systemctl reload nginx" in calls and "systemctl restart coturn" in calls
    assert switched["sums"][0] == switched["sums"][2] and switched["sums"][0] != first["sums"][0]

    # certbot renewing some other lineage: the hook leaves everything alone.
    assert other["calls"].strip() == ""


def test_hook_without_nginx_or_coturn_running_only_copies(tmp_path: Path) -> None:
    ctx = make_context()
    (run,) = _run(tmp_path, ctx, [_bundle(ctx)], active=())
    assert run["rc"] == "0", run["out"]
    calls = run["calls"]
    assert "reload" not in calls and "restart" not in calls and "nginx -t" not in calls
    assert f"{paths.COTURN_TLS_DIR}/privkey.pem root:turnserver 640" in run["stat"]


@pytest.mark.parametrize("failures", [2, 3])
def test_a_failed_try_is_made_again_with_a_longer_dns_wait(tmp_path: Path, failures: int) -> None:
    """certbot's tries use the waits in turn, stopping at the first that works; all failing fails the step."""
    ctx = make_context(acmeServer=PEBBLE)
    (run,) = _run(tmp_path, ctx, [_bundle(ctx)], active=("nginx",), failures=failures)
    tries = [c for c in run["calls"].splitlines() if c.startswith("certbot certonly")]
    waits = [int(c.split("--dns-cloudflare-propagation-seconds ")[1].split()[0]) for c in tries]
    assert waits == list(certificates.PROPAGATION_WAITS_S[: failures + 1][:3])
    if failures < len(certificates.PROPAGATION_WAITS_S):
        assert run["rc"] == "0", run["out"]
        assert "systemctl reload nginx" in run["calls"]
        assert "try 2 of 3" in run["out"]
    else:
        assert run["rc"] != "0" and "reload" not in run["calls"]
        assert "certbot failed 3 times" in run["out"]


# coturn's directory as the previous version left it (turnserver's), and coturn, compromised, racing the
# hook: every new name in the directory is replaced by a link to a root file before root chowns it.
RACE_DRIVER = r"""
set -uo pipefail
work=$1 hook=$2 lineage=$3
install -d -m 0700 "$lineage"
printf 'certificate\n' > "$lineage/fullchain.pem"
printf 'private key\n' > "$lineage/privkey.pem"
install -d -m 0700 /etc/ms-root
printf 'root secret\n' > /etc/ms-root/canary
chmod 0600 /etc/ms-root/canary
install -d -m 0755 /etc/coturn
install -d -m 0750 -o turnserver -g turnserver /etc/coturn/tls
runuser -u turnserver -- ln -s /etc/ms-root/canary /etc/coturn/tls/privkey.pem
cat > /etc/ms-racer.py <<'PY'
RACER
PY
runuser -u turnserver -- python3 /etc/ms-racer.py /etc/coturn/tls /etc/ms-root/canary /etc/ms-stop > /dev/null &
attacker=$!
sleep 0.5
for i in $(seq 40); do
  rm -f /etc/coturn/tls/privkey.pem /etc/coturn/tls/fullchain.pem 2>/dev/null
  RENEWED_LINEAGE=$lineage "$hook" >> "$work/hook.out" 2>&1
  [ "$(stat -c %U /etc/ms-root/canary)" = root ] || break
done
echo "$i" > "$work/runs"
touch /etc/ms-stop
wait "$attacker"
stat -c '%U:%G %a' /etc/ms-root/canary > "$work/canary.meta"
cat /etc/ms-root/canary > "$work/canary"
stat -c '%n %U:%G %a %F' /etc/coturn/tls /etc/coturn/tls/* > "$work/tls" 2>&1
cmp /etc/coturn/tls/privkey.pem "$lineage/privkey.pem" > "$work/cmp" 2>&1; echo $? >> "$work/cmp"
"""


def test_coturn_racing_the_hook_gets_no_root_file(tmp_path: Path) -> None:
    """Issue 26: the hook made turnserver's directory, wrote a temporary file there and chowned it by
    name, so coturn could swap it for a link to any root file. Now the directory is taken back (root's),
    the copies are staged root-only and renamed in: forty renewals with coturn racing change nothing."""
    ctx = make_context()
    hook = render("certificates/deploy-hook.sh.j2", coturn_tls_dir=paths.COTURN_TLS_DIR, domain=ctx.settings.domain,
                  live_dir=paths.CERT_LIVE_DIR)
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "systemctl").write_text("#!/bin/bash\nexit 3\n")  # nothing is active
    (work / "bin" / "systemctl").chmod(0o755)
    (work / "hook").write_text(hook)
    (work / "hook").chmod(0o755)
    lineage = f"{paths.CERT_LIVE_DIR}/{ctx.settings.domain}"  # in the sandbox's /etc
    driver = RACE_DRIVER.replace('work=$1', f'export PATH={work}/bin:$PATH\nwork=$1').replace("RACER", LINK_RACER)
    proc = run_in_sandbox(tmp_path, driver, [str(work), str(work / "hook"), lineage])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = {name: (work / name).read_text() for name in ("runs", "canary", "canary.meta", "tls", "cmp", "hook.out")}
    print(seen)
    assert seen["canary"] == "root secret\n" and seen["canary.meta"].split() == ["root:root", "600"], seen
    assert seen["runs"].strip() == "40"
    assert f"{paths.COTURN_TLS_DIR} root:turnserver 750 directory" in seen["tls"]
    assert f"{paths.COTURN_TLS_DIR}/privkey.pem root:turnserver 640 regular file" in seen["tls"]
    assert seen["cmp"].strip() == "0"


# ------------------------------------------------------------------------------------------
# The ACME account and certificates on the data volume (issue 29)

# /etc/letsencrypt as certbot leaves it: an account, a lineage's archive and live/ links into it, its renewal
# config (the e2e host runs the real certbot through the links: tests/e2e/test_lifecycle.py).
CERTBOT_LAYOUT = r"""
le=/etc/letsencrypt
install -d -m 0700 $le/accounts/SERVER_PATH/0123abcd $le/archive/DOMAIN $le/live/DOMAIN
install -d -m 0755 $le/renewal
echo '{"uri": "kept account"}' > $le/accounts/SERVER_PATH/0123abcd/regr.json
for f in cert chain fullchain privkey; do
  head -c 32 /dev/urandom | base64 > $le/archive/DOMAIN/${f}1.pem
  ln -s ../../archive/DOMAIN/${f}1.pem $le/live/DOMAIN/$f.pem
done
chmod 0600 $le/archive/DOMAIN/privkey1.pem
printf '[renewalparams]\nauthenticator = dns-cloudflare\nserver = SERVER\n' > $le/renewal/DOMAIN.conf
"""

STORE_DRIVER = r"""
set -uo pipefail
work=$1 bundle=$2
export WORK=$work PATH=$work/bin:$PATH
VOLUME
LAYOUT
le=/etc/letsencrypt
sha256sum $le/live/DOMAIN/fullchain.pem $le/live/DOMAIN/privkey.pem > "$work/original"
state() {  # what a run left: the links, the store, the live files' targets and contents
  for d in DIRS; do printf '%s -> %s\n' "$le/$d" "$(readlink "$le/$d")"; done
  stat -c '%n %U:%G %a %F' STORE
  stat -c '%n %U:%G %a' STORE/archive/DOMAIN/privkey1.pem
  readlink STORE/live/DOMAIN/fullchain.pem
  sha256sum $le/live/DOMAIN/fullchain.pem $le/live/DOMAIN/privkey.pem
  find $le -maxdepth 1 -printf '%p %y\n' | sort
}
run() {  # run NAME: the bundle as one deploy runs it
  echo "--- $1" >> "$work/calls"
  bash "$bundle" > "$work/out.$1" 2>&1
  echo $? > "$work/rc.$1"
  state > "$work/state.$1" 2>&1
}
run moved
run again
# A replaced droplet: a fresh root disk (no /etc/letsencrypt, no step state), the same volume.
rm -rf $le /var/lib/matrix-stack /etc/coturn/tls
run replaced
# Both sides hold a lineage (another one in /etc): the volume's is kept, this droplet's put aside.
rm $le/live && install -d -m 0700 $le/live/DOMAIN && echo other > $le/live/DOMAIN/fullchain.pem
run both
find REPLACED -path '*/live/DOMAIN/fullchain.pem' -exec cat {} + > "$work/aside" 2>&1
# The ACME server no longer knows the kept account: put aside, and certbot runs again (registering one).
touch "$work/forgotten-account"
run forgotten
rm "$work/forgotten-account"
find REPLACED -name regr.json > "$work/aside-account" 2>&1
# The store, if anyone but root could write to it, is refused before anything is linked or moved.
rm $le/archive && cp -a STORE/archive $le/archive && chmod 0770 STORE
run refused
"""


def _store_run(tmp: Path, ctx: ServiceContext) -> dict[str, dict[str, str]]:
    work = tmp / "work"
    (work / "bin").mkdir(parents=True)
    for name, text in (("certbot", CERTBOT), ("systemctl", SYSTEMCTL), ("nginx", NGINX)):
        (work / "bin" / name).write_text(text)
        (work / "bin" / name).chmod(0o755)
    (work / "failures").write_text("0\n")
    for unit in ("nginx", "coturn"):
        (work / f"active-{unit}").touch()
    (tmp / "bundle.sh").write_text(_bundle(ctx))
    s = ctx.settings
    layout = CERTBOT_LAYOUT.replace("SERVER_PATH", s.acme_server.split("://", 1)[1]).replace("SERVER", s.acme_server)
    driver = (STORE_DRIVER.replace("VOLUME", VOLUME).replace("LAYOUT", layout).replace("DIRS", " ".join(paths.CERT_STORE_DIRS))
              .replace("STORE", paths.CERT_STORE).replace("REPLACED", paths.CERT_REPLACED_DIR).replace("DOMAIN", s.domain))
    proc = run_in_sandbox(tmp, driver, [str(work), str(tmp / "bundle.sh")], tmpfs=["/srv", "/var/log"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = dict(re.findall(r"--- (\w+)\n(.*?)(?=--- |\Z)", (work / "calls").read_text(), re.S))
    runs = {}
    for name in ("moved", "again", "replaced", "both", "forgotten", "refused"):
        runs[name] = {"rc": (work / f"rc.{name}").read_text().strip(), "out": (work / f"out.{name}").read_text(),
                      "state": (work / f"state.{name}").read_text(), "calls": calls.get(name, "")}
    runs["original"] = {"sums": (work / "original").read_text()}
    runs["aside"] = {"content": (work / "aside").read_text(), "account": (work / "aside-account").read_text()}
    return runs


def test_the_account_and_certificate_live_on_the_volume_and_a_replaced_droplet_reuses_them(tmp_path: Path) -> None:
    """Issue 29: /etc/letsencrypt's account, archive, live and renewal move to the data volume (another
    filesystem) with certbot's relative links intact, and become links to it; a re-run changes nothing; a
    fresh droplet on the same volume links them again, certbot orders nothing and the deploy hook still
    hands the certificate to nginx and coturn; /etc's token and hooks stay on the root disk."""
    ctx = make_context(acmeServer=PEBBLE)
    d = ctx.settings.domain
    runs = _store_run(tmp_path, ctx)
    original = runs["original"]["sums"].split()[0::2]
    links = [f"/etc/letsencrypt/{x} -> {paths.CERT_STORE}/{x}" for x in paths.CERT_STORE_DIRS]

    def sums(run: dict[str, str]) -> list[str]:
        return [line.split()[0] for line in run["state"].splitlines() if line.endswith(".pem") and " " in line
                and len(line.split()[0]) == 64]

    moved = runs["moved"]
    assert moved["rc"] == "0", moved["out"]
    for x in paths.CERT_STORE_DIRS:
        assert f"moved /etc/letsencrypt/{x} to the data volume ({paths.CERT_STORE}/{x})" in moved["out"]
    for line in links:
        assert line in moved["state"], moved["state"]
    assert f"{paths.CERT_STORE} root:root 700 directory" in moved["state"]
    assert f"{paths.CERT_STORE}/archive/{d}/privkey1.pem root:root 600" in moved["state"]  # modes kept
    assert f"\n../../archive/{d}/fullchain1.pem\n" in moved["state"]  # certbot's relative link, as it was
    assert sums(moved) == original  # the same certificate and key
    assert "--force-renewal" not in moved["calls"] and "reusing" not in moved["out"]
    assert f"{paths.CERTBOT_CREDENTIALS} f" in moved["state"] and "/etc/letsencrypt/renewal-hooks d" in moved["state"]

    again = runs["again"]
    assert again["rc"] == "0" and again["state"] == moved["state"], again["out"]
    assert "moved" not in again["out"] and "reusing" not in again["out"] and "deploy hook" not in again["out"]

    replaced = runs["replaced"]
    assert replaced["rc"] == "0", replaced["out"]
    assert "reusing the certificate kept on the data volume" in replaced["out"]
    assert "moved" not in replaced["out"]
    for line in links:
        assert line in replaced["state"]
    assert sums(replaced) == original  # certbot kept it (the stand-in orders only when cert.pem is missing)
    assert "--force-renewal" not in replaced["calls"]
    # A fresh droplet: the hook gives nginx and coturn the kept certificate.
    assert "running the deploy hook" in replaced["out"] and "systemctl reload nginx" in replaced["calls"]
    assert "systemctl restart coturn" in replaced["calls"]

    both = runs["both"]
    assert both["rc"] == "0", both["out"]
    assert f"/etc/letsencrypt/live and {paths.CERT_STORE}/live both hold data: keeping the volume's" in both["out"]
    assert sums(both) == original and runs["aside"]["content"] == "other\n"
    for line in links:
        assert line in both["state"]

    forgotten = runs["forgotten"]
    assert forgotten["rc"] == "0", forgotten["out"]
    assert "the ACME server does not know the account kept for it" in forgotten["out"]
    assert forgotten["calls"].count("certbot certonly") == 2
    aside = re.escape(paths.CERT_REPLACED_DIR) + r"/account-\d{8}T\d{6}Z/0123abcd/regr\.json\n"
    assert re.fullmatch(aside, runs["aside"]["account"]), runs["aside"]["account"]

    refused = runs["refused"]
    assert refused["rc"] != "0" and "refused" in refused["out"], refused["out"]
    assert "certbot" not in refused["calls"]
    assert "/etc/letsencrypt/archive d" in refused["state"]  # left as it was: nothing moved into that store


def test_the_turn_droplet_keeps_its_certificate_on_its_root_disk() -> None:
    """The TURN droplet has no data volume: its issue step neither links nor moves anything."""
    issue = _steps(_turn_context())["certificates-issue"].script
    assert paths.CERT_STORE not in issue and paths.DATA_MOUNT not in issue
    assert paths.CERT_STORE in _steps(make_context())["certificates-issue"].script
