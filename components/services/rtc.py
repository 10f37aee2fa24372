"""MatrixRTC (matrixRtc): the LiveKit SFU and lk-jwt-service, the call backend of Element X and Element Call.

Both programs are published only as GitHub release files, so each is downloaded at a pinned version and
checked before it is installed: LiveKit's archive against its pinned sha256 and the release's own
checksums.txt, lk-jwt-service's binary against its pinned sha256 (its releases carry no checksum file). A
file that fails a check is never installed and the running release stays.

The token service runs as a Synapse application service, as lk-jwt-service 0.7+ expects: Synapse reads its
registration (written with Synapse's config, services/synapse.py) and proxies the MatrixRTC client API
(`/_matrix/client/*/rtc/livekit/`) to it; the older `/sfu/get` and `/get_token` are served on the public
prefix for older clients. nginx fronts both on the matrix. name behind Cloudflare; the SFU's media ports are
the droplet's own (the cloud firewall and ufw open them: components/cloud/firewall.py).
"""

from __future__ import annotations

from components import paths
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, rendered

RELEASES = "/opt/matrix-stack-rtc"  # root's: the unpacked releases, each in a directory named by version and pin
CONFIG_DIR = "/etc/matrix-stack/rtc"
LIVEKIT_CONFIG = f"{CONFIG_DIR}/livekit.yaml"  # 0600 root; the unit hands it over as a credential
TOKEN_SERVICE_ENV = f"{CONFIG_DIR}/lk-jwt-service.env"  # 0600 root; systemd reads it before starting
REGISTRATION = "/etc/matrix-synapse/lk-jwt-service.yaml"  # the application service registration Synapse reads

SFU_UNIT = "livekit-server.service"
TOKEN_SERVICE_UNIT = "lk-jwt-service.service"
UNITS = (SFU_UNIT, TOKEN_SERVICE_UNIT)

SFU_SIGNAL_PORT = 7880  # WebSocket signalling and LiveKit's API: only nginx reaches it
TOKEN_SERVICE_LISTEN = ("127.0.0.1", 8070)

# The public paths on matrix.<domain>, stripped by nginx before it passes a request on.
TOKEN_SERVICE_PATH = f"{paths.RTC_PUBLIC_PATH}jwt/"
SFU_PATH = f"{paths.RTC_PUBLIC_PATH}sfu/"

LIVEKIT_KEY = "matrix-stack"  # the API key's name; its secret is generated (cloud/secrets.py)
AS_ID = "lk-jwt-service"
AS_SENDER = "_lk_jwt_service"
# Synapse 1.163's MSC4502/MSC4512 keys (config/appservice.py; the only proxy prefix it allows is rtc/livekit).
AS_SCOPE = "urn:matrix:client:io.element.msc4502:rooms:is_joined"
AS_PROXY_PREFIX = "rtc/livekit"


def service_url(ctx: ServiceContext) -> str:
    """Where clients ask for a LiveKit token (the rtc_foci / transports entry)."""
    return f"https://{ctx.settings.matrix_host}{TOKEN_SERVICE_PATH.rstrip('/')}"


def sfu_url(ctx: ServiceContext) -> str:
    """The SFU's WebSocket, as lk-jwt-service hands it to clients with their token."""
    return f"wss://{ctx.settings.matrix_host}{SFU_PATH.rstrip('/')}"


def transports(ctx: ServiceContext) -> list[dict[str, str]]:
    """Synapse's matrix_rtc.transports and the well-known's rtc_foci: one LiveKit backend, this server's."""
    if not ctx.settings.matrix_rtc:
        return []
    return [{"type": "livekit", "livekit_service_url": service_url(ctx)}]


def registration(ctx: ServiceContext) -> RemoteFile:
    """lk-jwt-service's registration for Synapse: 0640 root:matrix-synapse (it holds both tokens)."""
    assert ctx.rtc_secrets is not None
    token_host, token_port = TOKEN_SERVICE_LISTEN
    content = rendered(
        "rtc/registration.yaml.j2",
        id=AS_ID,
        as_token=ctx.rtc_secrets.as_token,
        hs_token=ctx.rtc_secrets.hs_token,
        sender=AS_SENDER,
        users_regex=f"@.*:{ctx.settings.domain.replace('.', chr(92) + '.')}",
        scope=AS_SCOPE,
        proxy_prefix=AS_PROXY_PREFIX,
        proxy_url=f"http://{token_host}:{token_port}",
    )
    return RemoteFile(REGISTRATION, content, mode="0640", owner="root", group="matrix-synapse")


