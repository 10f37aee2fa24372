"""Every stack setting, declared once: its name, type, default, the check that refuses a bad value (with the
error text, setting_checks.py) and the one description users read.

Everything else is made from this table: the loader's defaults and checks (settings.py), Pulumi.yaml's
`config` block and its `template` section for `pulumi new`, and the settings page of the docs
(setting_docs.py writes them; a test fails when they differ from what it would write).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from components import setting_checks as check
from components import team
from components.platform import DEFAULT_IMAGE


class Required:
    """The default of a setting every stack must set."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = Required()
# "objects": a list of objects, which Pulumi's project schema cannot type (Pulumi.yaml leaves it untyped).
Kind = Literal["string", "integer", "boolean", "array", "objects"]


@dataclass(frozen=True)
class Setting:
    key: str
    kind: Kind
    default: Any  # REQUIRED: no default
    check: Callable[[str, Any], Any]
    description: str  # one paragraph, plain text with `code`: Pulumi.yaml and the docs show it as is
    secret: bool = False  # set with `pulumi config set --secret` (refused in plain text)
    ask: str = ""  # the question `pulumi new` asks for it (Pulumi.yaml's template section); "" = not asked

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


SETTINGS: tuple[Setting, ...] = (
    Setting("domain", "string", REQUIRED, check.dns_name,
            "Your Matrix server name, in a Cloudflare zone of your account; user IDs are `@user:domain`.",
            ask="Matrix server name (user IDs are @user:<this>), in your Cloudflare zone, e.g. example.com"),
    Setting("sshAllowedCidrs", "array", REQUIRED, check.string_list(check.cidr_range),
            "CIDRs allowed to reach SSH (port 22); must include where `pulumi up` runs. A list, or one string of "
            "comma-separated CIDRs (what `pulumi new` stores).",
            ask="CIDRs allowed to SSH, comma-separated; include where you run `pulumi up` (e.g. 203.0.113.7/32)"),
    Setting("letsencryptEmail", "string", REQUIRED, check.email_address,
            "The ACME account's e-mail (Let's Encrypt's expiry notices).",
            ask="E-mail for the Let's Encrypt account"),
    Setting("certbotCloudflareToken", "string", REQUIRED, check.required_secret,
            "A Cloudflare API token with Zone:DNS:Edit on this zone only, placed on the server for certbot's "
            "DNS-01 challenges; refused unless set as a secret.", secret=True,
            ask="Cloudflare API token with Zone > DNS > Edit on this zone only (for certbot on the server)"),
    Setting("region", "string", "nyc3", check.digitalocean_slug, "DigitalOcean region slug."),
    Setting("dropletSize", "string", "s-1vcpu-1gb", check.digitalocean_slug,
            "DigitalOcean size slug. PostgreSQL's memory and Synapse's caches follow its memory, presence is off "
            "below 2 GB; a change replaces the droplet (docs/operate.md, Resizing)."),
    Setting("dropletImage", "string", DEFAULT_IMAGE, check.debian_image,
            "`debian-13-x64` or `debian-12-x64`; a change replaces the droplet, and a move from 12 to 13 upgrades "
            "the database on the volume (docs/operate.md)."),
    Setting("volumeSizeGb", "integer", 10, check.int_range(1, 16384),
            "Size of the data volume (PostgreSQL, media, signing key, backups), kept on destroy; grow only: raising "
            "it grows the filesystem."),
    Setting("matrixSubdomain", "string", "matrix", check.dns_label,
            "Subdomain serving the Matrix APIs (Synapse); the three subdomains must differ."),
    Setting("chatSubdomain", "string", "chat", check.dns_label, "Subdomain serving Element Web."),
    Setting("turnSubdomain", "string", "turn", check.dns_label, "Subdomain of the TURN server (DNS only, not proxied)."),
    Setting("acmeServer", "string", check.LETSENCRYPT_PRODUCTION, check.acme_server,
            "ACME directory URL (https only). Let's Encrypt staging is refused: Cloudflare's Full (strict) answers "
            "526 to its certificates (put test stacks under a subdomain instead)."),
    Setting("synapseVersion", "string", "1.163.2", check.release_version,
            "Synapse release, installed from PyPI with every package pinned by the lock in the repository "
            "(docs/operate.md, Upgrading Synapse)."),
    # Element Web 1.12.30 (2026-09-29), the newest final release found: a copy of element-web's releases page
    # taken 2026-10-10 (v1.12.30 final, v1.12.31 only as rc.1) and deployments pinning
    # ghcr.io/element-hq/element-web:v1.12.30 by digest; v1.12.28 is confirmed by Element's own
    # element-hq/ess-helm #1582. Integrity comes from Element's release signature (sha256 optional).
    Setting("elementVersion", "string", "1.12.30", check.element_version,
            "Element Web release, 1.11.109 or newer; its signature by Element's release key is verified before "
            "it is unpacked (docs/operate.md, Upgrading Element Web)."),
    Setting("elementSha256", "string", "", check.optional_sha256,
            "The release tarball's sha256, checked in addition to the signature; empty: not checked."),
    Setting("elementDownloadUrl", "string", check.ELEMENT_GITHUB_URL, check.download_url,
            "Element tarball URL with `{version}` (https only), for mirrors and air-gapped setups; the signature "
            "is read from the same URL plus `.asc`."),
    Setting("elementSigningKey", "string", "", check.optional_public_key,
            "ASCII-armored public key of a mirror that re-signs the releases; empty: Element's release key, "
            "pinned in the repository. Set together with elementSigningFingerprint."),
    Setting("elementSigningFingerprint", "string", "", check.optional_fingerprint,
            "Primary-key fingerprint of elementSigningKey (40 hex digits): a release must be signed by this key."),
    Setting("maxUploadSizeMb", "integer", 50,
            check.int_range(1, check.MAX_UPLOAD_MB_CLOUDFLARE, " (Cloudflare Free/Pro cap uploads at 100 MB)"),
            "Largest upload in MB (Synapse and nginx), 1-100: Cloudflare Free and Pro refuse larger bodies."),
    Setting("enableRegistration", "boolean", False, check.boolean,
            "Open registration, still gated by a registration token; local passwords need 12 characters at least "
            "(on sign-up and every change). Off: accounts are made by the admin."),
    Setting("federation", "string", "open", check.federation_mode,
            "`open`, `allowlist` (only federationAllowlist) or `off`."),
    Setting("federationAllowlist", "array", [], check.string_list(check.dns_name),
            "Server names allowed to federate, only with federation `allowlist`."),
    Setting("turnRelayPorts", "string", "49152-49251", check.relay_ports,
            "TURN relay UDP port range LOW-HIGH inside 49152-65535, at most 2000 ports; the cloud firewall, ufw and "
            "coturn use the same."),
    # TURN exposes its host's address, as Cloudflare does not proxy it: a droplet of its own keeps the main
    # droplet's address out of every call.
    Setting("turnDroplet", "boolean", False, check.boolean,
            "Run coturn on a small droplet of its own (`turn.` points at it); the main droplet then opens no TURN "
            "port (docs/grow.md, A TURN droplet)."),
    Setting("turnDropletSize", "string", "s-1vcpu-512mb-10gb", check.droplet_size,
            "The TURN droplet's size slug; a change replaces that droplet only."),
    # MatrixRTC (Element X's and Element Call's calls): off by default because lk-jwt-service publishes no checksum
    # file and no sha256 of its binary could be read here, so the stack cannot ship a pin for it (README, Calls).
    Setting("matrixRtc", "boolean", False, check.boolean,
            "Group and Element X calls on this server: the LiveKit SFU and lk-jwt-service on the main droplet "
            "(MatrixRTC), media on its own address (7881/tcp, 7882/udp). Needs lkJwtServiceSha256 (docs/calls.md)."),
    # LiveKit 1.13.5 (2026-07-31), the release ESS 26.8.1 and matrix-docker-ansible-deploy pin. The sha256 is the
    # release's checksums.txt line for livekit_1.13.5_linux_amd64.tar.gz, as independent deployments quote it.
    Setting("livekitVersion", "string", "1.13.5", check.release_version,
            "LiveKit server release (with matrixRtc); set livekitSha256 with it."),
    Setting("livekitSha256", "string", "c020fac437b7cc9b776eef1ad5ea8af77be9acfa07602eca20a3a44930dfbc70",
            check.sha256,
            "sha256 of livekit_<version>_linux_amd64.tar.gz: the download must match it and the release's "
            "checksums.txt must list it."),
    Setting("livekitDownloadUrl", "string", check.LIVEKIT_GITHUB_URL, check.download_url,
            "LiveKit tarball URL with `{version}` (https only), for mirrors; checksums.txt is read beside it."),
    Setting("lkJwtServiceVersion", "string", "0.10.0", check.lk_jwt_service_version,
            "lk-jwt-service release (with matrixRtc), 0.8.0 or newer (0.8.0 fixed GHSA-rq24-fh66-rq7x); set "
            "lkJwtServiceSha256 with it."),
    Setting("lkJwtServiceSha256", "string", "", check.optional_sha256,
            "sha256 of lk-jwt-service_linux_amd64 of lkJwtServiceVersion, from its GitHub release page (the "
            "release has no checksum file); matrixRtc needs it."),
    Setting("lkJwtServiceDownloadUrl", "string", check.LK_JWT_SERVICE_GITHUB_URL, check.download_url,
            "lk-jwt-service binary URL with `{version}` (https only), for mirrors."),
    Setting("database", "string", "local", check.database_kind,
            "Synapse's database: `local` (PostgreSQL on the droplet, data on the volume) or `managed` (a "
            "DigitalOcean Managed PostgreSQL cluster; switching moves the data: docs/grow.md)."),
    Setting("databaseSize", "string", "db-s-1vcpu-1gb", check.database_size,
            "The managed cluster's size slug (memory last), with database `managed`; DigitalOcean resizes a "
            "cluster to bigger sizes only."),
    Setting("mediaStorage", "string", "local", check.media_storage,
            "Synapse's media: `local` (on the data volume) or `spaces` (a DigitalOcean Spaces bucket the stack "
            "creates; the daily backup is copied to a bucket of its own too: docs/grow.md)."),
    Setting("mediaCacheDays", "integer", 14, check.int_range(1, 3650),
            "With mediaStorage `spaces`: local copies of media unused this many days are removed (they stay in the "
            "bucket); 1-3650."),
    Setting("spacesRegion", "string", "", check.optional_spaces_region,
            "The buckets' region, one with Spaces; empty: the droplet's region."),
    Setting("mediaBucket", "string", "", check.optional_bucket,
            "The media bucket's name, global across Spaces; empty: matrix-<domain with dashes>. Read once: the "
            "bucket keeps the name it was created with (the provider cannot rename a bucket)."),
    # A Spaces key's grant is a whole bucket, never a prefix: the backups need a bucket of their own.
    Setting("backupBucket", "string", "", check.optional_bucket,
            "With mediaStorage `spaces`: the backups' own versioned bucket, with a key Synapse never holds; empty: "
            "<mediaBucket>-backups. Read once, as mediaBucket."),
    Setting("synapseWorkers", "boolean", False, check.boolean,
            "Synapse as a main process plus workers (sync, client and federation, media, federation sender) with "
            "Redis, routed by nginx; needs a dropletSize of at least 2 vCPUs and 4 GB (docs/grow.md)."),
    Setting("adminUser", "string", "admin", check.localpart,
            "Local part of the admin account made on the first deploy (its password: the adminPassword output)."),
    Setting("users", "objects", [], team.team_members,
            "The server's people besides the admin, each `{localpart, admin, displayName, email}` (all but localpart "
            "optional; a plain string is a local part). Each account is made once with a generated password (the "
            "initialPasswords output); one taken off the list is locked, never deleted, and unlocked when put back; "
            "accounts made otherwise are left alone (docs/team.md)."),
    Setting("invitations", "objects", [], team.invitations,
            "Registration tokens, each `{name, uses, expires}`: `uses` sign-ups until the end of day `expires` "
            "(YYYY-MM-DD, UTC; empty: never). Needs enableRegistration; the `invitations` output has each one's "
            "sign-up page and token (docs/team.md)."),
    Setting("smtpHost", "string", "", check.optional_dns_name,
            "Your mail relay; empty: no mail. With it Synapse sends password resets, e-mail address confirmations "
            "and missed-message notifications. DigitalOcean blocks port 25: use the relay's 587 or 465 (docs/team.md)."),
    Setting("smtpPort", "integer", 587, check.smtp_port,
            "The relay's port: 587 with smtpTls `starttls`, 465 with `tls`; 25 is refused (blocked by DigitalOcean)."),
    Setting("smtpTls", "string", "starttls", check.smtp_tls,
            "`starttls` (a plain connection that must switch to TLS before the login) or `tls` (TLS from the first "
            "byte); the relay's certificate must be valid for smtpHost. Mail without TLS is refused."),
    Setting("smtpUser", "string", "", check.smtp_user, "The relay's login; empty: the relay takes mail without one."),
    Setting("smtpPassword", "string", "", check.optional_secret, "The relay's password, set as a secret.",
            secret=True),
    Setting("mailFrom", "string", "", check.mail_from,
            "Sender of the server's mail, `Name <address>` or an address your relay lets you send from; empty: "
            "`Matrix <matrix@domain>`."),
    Setting("mailNotifications", "boolean", True, check.boolean,
            "With smtpHost: e-mail each user with an address about messages unread for a while (Synapse's "
            "missed-message notifications; anyone can turn theirs off in Element)."),
    Setting("mailNotificationMinutes", "integer", 10, check.int_range(1, 1440),
            "Minutes a message stays unread before its notification mail (Synapse's default: 10), 1-1440."),
    # DigitalOcean watches from outside (components/cloud/alerts.py): it still sees a droplet nobody deploys to.
    Setting("alerts", "boolean", True, check.boolean,
            "DigitalOcean alert policies (CPU, memory, disk of each droplet) and uptime checks of the Matrix API and "
            "of the server's own hourly checks, through Cloudflare, mailed to alertEmail (README, What tells you "
            "something is wrong). The hourly checks run either way."),
    Setting("alertEmail", "string", "", check.optional_email_address,
            "Where DigitalOcean sends alerts, and the server's hourly checks mail (with smtpHost); it must be an "
            "address verified on the DigitalOcean account (its owner's or a team member's). Empty: the account's own "
            "e-mail, read from the API (with alerts: false, letsencryptEmail)."),
    Setting("alertCpuPercent", "integer", 90, check.int_range(1, 100),
            "CPU use, in percent, that alerts when it lasts 30 minutes."),
    Setting("alertMemoryPercent", "integer", 90, check.int_range(1, 100),
            "Memory use, in percent, that alerts when it lasts 10 minutes."),
    Setting("alertDiskPercent", "integer", 85, check.int_range(1, 100),
            "Use, in percent, of the droplet's own disk that alerts when it lasts 10 minutes, and of the data volume "
            "that the server's hourly checks report."),
    Setting("sshPublicKeys", "array", [], check.string_list(check.ssh_public_key),
            "Your own SSH public keys for root (the deploy key is added by itself); changing them never replaces "
            "the droplet."),
    Setting("enableUrlPreviews", "boolean", False, check.boolean,
            "URL previews in Synapse, with its SSRF IP blacklist."),
    Setting("enableJemalloc", "boolean", True, check.boolean,
            "Run Synapse with jemalloc (less memory, cache autotuning)."),
    Setting("backupKeepDays", "integer", 7, check.int_range(1, 365),
            "Days of daily backups (database dump, signing key, config) kept on the volume, 1-365; in the backups "
            "bucket, also how long a deleted backup stays recoverable."),
    # Unattended-upgrades installs security updates every day; a new kernel or libc takes effect only at a reboot.
    Setting("automaticRebootTime", "string", "", check.optional_time_of_day,
            "`HH:MM` (UTC): when the droplet reboots if a security update (a kernel, libc) needs it; empty: never "
            "(every `up` warns, and the self-check says when a reboot is pending)."),
    Setting("adoptVolume", "string", "", check.optional_volume_name,
            "Name of a kept data volume (a destroyed stack's dataVolume output) to adopt instead of creating one "
            "(docs/operate.md, Adopting a kept volume)."),
    Setting("cloudflareZone", "string", "", check.optional_dns_name,
            "The Cloudflare zone holding domain: domain itself or a parent; empty: the first of domain and its "
            "parents that is a zone of the account."),
    Setting("wellKnownOnWebsite", "boolean", False, check.boolean,
            "Your website on domain, which Cloudflare does not proxy, serves `/.well-known/matrix/server` and "
            "`/client` itself, so the stack adds no delegation redirect (docs/cloudflare.md)."),
    Setting("outboundIpAllowlist", "array", [], check.string_list(check.outbound_cidr),
            "CIDRs Synapse may reach although its blocklist covers them (private and reserved ranges): a "
            "homeserver, push gateway or identity server on your own network; never 0.0.0.0/0, loopback or "
            "link-local."),
    Setting("localMediaRetentionDays", "integer", 0, check.int_range(0, 36500, " (0: kept forever)"),
            "Days after their last access that your users' uploads are deleted; 0 keeps them forever (they are the "
            "only copy)."),
    Setting("remoteMediaRetentionDays", "integer", 14, check.int_range(0, 3650, " (0: kept forever)"),
            "Days after their last access that cached copies of other servers' media are deleted (fetched again "
            "when asked for); 0 keeps them."),
    Setting("remoteRoomMaxStateEvents", "integer", 500, check.int_range(0, 10_000_000, " (0: no limit)"),
            "Users may not join a remote room with more current state events (Synapse's limit_remote_rooms: big "
            "federated rooms fill small volumes); the admin may. 0: no limit."),
    Setting("staleDeviceDays", "integer", 0, check.int_range(0, 36500, " (0: never deleted)"),
            "Sessions unused this many days are logged out and deleted by Synapse; 0: never."),
    Setting("forgottenRoomPurgeDays", "integer", 7, check.int_range(0, 3650, " (0: never purged)"),
            "Days after the last person on this server left and forgot a room (Element: Forget) until Synapse "
            "deletes it from the database; 0: never. Nobody here can open such a room any more; one with members "
            "on other servers is fetched again if someone here rejoins it."),
)

# Provider settings `pulumi new` asks for too: the Pulumi providers' own keys, not the project's.
PROVIDER_QUESTIONS: dict[str, str] = {
    "digitalocean:token": "DigitalOcean API token (read/write)",
    "cloudflare:apiToken": "Cloudflare API token for Pulumi (the permissions in the README's prerequisites)",
}
