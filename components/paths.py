"""Where things live on the server: the one list every service and template agrees on."""

# The DigitalOcean volume (seed guide: XFS, noatime), root-owned, with one directory per service:
# postgresql/ (bound at /var/lib/postgresql, where Debian keeps its clusters), matrix-synapse/,
# backups/ (root only) and matrix-stack/ (root only). postgresql-common re-owns /var/lib/postgresql
# to postgres on every configure, so the volume itself is mounted elsewhere: no service user owns it.
DATA_MOUNT = "/srv/matrix"
MOUNT_UNIT = "srv-matrix.mount"
POSTGRES_BASE = "/var/lib/postgresql"  # Debian's clusters: <base>/<major>/main
POSTGRES_VOLUME_DIR = f"{DATA_MOUNT}/postgresql"  # bound at POSTGRES_BASE
POSTGRES_BIND_UNIT = "var-lib-postgresql.mount"
SYNAPSE_USER = "matrix-synapse"
SYNAPSE_DATA = f"{DATA_MOUNT}/matrix-synapse"  # on the volume: survives droplet replacement
SYNAPSE_MEDIA_STORE = f"{SYNAPSE_DATA}/media_store"
# The server's identity, on the volume in a directory of root's that Synapse may only read: Synapse can
# neither replace the key nor plant a link where root's steps and backups look for it.
SYNAPSE_KEY_DIR = f"{DATA_MOUNT}/synapse-key"  # root:matrix-synapse 0750
SYNAPSE_SIGNING_KEY = f"{SYNAPSE_KEY_DIR}/signing.key"  # root:matrix-synapse 0640
SYNAPSE_OLD_SIGNING_KEY = f"{SYNAPSE_DATA}/signing.key"  # where it was, in Synapse's own directory: moved once
SYNAPSE_VENV = "/opt/synapse/venv"
SYNAPSE_CONFIG_DIR = "/etc/matrix-synapse"
SYNAPSE_CONFIG = f"{SYNAPSE_CONFIG_DIR}/homeserver.yaml"
SYNAPSE_LOG_CONFIG = f"{SYNAPSE_CONFIG_DIR}/log.yaml"
SYNAPSE_LOG_DIR = "/var/log/matrix-synapse"
SYNAPSE_LISTEN = ("127.0.0.1", 8008)
SYNAPSE_UNIT = "matrix-synapse.service"
POSTGRES_DB = "synapse"
POSTGRES_USER = "synapse_user"
# Runs a PostgreSQL client against Synapse's database as matrix-stack's tools do, local or managed.
DATABASE_COMMAND = "/usr/local/sbin/matrix-stack-db"
# database: managed. On the volume: the managed cluster holds Synapse's data (written when it became
# the live database); the local cluster on the volume is then out of date and never used again.
DATABASE_MANAGED_MARKER = f"{DATA_MOUNT}/matrix-stack/database-managed"
MANAGED_DB_CA = "/etc/matrix-stack/database-ca.pem"  # the cluster's CA: sslmode=verify-full
MANAGED_DB_SERVICES = "/etc/matrix-stack/pg_service.conf"  # libpq services "synapse" and "admin"
MANAGED_DB_PASSWORDS = "/etc/matrix-stack/pgpass"  # 0600 root: both roles' passwords
# mediaStorage: spaces. The bucket's address and key (0600 root, read by systemd for the media units
# and by matrix-stack-spaces), and the command that copies backups to the bucket and brings media back.
SPACES_ENV = "/etc/matrix-stack/spaces.env"
# The backups' own bucket and key (Synapse never holds them), and the key backups are encrypted with.
SPACES_BACKUP_ENV = "/etc/matrix-stack/backup-spaces.env"
BACKUP_ENCRYPTION_KEY = "/etc/matrix-stack/backup.key"
SPACES_COMMAND = "/usr/local/sbin/matrix-stack-spaces"
# On the volume: media may exist only in the bucket (written when Synapse began storing there); a
# switch back to local media is refused until `matrix-stack-spaces fetch-media` brought them all back.
MEDIA_SPACES_MARKER = f"{DATA_MOUNT}/matrix-stack/media-on-spaces"
CERT_CONFIG_DIR = "/etc/letsencrypt"
# certbot's ACME account, certificates and renewal configs (main droplet), on the volume so a replaced droplet
# reuses them (Let's Encrypt issues 5 duplicate certificates a week): CERT_CONFIG_DIR/<d> links to CERT_STORE/<d>.
CERT_STORE = f"{DATA_MOUNT}/letsencrypt"  # root:root 0700
CERT_STORE_DIRS = ("accounts", "archive", "live", "renewal")
CERT_REPLACED_DIR = "/var/lib/matrix-stack/letsencrypt-replaced"  # root only: what the volume's copy overrode
CERTBOT_CREDENTIALS = "/etc/letsencrypt/cloudflare.ini"  # stays on the root disk, as do the hooks
CERT_LIVE_DIR = "/etc/letsencrypt/live"  # + /<domain>/{fullchain,privkey}.pem
CERT_DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/matrix-stack.sh"
COTURN_TLS_DIR = "/etc/coturn/tls"  # coturn's own readable copy of the certificate
COTURN_CONFIG = "/etc/turnserver.conf"
ELEMENT_ROOT = "/var/www"  # element-v<version>/ unpacked, element -> symlink to the current one
ELEMENT_LINK = f"{ELEMENT_ROOT}/element"
APEX_ROOT = "/var/www/apex"  # serves /.well-known/matrix/{server,client}
ADMIN_CREDENTIALS = "/root/.matrix-stack/admin.env"
BACKUP_DIR = f"{DATA_MOUNT}/backups"  # on the volume: outlives the droplet (not the volume itself)
BACKUP_COMMAND = "/usr/local/sbin/matrix-stack-backup"
RESTORE_COMMAND = "/usr/local/sbin/matrix-stack-restore"
ORIGIN_PULL_CA = "/etc/nginx/matrix-stack/origin-pull-ca.pem"  # nginx requires Cloudflare's client cert to chain to it
ORIGIN_PULL_CLIENT = "/etc/matrix-stack/origin-pull-client.pem"  # that client cert + key (0600 root): the self-check's
# matrix-stack-health's status page on the matrix. name: this prefix + a secret token (services/health.py). Cloudflare
# lets it through unchallenged like Matrix traffic (cloud/edge_rules.py), as DigitalOcean's uptime checkers are no
# browsers.
HEALTH_STATUS_PATH = "/_matrix-stack/health/"

# matrixRtc: the LiveKit SFU's media ports on the droplet's own address (ICE over TCP, all UDP media on one muxed
# port): its config (services/rtc.py) and both firewalls (cloud/firewall.py) use these.
RTC_TCP_PORT = 7881
RTC_UDP_PORT = 7882
# matrixRtc: the token service and the SFU's signalling on the matrix. name, under this prefix (services/rtc.py);
# Cloudflare lets it through like Matrix traffic (cloud/edge_rules.py): Element X and the SFU's clients are no browsers.
RTC_PUBLIC_PATH = "/livekit/"