def unit_file(unit: str) -> str:
    return f"/etc/systemd/system/{unit}"


def listeners() -> list[int]:
    """The TCP ports the two services listen on once started: the SFU's signalling and ICE/TCP, the token
    service's."""
    return [SFU_SIGNAL_PORT, paths.RTC_TCP_PORT, TOKEN_SERVICE_LISTEN[1]]


def release_dirs(ctx: ServiceContext) -> tuple[str, str]:
    """Each program's directory: a new version or a new pin is a new directory, so it is checked anew."""
    s = ctx.settings
    return (f"{RELEASES}/livekit-{s.livekit_version}-{s.livekit_sha256[:12]}",
            f"{RELEASES}/lk-jwt-service-{s.lk_jwt_service_version}-{s.lk_jwt_service_sha256[:12]}")


def files(ctx: ServiceContext) -> list[RemoteFile]:
    s = ctx.settings
    assert ctx.rtc_secrets is not None
    sfu_dir, token_dir = release_dirs(ctx)
    token_host, token_port = TOKEN_SERVICE_LISTEN
    livekit = rendered(
        "rtc/livekit.yaml.j2",
        signal_port=SFU_SIGNAL_PORT,
        tcp_port=paths.RTC_TCP_PORT,
        udp_port=paths.RTC_UDP_PORT,
        node_ip=ctx.droplet_ipv4,
        key=LIVEKIT_KEY,
        secret=ctx.rtc_secrets.livekit_secret,
        webhook_url=f"http://{token_host}:{token_port}/sfu_webhook",
    )
    environment = rendered(
        "rtc/lk-jwt-service.env.j2",
        bind=f"{token_host}:{token_port}",
        livekit_url=sfu_url(ctx),
        key=LIVEKIT_KEY,
        secret=ctx.rtc_secrets.livekit_secret,
        server_name=s.domain,
        as_token=ctx.rtc_secrets.as_token,
        hs_token=ctx.rtc_secrets.hs_token,
    )
    sandbox = read("rtc/sandbox.conf")
    return [
        RemoteFile(LIVEKIT_CONFIG, livekit, mode="0600"),
        RemoteFile(TOKEN_SERVICE_ENV, environment, mode="0600"),
        RemoteFile(unit_file(SFU_UNIT),
                   render("rtc/livekit-server.service.j2", binary=f"{sfu_dir}/livekit-server", config=LIVEKIT_CONFIG,
                          sandbox=sandbox)),
        RemoteFile(unit_file(TOKEN_SERVICE_UNIT),
                   render("rtc/lk-jwt-service.service.j2", binary=f"{token_dir}/lk-jwt-service",
                          env_file=TOKEN_SERVICE_ENV, sandbox=sandbox)),
    ]


def steps(ctx: ServiceContext) -> list[StepSpec]:
    s = ctx.settings
    if ctx.role != "main":
        return []
    if not s.matrix_rtc:
        # Switching matrixRtc off stops and disables the two services (their files stay for the way back).
        return [StepSpec(name="rtc-off", script=render("rtc/off.sh.j2", units=UNITS))]
    sfu_dir, token_dir = release_dirs(ctx)
    install = render(
        "rtc/install.sh.j2",
        releases=RELEASES,
        livekit_version=s.livekit_version,
        livekit_sha256=s.livekit_sha256,
        livekit_url=s.livekit_tarball_url,
        livekit_checksums_url=s.livekit_checksums_url,
        livekit_dir=sfu_dir,
        token_version=s.lk_jwt_service_version,
        token_sha256=s.lk_jwt_service_sha256,
        token_url=s.lk_jwt_service_url,
        token_dir=token_dir,
        unit_files=[unit_file(unit) for unit in UNITS],
    )
    return [
        StepSpec(name="rtc-install", script=install,
                 versions={"livekit": s.livekit_version, "livekit-sha256": s.livekit_sha256,
                           "lk-jwt-service": s.lk_jwt_service_version,
                           "lk-jwt-service-sha256": s.lk_jwt_service_sha256}),
        StepSpec(name="rtc-config", script=render("rtc/config.sh.j2", units=UNITS, config_dir=CONFIG_DIR,
                                                  listeners=listeners()),
                 files=files(ctx)),
    ]
