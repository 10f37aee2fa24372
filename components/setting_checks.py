"""What each setting may be: one check per kind of value, each returning the normalised value or raising the
one-line error the user sees (`invalid`): the key, the bad value, what is allowed and the command that fixes it.

The settings themselves (name, type, default, description, which check) are declared in setting_table.py.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from components.platform import PLATFORMS, platform_of

PROJECT = "matrix-stack"

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
ELEMENT_GITHUB_URL = (
    "https://github.com/element-hq/element-web/releases/download/v{version}/element-v{version}.tar.gz"
)
# MatrixRTC's two programs, published only as GitHub release assets (amd64: DigitalOcean's droplets).
LIVEKIT_GITHUB_URL = "https://github.com/livekit/livekit/releases/download/v{version}/livekit_{version}_linux_amd64.tar.gz"
LK_JWT_SERVICE_GITHUB_URL = (
    "https://github.com/element-hq/lk-jwt-service/releases/download/v{version}/lk-jwt-service_linux_amd64"
)

# The oldest Element Web that works with the Synapse we install: 1.11.70 is the first to fetch media
# through the authenticated endpoints Synapse serves new media from (element-web #27558), 1.11.109
# the first to read and join room version 12 rooms, Synapse's default (element-web #30452, #30526).
ELEMENT_MIN_VERSION = (1, 11, 109)
MAX_UPLOAD_MB_CLOUDFLARE = 100  # Cloudflare Free/Pro refuse larger request bodies with 413.
RELAY_PORT_MIN, RELAY_PORT_MAX = 49152, 65535
RELAY_RANGE_MAX_WIDTH = 2000  # ufw/firewall rules stay readable; coturn needs ~4 ports per call.

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,200}}$)(?:{_LABEL}\.)+[a-z][a-z0-9-]{{0,62}}(?<!-)$")
_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:rc\d+)?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
_PUBLIC_KEY_BLOCK = ("-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----")
_LOCALPART_RE = re.compile(r"^[a-z0-9._=/-]{1,64}$")
_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) "
    r"[A-Za-z0-9+/]+={0,3}( .*)?$"
)
# DigitalOcean volume names: lower-case letters, digits and dashes, a letter first, at most 64.
_VOLUME_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
MEMORY_RE = re.compile(r"-(\d+)(gb|mb)(?:-|$)")
VCPUS_RE = re.compile(r"-(\d+)vcpu-")
DATABASE_SIZE_RE = re.compile(r"^db-[a-z0-9-]*?(\d+)gb$")
# Regions with Spaces Standard Storage (DigitalOcean's Spaces availability page, March 2026).
SPACES_REGIONS = ("nyc3", "ams3", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1")
# S3 bucket names: 3-63 lower-case letters, digits and dashes, a letter or digit at both ends.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class SettingsError(ValueError):
    """A config value is invalid; the message is the one line the user sees."""


def invalid(key: str, value: Any, allowed: str) -> SettingsError:
    """The one-line error for a bad value of `key`: what is allowed and how to fix it."""
    shown = value if isinstance(value, (int, bool)) else repr(value)
    return SettingsError(
        f"config {PROJECT}:{key}={shown} is invalid: {allowed} "
        f"(fix: pulumi config set {key} <value>)"
    )


# ---------------------------------------------------------------------------------------------
# The checks: each returns the normalised value or raises a one-line SettingsError.


def matching(pattern: re.Pattern[str], allowed: str, empty_too: bool = False) -> Callable[[str, Any], str]:
    """A check for strings that `pattern` matches (and "" too, with `empty_too`)."""
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not ((empty_too and value == "") or pattern.match(value)):
            raise invalid(key, value, allowed)
        return value

    return check


def one_of(choices: tuple[str, ...], allowed: str) -> Callable[[str, Any], str]:
    """A check for one of a few fixed words."""
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise invalid(key, value, allowed)
        return str(value)

    return check


dns_name = matching(_DOMAIN_RE, "a lower-case DNS name such as example.com (no scheme, no trailing dot)")
dns_label = matching(_SUBDOMAIN_RE, "one lower-case DNS label such as matrix (letters, digits, inner dashes)")
email_address = matching(_EMAIL_RE, "an e-mail address such as ops@example.com")
optional_email_address = matching(_EMAIL_RE, "an e-mail address such as ops@example.com, or empty", empty_too=True)
digitalocean_slug = matching(_SLUG_RE, "a DigitalOcean slug such as nyc3 or s-1vcpu-1gb (lower-case, digits, dashes)")


def droplet_size(key: str, value: Any) -> str:
    slug = digitalocean_slug(key, value)
    if not MEMORY_RE.search(slug):
        raise invalid(key, value, "a DigitalOcean size slug naming its memory, e.g. s-1vcpu-512mb-10gb")
    return slug


database_kind = one_of(("local", "managed"), "local (PostgreSQL on the droplet) or managed (a DigitalOcean "
                       "Managed PostgreSQL cluster)")
media_storage = one_of(("local", "spaces"), "local (media on the data volume) or spaces (a DigitalOcean Spaces "
                       "bucket)")


def optional_spaces_region(key: str, value: Any) -> str:
    if value != "" and value not in SPACES_REGIONS:
        raise invalid(key, value, f"a region with Spaces ({', '.join(SPACES_REGIONS)}), or empty for the droplet's region")
    return str(value)


def optional_bucket(key: str, value: Any) -> str:
    if value != "" and not (isinstance(value, str) and _BUCKET_RE.match(value)):
        raise invalid(key, value, "a bucket name of 3-63 lower-case letters, digits and dashes (a letter or digit at "
                      "both ends), or empty for matrix-<domain>")
    return str(value)


def database_size(key: str, value: Any) -> str:
    slug = digitalocean_slug(key, value)
    match = DATABASE_SIZE_RE.match(slug)
    if not match or int(match.group(1)) < 1:
        raise invalid(key, value, "a DigitalOcean database size slug ending in its memory, e.g. db-s-1vcpu-1gb")
    return slug


def debian_image(key: str, value: Any) -> str:
    slug = digitalocean_slug(key, value)
    if platform_of(slug) is None:
        wanted = " or ".join(f"{p.image_prefix}-x64" for p in reversed(PLATFORMS))
        raise invalid(key, slug, f"a Debian image the server layer targets: {wanted}")
    return slug


optional_volume_name = matching(_VOLUME_NAME_RE, "a DigitalOcean volume name (lower-case letters, digits, dashes, "
                                "a letter first, at most 64), e.g. the dataVolume output of the destroyed stack, or "
                                "empty", empty_too=True)
release_version = matching(_VERSION_RE, "a release version such as 1.2.3 (digits and dots, no leading v)")


def release_at_least(program: str, oldest: tuple[int, ...], why: str) -> Callable[[str, Any], str]:
    """A check for a release version no older than `oldest`; `why` says what older releases lack."""
    def check(key: str, value: Any) -> str:
        version = release_version(key, value)
        if tuple(int(part) for part in re.findall(r"\d+", version)[:3]) < oldest:
            raise invalid(key, version, f"{program} {'.'.join(map(str, oldest))} or newer ({why})")
        return version

    return check


element_version = release_at_least("Element Web", ELEMENT_MIN_VERSION, "older releases cannot show this Synapse's "
                                   "authenticated media or join room version 12 rooms")
# 0.8.0 fixed GHSA-rq24-fh66-rq7x (the legacy endpoints did not validate the homeserver's OpenID answer), and
# the application-service mode Synapse's io.element.msc4502/msc4512 registration keys serve arrived in 0.7.0.
LK_JWT_SERVICE_MIN_VERSION = (0, 8, 0)
lk_jwt_service_version = release_at_least("lk-jwt-service", LK_JWT_SERVICE_MIN_VERSION,
                                          "older releases accept forged OpenID answers: GHSA-rq24-fh66-rq7x")


optional_sha256 = matching(_SHA256_RE, "64 lower-case hex characters (sha256sum of the release tarball), or empty",
                           empty_too=True)
sha256 = matching(_SHA256_RE, "64 lower-case hex characters (sha256sum of the release file)")


def optional_fingerprint(key: str, value: Any) -> str:
    """An OpenPGP v4 fingerprint as gpg prints it, spaces allowed; normalised to 40 upper-case hex."""
    normalised = value.replace(" ", "").upper() if isinstance(value, str) else None
    if normalised is None or not (normalised == "" or _FINGERPRINT_RE.match(normalised)):
        raise invalid(key, value, "the signing key's 40-hex-digit fingerprint as gpg --fingerprint prints it, or empty")
    return normalised


def optional_public_key(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(key, value, "an ASCII-armored OpenPGP public key block, or empty")
    text = value.strip()
    begin, end = _PUBLIC_KEY_BLOCK
    if text and not (text.startswith(begin) and text.endswith(end) and "PRIVATE KEY" not in text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise invalid(key, shown, f"an ASCII-armored public key block from {begin} to {end}, or empty "
                    "(pulumi config set elementSigningKey -- \"$(cat key.asc)\")")
    return text + "\n" if text else ""


def optional_dns_name(key: str, value: Any) -> str:
    return "" if value == "" else dns_name(key, value)


def acme_server(key: str, value: Any) -> str:
    url = https_url(key, value)
    if url == LETSENCRYPT_STAGING:
        raise invalid(key, url, "a CA that Cloudflare trusts: the stack sets Full (strict) SSL for its names, "
                      "and Cloudflare answers 526 to a staging certificate; use the default (Let's Encrypt "
                      "production) and put test stacks under a subdomain (cloudflareZone)")
    return url


def https_url(key: str, value: Any) -> str:
    """An https URL: what the droplet fetches from there (certificates, Element) must come over TLS that it
    verifies, never over plain HTTP where anyone on the path can answer."""
    if not isinstance(value, str) or not re.match(r"^https://[^\s'\"\\/]+(/[^\s'\"\\]*)?$", value):
        raise invalid(key, value, "an https:// URL without spaces or quotes (plain http is refused)")
    return value


def download_url(key: str, value: Any) -> str:
    url = https_url(key, value)
    if "{version}" not in url:
        raise invalid(key, url, "an https:// URL containing the placeholder {version}")
    return url


def int_range(low: int, high: int, why: str = "") -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(key, value, f"a whole number from {low} to {high}{why}")
        return value

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(key, value, "true or false")
    return value


federation_mode = one_of(("open", "allowlist", "off"), "one of open, allowlist, off")


def string_list(item: Callable[[str, Any], str]) -> Callable[[str, Any], tuple[str, ...]]:
    def check(key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise invalid(key, value, "a list, e.g. pulumi config set --path 'key[0]' <value>")
        return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))

    return check


def cidr_range(key: str, value: Any) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True) if isinstance(value, str) else None
    except ValueError:
        net = None
    if net is None or "/" not in str(value):
        raise invalid(key, value, "a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (host bits zero)")
    return str(net)


# Never allowed past Synapse's blocklist: everything (a default route), this droplet itself (loopback,
# where Synapse's unproxied port and PostgreSQL listen) and link-local (the metadata service), in
# either IP version or written as an IPv4-mapped IPv6 range.
_NEVER_OUTBOUND = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8", "::1/128", "fe80::/10", "::/128",
    "::ffff:127.0.0.0/104", "::ffff:169.254.0.0/112", "::ffff:0.0.0.0/104"))


def outbound_cidr(key: str, value: Any) -> str:
    cidr = cidr_range(key, value)
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == 0 or any(net.overlaps(never) for never in _NEVER_OUTBOUND if never.version == net.version):
        raise invalid(key, value, "a CIDR of another server's network, not 0.0.0.0/0 or ::/0 and not overlapping "
                      "loopback (127.0.0.0/8, ::1) or link-local (169.254.0.0/16, fe80::/10: the metadata service)")
    return cidr


optional_time_of_day = matching(re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"), "a time of day HH:MM (UTC, 24 hours) "
                                "such as 04:00, or empty for never", empty_too=True)


def ssh_public_key(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _SSH_KEY_RE.match(value.strip()):
        raise invalid(key, value, "an OpenSSH public key line such as 'ssh-ed25519 AAAA... me@laptop'")
    return value.strip()


localpart = matching(_LOCALPART_RE, "a Matrix user name: lower-case letters, digits and ._=-/ only")


def relay_ports(key: str, value: Any) -> tuple[int, int]:
    match = re.match(r"^(\d{5})-(\d{5})$", value) if isinstance(value, str) else None
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (match and RELAY_PORT_MIN <= low < high <= RELAY_PORT_MAX and high - low < RELAY_RANGE_MAX_WIDTH):
        raise invalid(
            key,
            value,
            f"a port range LOW-HIGH inside {RELAY_PORT_MIN}-{RELAY_PORT_MAX}, "
            f"LOW < HIGH, at most {RELAY_RANGE_MAX_WIDTH} ports",
        )
    return low, high


def smtp_port(key: str, value: Any) -> int:
    port = int_range(1, 65535)(key, value)
    if port == 25:
        raise invalid(key, port, "the relay's submission port, 587 (starttls) or 465 (tls): DigitalOcean blocks "
                      "outbound port 25 on droplets")
    return port


smtp_tls = one_of(("starttls", "tls"), "starttls (port 587) or tls (port 465); mail is never sent without TLS")
_SMTP_USER_RE = re.compile(r"^[^\s\x00-\x1f'\"\\]{1,256}$")
smtp_user = matching(_SMTP_USER_RE, "the relay's login name (no spaces or quotes), or empty", empty_too=True)


def optional_secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 1024 or any(c in value for c in "\r\n\x00"):
        raise invalid(key, "[secret]", "one line of at most 1024 characters (set it with --secret)")
    return value


def mail_from(key: str, value: Any) -> str:
    """`Name <address>` or an address. Synapse formats the sender with %-placeholders: a % is refused."""
    if not isinstance(value, str):
        raise invalid(key, value, "a sender such as 'Matrix <matrix@example.com>', or empty")
    name, address = email.utils.parseaddr(value)
    if value and (not _EMAIL_RE.match(address) or "%" in value or "\n" in value
                  or (name == "" and value.strip() != address)):
        raise invalid(key, value, "a sender such as 'Matrix <matrix@example.com>' or matrix@example.com (no %), "
                      "or empty")
    return value.strip()


def required_secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) < 20 or any(c.isspace() for c in value):
        raise invalid(key, "[secret]", "a Cloudflare API token with Zone:DNS:Edit (set it with --secret)")
    return value


