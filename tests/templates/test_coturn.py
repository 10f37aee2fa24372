"""coturn: the rendered turnserver.conf is checked for Synapse's hardening and run by the real coturn.

The real run happens in a throwaway network namespace (`unshare -n`) that holds the droplet's
address on a veth, so the config is used unchanged except for the certificate paths; real TURN
clients (`turnutils_uclient`) then allocate with credentials derived from the shared secret.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from components import paths
from components.cloud.firewall import ANYWHERE, inbound_rules
from components.remote import StepSpec, bundle_text
from components.services import ServiceContext, coturn
from tests.templates.conftest import FAKE_SECRETS, make_context

# anchors.md section 3.1 (Synapse docs/setup/turn/coturn.md), copied as the expectation.
_ANCHOR_TEXT = """
denied-peer-ip=10.0.0.0-10.255.255.255
denied-peer-ip=192.168.0.0-192.168.255.255
denied-peer-ip=172.16.0.0-172.31.255.255
denied-peer-ip=0.0.0.0-0.255.255.255
denied-peer-ip=100.64.0.0-100.127.255.255
denied-peer-ip=127.0.0.0-127.255.255.255
denied-peer-ip=169.254.0.0-169.254.255.255
denied-peer-ip=192.0.0.0-192.0.0.255
denied-peer-ip=192.0.2.0-192.0.2.255
denied-peer-ip=192.88.99.0-192.88.99.255
denied-peer-ip=198.18.0.0-198.19.255.255
denied-peer-ip=198.51.100.0-198.51.100.255
denied-peer-ip=203.0.113.0-203.0.113.255
denied-peer-ip=240.0.0.0-255.255.255.255
denied-peer-ip=::1
denied-peer-ip=64:ff9b::-64:ff9b::ffff:ffff
denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255
denied-peer-ip=100::-100::ffff:ffff:ffff:ffff
denied-peer-ip=2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff
denied-peer-ip=2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff
denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff
"""
ANCHOR_DENIED_PEER_IPS = [line for line in _ANCHOR_TEXT.splitlines() if line]

CONFIGS = [
    {},
    {"turnRelayPorts": "50000-50999", "turnSubdomain": "relay"},
    {"domain": "chat.example.net", "turnRelayPorts": "49152-49163"},
]

TOOLS = ("turnserver", "turnutils_uclient", "unshare", "ip", "stdbuf", "openssl", "shellcheck")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    assert found, f"{name} is not installed: run tests/tools/install-deps.sh"
    return found


def conf_of(ctx: ServiceContext) -> str:
    content = coturn.config(ctx).content
    assert isinstance(content, str)
    return content


def option_lines(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def values(conf: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in option_lines(conf) if line.split("=", 1)[0] == key]


def step(ctx: ServiceContext, name: str) -> StepSpec:
    (found,) = [s for s in coturn.steps(ctx) if s.name == name]
    return found


@pytest.mark.parametrize("config", CONFIGS)
def test_synapse_hardening_in_full(config: dict[str, str]) -> None:
    ctx = make_context(**config)
    conf = conf_of(ctx)
    lines = option_lines(conf)
    denied = [x for x in lines if x.startswith("denied-peer-ip")]
    assert denied[: len(ANCHOR_DENIED_PEER_IPS)] == ANCHOR_DENIED_PEER_IPS  # Synapse's list, then ours
    for flag in (
        "use-auth-secret", "no-tcp-relay", "no-multicast-peers", "no-cli", "no-tlsv1", "no-tlsv1_1", "no-dtls",
        "no-rfc5780", "no-stun-backward-compatibility", "response-origin-only-with-rfc5780", "syslog",
        "fingerprint",
    ):
        assert lines.count(flag) == 1, flag
    expected = {
        "static-auth-secret": [FAKE_SECRETS["turn_shared_secret"]],
        "realm": [ctx.settings.turn_host],
        "allowed-peer-ip": [ctx.droplet_ipv4],
        "external-ip": [ctx.droplet_ipv4],
        "relay-ip": [ctx.droplet_ipv4],
        "user-quota": ["12"],
        "total-quota": ["1200"],
        "listening-port": ["3478"],
        "tls-listening-port": ["5349"],
        "cert": [f"{paths.COTURN_TLS_DIR}/fullchain.pem"],
        "pkey": [f"{paths.COTURN_TLS_DIR}/privkey.pem"],
    }
    for key, value in expected.items():
        assert values(conf, key) == value, key
    # turnserver.conf has no inline comments: a '#' anywhere but at the start breaks the value.
    assert all("#" not in line for line in lines)


@pytest.mark.parametrize("config", CONFIGS)
def test_relay_range_equals_firewall(config: dict[str, str]) -> None:
    ctx = make_context(**config)
    conf = conf_of(ctx)
    low, high = ctx.settings.turn_relay_ports
    assert values(conf, "min-port") == [str(low)] and values(conf, "max-port") == [str(high)]
    udp_rules = [r for r in inbound_rules(ctx.settings, []) if r.protocol == "udp" and "-" in r.ports]
    assert [(r.ports, r.sources) for r in udp_rules] == [(f"{low}-{high}", ANYWHERE)]


def test_secret_file_mode_and_steps() -> None:
    ctx = make_context()
    file = coturn.config(ctx)
    assert (file.path, file.mode, file.owner, file.group) == (paths.COTURN_CONFIG, "0640", "root", "turnserver")
    steps = coturn.steps(ctx)
    assert [s.name for s in steps] == ["coturn-install", "coturn-config"]
    # The turnserver group exists only after the package install: the file must be in a later step.
    assert not steps[0].files and [f.path for f in steps[1].files] == [paths.COTURN_CONFIG, coturn.HARDENING_DROP_IN]
    for spec in steps:
        for secret in FAKE_SECRETS.values():
            assert secret.strip() not in spec.script


def test_install_adds_seed_services_and_default() -> None:
    script = step(make_context(), "coturn-install").script
    for line in (
        "stun-turn       3478/tcp                        # Coturn",
        "stun-turn       3478/udp                        # Coturn",
        "stun-turn-tls   5349/tcp                        # Coturn",
        "stun-turn-tls   5349/udp                        # Coturn",
    ):
        assert line in script.splitlines()
    assert "TURNSERVER_ENABLED=1" in script and "ms_apt install --no-install-recommends coturn" in script


# Restarting coturn only on a change is behaviour, checked on the real host: a no-op re-run leaves its
# invocation alone (tests/e2e/test_lifecycle.py idempotency test), a changed TURN setting restarts it
# (test_a_turn_setting_change_restarts_coturn_and_no_other_service).


@pytest.mark.parametrize("config", CONFIGS)
def test_scripts_pass_shellcheck(config: dict[str, str]) -> None:
    ctx = make_context(**config)
    for spec in coturn.steps(ctx):
        contents = [str(f.content) for f in spec.files]
        result = subprocess.run(
            [tool("shellcheck"), "-s", "bash", "-"], input=bundle_text(spec, contents),
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, f"{spec.name}:\n{result.stdout}"


# ------------------------------------------------------------------------------------------
# The real coturn.

DRIVER = textwrap.dedent(
    """\
    set -u
    ip link set lo up
    ip link add ms0 type veth peer name ms1
    ip link set ms0 up && ip link set ms1 up
    ip addr add "$IPV4/32" dev ms0
    stdbuf -oL -eL turnserver -c "$DIR/turnserver.conf" --pidfile "$DIR/pid" --db "$DIR/turndb" \\
      > "$DIR/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do
      grep -q 'Total General servers' "$DIR/server.log" && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.1
    done
    run() { name=$1; shift; timeout 20 "$@" > "$DIR/$name.log" 2>&1; echo $? > "$DIR/$name.rc"; }
    # client -> TURN -> TURN -> client through the droplet's own relay address (allowed-peer-ip)
    run c2c turnutils_uclient -v -y -c -n 2 -m 1 -z 5 -u alice -W "$SECRET" 127.0.0.1
    # a private peer must be refused (denied-peer-ip)
    run private turnutils_uclient -n 1 -m 1 -e 10.1.2.3 -u alice -W "$SECRET" 127.0.0.1
    # the IPv6 forms of a private IPv4 address get no relay (coturn 4.6.1 advisories)
    run mapped turnutils_uclient -n 1 -m 1 -e ::ffff:10.1.2.3 -u bob -W "$SECRET" 127.0.0.1
    run nat64 turnutils_uclient -n 1 -m 1 -e 64:ff9b::a01:203 -u carol -W "$SECRET" 127.0.0.1
    # no DTLS, on the plain port or the TLS one (GHSA-5x2p-4vqj-f6m4)
    for port in 3478 5349; do
      timeout 8 openssl s_client -dtls1_2 -connect 127.0.0.1:$port < /dev/null > "$DIR/dtls$port.log" 2>&1
      echo $? > "$DIR/dtls$port.rc"
    done
    # a wrong secret must not get an allocation
    run badauth turnutils_uclient -y -n 1 -m 1 -u alice -W wrong-secret 127.0.0.1
    # TURN over TLS on 5349 serves the certificate copy
    openssl s_client -connect 127.0.0.1:5349 -tls1_2 < /dev/null > "$DIR/tls.log" 2>&1; echo $? > "$DIR/tls.rc"
    kill $pid 2>/dev/null
    wait $pid
    exit 0
    """
)


@dataclasses.dataclass
class Run:
    server_log: str
    rc: dict[str, int]
    logs: dict[str, str]


def run_coturn(conf: str, ipv4: str, secret: str, tmp: Path) -> Run:
    for name in TOOLS:
        tool(name)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=turn.test",
         "-keyout", str(tmp / "privkey.pem"), "-out", str(tmp / "fullchain.pem")],
        check=True, capture_output=True,
    )
    # The only change to the rendered config: where the certificate copy lives.
    (tmp / "turnserver.conf").write_text(conf.replace(f"{paths.COTURN_TLS_DIR}/", f"{tmp}/"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DIR": str(tmp), "IPV4": ipv4, "SECRET": secret}
    subprocess.run(["unshare", "-n", "bash", "-c", DRIVER], env=env, timeout=120, check=True)
    names = ("c2c", "private", "mapped", "nat64", "dtls3478", "dtls5349", "badauth", "tls")
    return Run(
        server_log=(tmp / "server.log").read_text(errors="replace"),
        rc={n: int((tmp / f"{n}.rc").read_text()) for n in names},
        logs={n: (tmp / f"{n}.log").read_text(errors="replace") for n in names},
    )


def assert_clean_start(log: str) -> None:
    """Startup (config parsing up to the servers being created) logged no error at all."""
    assert "Total General servers" in log, log[-3000:]
    startup = log.split("Total General servers", 1)[0]
    bad = [line for line in startup.splitlines() if re.search(r"Bad configuration|unknown option|ERROR", line)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("config", CONFIGS)
def test_real_coturn_runs_config_and_enforces_it(config: dict[str, str], tmp_path: Path) -> None:
    ctx = make_context(**config)
    ipv4 = str(ctx.droplet_ipv4)
    run = run_coturn(conf_of(ctx), ipv4, FAKE_SECRETS["turn_shared_secret"], tmp_path)
    log = run.server_log
    assert_clean_start(log)
    for denied in ANCHOR_DENIED_PEER_IPS:
        assert f"Black listing: {denied.split('=', 1)[1]}" in log
    for denied in coturn.DENIED_PEER_IPS:  # ours beyond Synapse's list too: each one parsed by coturn
        assert f"Black listing: {denied}" in log, denied
    assert f"White listing: {ipv4}" in log
    assert f"Relay address to use: {ipv4}" in log
    assert "CONFIG: --no-tcp-relay" in log
    assert "RFC5780 disabled" in log
    assert run.rc["c2c"] == 0, run.logs["c2c"][-2000:]
    assert re.search(r"tot_recv_msgs=[1-9]", run.logs["c2c"]), run.logs["c2c"][-2000:]
    low, high = ctx.settings.turn_relay_ports
    relayed = [int(p) for p in re.findall(rf"relay addr(?:ess)?[^\n]*?{re.escape(ipv4)}:(\d+)", run.logs["c2c"])]
    assert relayed and all(low <= p <= high for p in relayed), run.logs["c2c"][-2000:]
    assert run.rc["private"] != 0 and "403 (Forbidden IP)" in run.logs["private"]
    assert run.rc["badauth"] != 0 and "Cannot complete Allocation" in run.logs["badauth"]
    for name in ("mapped", "nat64"):  # the relay is IPv4 only: no relay for an IPv6 peer at all
        assert run.rc[name] != 0 and "Unsupported address family" in run.logs[name], run.logs[name][-2000:]
        assert "Received relay addr" not in run.logs[name]
    for name in ("dtls3478", "dtls5349"):
        assert "Cipher is (NONE)" in run.logs[name] or "CONNECTED" not in run.logs[name], run.logs[name][-2000:]
        assert "BEGIN CERTIFICATE" not in run.logs[name] and "Server certificate" not in run.logs[name]
    assert run.rc["tls"] == 0 and "CN = turn.test" in run.logs["tls"], run.logs["tls"][-2000:]


def test_real_coturn_check_catches_a_bad_option(tmp_path: Path) -> None:
    """The check above can fail: an unknown option is reported by coturn and caught."""
    ctx = make_context()
    conf = conf_of(ctx) + "no-such-option\n"
    run = run_coturn(conf, str(ctx.droplet_ipv4), FAKE_SECRETS["turn_shared_secret"], tmp_path)
    with pytest.raises(AssertionError, match="Bad configuration"):
        assert_clean_start(run.server_log)


def test_the_sandbox_drop_in_is_valid_and_closes_what_debians_unit_leaves_open(tmp_path: Path) -> None:
    """Debian's coturn.service with the step's drop-in, as systemd reads them: every directive is known
    (systemd-analyze verify), and systemd's own exposure score falls from Debian's unit alone (9.0,
    "UNSAFE") to that of a sandboxed service. The e2e suite relays through coturn under it."""
    debian_unit = Path("/lib/systemd/system/coturn.service")
    step = next(s for s in coturn.steps(make_context()) if s.name == "coturn-config")
    (drop_in,) = [f for f in step.files if f.path == coturn.HARDENING_DROP_IN]
    assert Path(drop_in.path).parent.name == "coturn.service.d" and drop_in.mode == "0644"
    (tmp_path / "coturn.service").write_text(debian_unit.read_text())
    (tmp_path / "coturn.service.d").mkdir()
    (tmp_path / "coturn.service.d" / Path(drop_in.path).name).write_text(str(drop_in.content))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "coturn.service")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "Unknown" not in verify.stderr, verify.stderr

    def exposure(unit: Path) -> float:
        out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                             text=True).stdout
        return float(re.findall(r"Overall exposure level for \S+: ([0-9.]+)", out)[-1])

    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "coturn.service").write_text(debian_unit.read_text())
    before, after = exposure(tmp_path / "debian" / "coturn.service"), exposure(tmp_path / "coturn.service")
    print(f"\n  systemd's exposure level: Debian's unit {before}, with the drop-in {after}")
    assert before >= 8 and after <= 2.0
