"""nginx: the apex (.well-known delegation), chat. (Element) and matrix. (Synapse) sites.

Every site listens on 443 with the certbot certificate, requires Cloudflare's origin-pull client
certificate (the stack's own CA) and redirects port 80 to HTTPS; a default server answers no other
name. The client address is taken from CF-Connecting-IP only when the connection comes from a
Cloudflare range (the ranges are read live from Cloudflare on every `up`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import pulumi

from components import paths, worker_topology
from components.cloud.edge_rules import TLS_REFUSED_HEADER
from components.remote import RemoteFile, StepSpec
from components.render import read, render
from components.services import ServiceContext, health, rendered, rtc

SITES_AVAILABLE = "/etc/nginx/sites-available"
SNIPPETS = "/etc/nginx/snippets"
SITE_NAMES = ("matrix-stack-default", "matrix-stack-apex", "matrix-stack-chat", "matrix-stack-matrix")
HTTP_CONF = "/etc/nginx/conf.d/matrix-stack.conf"
# Idle keep-alive connections each nginx worker keeps per Synapse process (nginx's upstream `keepalive`):
# enough for the requests of a busy moment at 1 CPU; measured in docs/benchmarks.md (Tuning at 1 CPU).
UPSTREAM_KEEPALIVE = 16
UPSTREAM_LOG = "/var/log/nginx/matrix-upstream.log"  # synapseWorkers: which process answered (logrotate's nginx/*.log)
ACCESS_LOG = "/var/log/nginx/access.log"  # Debian's, in the stack's format: no query strings
# The sites' error log: nginx writes whole request lines there (query strings included), so it lives in a
# directory only root can enter, rotated by its own logrotate file.
PRIVATE_LOG_DIR = "/var/log/nginx/matrix-stack"
ERROR_LOG = f"{PRIVATE_LOG_DIR}/error.log"
LOGROTATE = "/etc/logrotate.d/matrix-stack-nginx"


def cloudflare_cidrs(ipv4: Sequence[str], ipv6: Sequence[str]) -> list[str]:
    """Every Cloudflare range, checked to be a CIDR (they go unquoted into nginx)."""
    cidrs = [str(ipaddress.ip_network(c, strict=True)) for c in [*ipv4, *ipv6]]
    if not cidrs:
        raise ValueError("no Cloudflare IP ranges: refusing to render set_real_ip_from without any")
    return cidrs


def header_variable(header: str) -> str:
    """nginx's variable for a request header (`$http_` and the name, lower-case, dashes as underscores)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", header):
        raise ValueError(f"header {header!r}: only lower-case letters, digits and dashes go into an nginx variable")
    return "http_" + header.replace("-", "_")


def _cidrs_input(ctx: ServiceContext) -> pulumi.Input[list[str]]:
    v4, v6 = ctx.cloudflare_ipv4, ctx.cloudflare_ipv6
    if isinstance(v4, pulumi.Output) or isinstance(v6, pulumi.Output):
        return pulumi.Output.all(v4, v6).apply(lambda v: cloudflare_cidrs(v[0], v[1]))
    return cloudflare_cidrs(v4, v6)  # type: ignore[arg-type]


def files(ctx: ServiceContext) -> list[RemoteFile]:
    s = ctx.settings
    names = {"domain": s.domain, "matrix_host": s.matrix_host, "chat_host": s.chat_host}
    well_known = f"{paths.APEX_ROOT}/.well-known/matrix"
    return [
        RemoteFile(HTTP_CONF, rendered("nginx/matrix-stack.conf.j2", cloudflare_cidrs=_cidrs_input(ctx),
                                     nginx_conf_hides_version=ctx.settings.platform.nginx_conf_hides_version)),
        RemoteFile(
            f"{SNIPPETS}/matrix-stack-tls.conf",
            render("nginx/tls.conf.j2", domain=s.domain, cert_dir=f"{paths.CERT_LIVE_DIR}/{s.domain}",
                   origin_pull_ca=paths.ORIGIN_PULL_CA, tls_refused_variable=header_variable(TLS_REFUSED_HEADER)),
        ),
        RemoteFile(paths.ORIGIN_PULL_CA, ctx.origin_pull_ca),
        # The self-check asks nginx on 127.0.0.1 as Cloudflare does, with its client certificate.
        RemoteFile(paths.ORIGIN_PULL_CLIENT, ctx.origin_pull_client, mode="0600"),
        RemoteFile(f"{SITES_AVAILABLE}/matrix-stack-default", read("nginx/default.conf")),
        RemoteFile(f"{SNIPPETS}/matrix-stack-headers.conf", read("nginx/headers.conf")),
        RemoteFile(f"{SNIPPETS}/matrix-stack-logs.conf", render("nginx/logs.conf.j2", access_log=ACCESS_LOG,
                                                                error_log=ERROR_LOG)),
        RemoteFile(LOGROTATE, render("nginx/logrotate.j2", private_log_dir=PRIVATE_LOG_DIR)),
        RemoteFile(f"{SNIPPETS}/matrix-stack-element-headers.conf", read("nginx/element-headers.conf")),
        RemoteFile(f"{SITES_AVAILABLE}/matrix-stack-apex", render("nginx/apex.j2", apex_root=paths.APEX_ROOT, **names)),
        RemoteFile(
            f"{SITES_AVAILABLE}/matrix-stack-chat",
            render("nginx/chat.j2", element_link=paths.ELEMENT_LINK, **names),
        ),
        RemoteFile(
            f"{SITES_AVAILABLE}/matrix-stack-matrix",
            render(
                "nginx/matrix.j2",
                synapse_host=paths.SYNAPSE_LISTEN[0],
                synapse_port=paths.SYNAPSE_LISTEN[1],
                max_upload_size_mb=s.max_upload_size_mb,
                apex_root=paths.APEX_ROOT,
                # synapseWorkers: the routing map (empty: every request to the one process).
                workers=worker_topology.http_workers() if s.synapse_workers else (),
                main_upstream=worker_topology.MAIN_UPSTREAM,
                upstream_keepalive=UPSTREAM_KEEPALIVE,
                upstream_log=UPSTREAM_LOG,
                health_location=health.NGINX_LOCATION,
                rtc=s.matrix_rtc,
                rtc_token_path=rtc.TOKEN_SERVICE_PATH,
                rtc_token_upstream="{}:{}".format(*rtc.TOKEN_SERVICE_LISTEN),
                rtc_sfu_path=rtc.SFU_PATH,
                rtc_sfu_upstream=f"127.0.0.1:{rtc.SFU_SIGNAL_PORT}",
                **names,
            ),
        ),
        RemoteFile(health.NGINX_LOCATION, health.nginx_location(ctx), mode="0600"),
        RemoteFile(f"{well_known}/server", render("nginx/well-known-server.json.j2", matrix_host=s.matrix_host)),
        RemoteFile(f"{well_known}/client", render("nginx/well-known-client.json.j2", homeserver_url=s.homeserver_url,
                                                  rtc_foci=rtc.transports(ctx))),
    ]


def steps(ctx: ServiceContext) -> list[StepSpec]:
    return [StepSpec(name="nginx-sites", script=render("nginx/sites.sh.j2", private_log_dir=PRIVATE_LOG_DIR),
                     files=files(ctx))]
