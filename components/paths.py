"""Where things live on the server: the one list every service and template agrees on."""

DATA_MOUNT = "/var/lib/postgresql"  # the DigitalOcean volume (seed guide: XFS, noatime)
MOUNT_UNIT = "var-lib-postgresql.mount"
SYNAPSE_USER = "matrix-synapse"
SYNAPSE_DATA = f"{DATA_MOUNT}/matrix-synapse"  # on the volume: survives droplet replacement
SYNAPSE_MEDIA_STORE = f"{SYNAPSE_DATA}/media_store"
SYNAPSE_SIGNING_KEY = f"{SYNAPSE_DATA}/signing.key"
SYNAPSE_VENV = "/opt/synapse/venv"
SYNAPSE_CONFIG_DIR = "/etc/matrix-synapse"
SYNAPSE_CONFIG = f"{SYNAPSE_CONFIG_DIR}/homeserver.yaml"
SYNAPSE_LOG_CONFIG = f"{SYNAPSE_CONFIG_DIR}/log.yaml"
SYNAPSE_LOG_DIR = "/var/log/matrix-synapse"
SYNAPSE_LISTEN = ("127.0.0.1", 8008)
POSTGRES_DB = "synapse"
POSTGRES_USER = "synapse_user"
CERTBOT_CREDENTIALS = "/etc/letsencrypt/cloudflare.ini"
CERT_LIVE_DIR = "/etc/letsencrypt/live"  # + /<domain>/{fullchain,privkey}.pem
CERT_DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/matrix-stack.sh"
COTURN_TLS_DIR = "/etc/coturn/tls"  # coturn's own readable copy of the certificate
COTURN_CONFIG = "/etc/turnserver.conf"
ELEMENT_ROOT = "/var/www"  # element-v<version>/ unpacked, element -> symlink to the current one
ELEMENT_LINK = f"{ELEMENT_ROOT}/element"
APEX_ROOT = "/var/www/apex"  # serves /.well-known/matrix/{server,client}
ADMIN_CREDENTIALS = "/root/.matrix-stack/admin.env"
