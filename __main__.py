"""matrix-stack: settings → MatrixStack → outputs. Nothing else lives here."""

import os

import pulumi
from pulumi.runtime.config import CONFIG

from components.cloud import zone
from components.cloud.adoption import volume_plan
from components.cloud.cloudflare_api import check_credentials
from components.cloud.edge import plan_edge
from components.settings import from_pulumi_config, warnings
from components.stack import MatrixStack

settings, config_secrets = from_pulumi_config()
for warning in warnings(settings):
    pulumi.log.warn(warning)
# Before any resource (one-line errors): the Cloudflare credentials; the zone, what lives on the stack's
# names and what of the zone's quotas others use, and the stack's rules checked against them; a kept
# volume named by adoptVolume.
check_credentials(CONFIG.get(), os.environ)
edge_plan = plan_edge(settings, zone.look_up(settings))
stack = MatrixStack("matrix", settings, edge_plan, volume_plan(settings),
                    certbot_token=pulumi.Output.secret(config_secrets.certbot_cloudflare_token),
                    smtp_password=pulumi.Output.secret(config_secrets.smtp_password))
droplet = stack.host.droplet

pulumi.export("homeserverUrl", settings.homeserver_url)
pulumi.export("elementUrl", settings.element_url)
pulumi.export("serverName", settings.domain)
pulumi.export("dropletIpv4", droplet.ipv4_address)
pulumi.export("dropletIpv6", droplet.ipv6_address)
if stack.host.turn is not None:
    pulumi.export("turnDropletIpv4", stack.host.turn.droplet.ipv4_address)
if stack.database is not None:
    cluster = stack.database.cluster
    pulumi.export("databaseHost", cluster.private_host)
    # Retained like the volume (components/cloud/database.py): what to run to delete it for good.
    pulumi.export("databaseKeptOnDestroy", cluster.id.apply(
        lambda cluster_id: f"pulumi destroy keeps this cluster; delete it for good with: doctl databases delete {cluster_id}"))
pulumi.export("adminUserId", settings.admin_user_id)
pulumi.export("adminPassword", stack.secrets.admin_password)
# The team (secrets): each listed account's first password; each invitation's token and where to use it.
pulumi.export("initialPasswords", pulumi.Output.secret(pulumi.Output.all(**stack.secrets.user_passwords)))
pulumi.export("invitations", pulumi.Output.secret(pulumi.Output.all(**{
    name: token.apply(lambda t: {"signUpPage": settings.sign_up_url, "token": t})
    for name, token in stack.secrets.invitation_tokens.items()})))
pulumi.export("sshCommand", droplet.ipv4_address.apply(lambda ip: f"ssh root@{ip}"))
if stack.alerts is not None:  # where DigitalOcean's alerts go (README "What tells you something is wrong")
    pulumi.export("alertEmail", stack.alerts.email)
# What `pulumi destroy` leaves in the account, and how to remove it for good (README "Tearing down").
pulumi.export("dataVolume", stack.host.volume.name)
pulumi.export("dataVolumeId", stack.host.volume.id)
pulumi.export("dataVolumeKeptOnDestroy", stack.host.volume.id.apply(
    lambda volume_id: f"pulumi destroy keeps this volume; delete it for good with: doctl compute volume delete {volume_id}"))
if stack.media is not None:
    bucket = stack.media.bucket
    pulumi.export("mediaBucket", bucket.name)
    # Retained like the volume (components/cloud/media_bucket.py): the users' files stay in it.
    pulumi.export("mediaBucketKeptOnDestroy", pulumi.Output.all(bucket.name, bucket.region).apply(
        lambda v: f"pulumi destroy keeps this bucket and its files; empty and delete it for good in DigitalOcean's "
                  f"control panel (Spaces, {v[0]} in {v[1]}) or with an S3 client"))
    pulumi.export("backupBucket", stack.media.backup_bucket.name)
    # Secret: the key the off-volume backups are encrypted with. Keep a copy: a new stack restoring this
    # stack's backups imports it (README "Media and backups on Spaces").
    pulumi.export("backupEncryptionKey", stack.media.backup_encryption_key.base64)
