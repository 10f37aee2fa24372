"""`mediaStorage: spaces`: a DigitalOcean Spaces bucket for Synapse's media and another for a copy of
each backup, each with an access key that can reach that bucket alone.

A Spaces key's grant is a whole bucket, never a prefix, so the backups have a bucket of their own: the
key Synapse holds (in homeserver.yaml) cannot read, delete or plant a backup. The backups' key is only
in a root-only file. Every backup is encrypted and authenticated on the droplet before it leaves
(AES-256-GCM, with a key the program generates: pulumi-random, never on the bucket), and checked before
anything is restored from it. The backups bucket keeps versions: a backup deleted or overwritten stays
recoverable for backupKeepDays (noncurrent versions expire then, like the current ones).

The buckets hold users' files: like the volume they are retained, not deleted, when they leave the
program (`pulumi destroy`, `mediaStorage` back to local); the engine drops them from the state and
leaves them in the account (Pulumi docs, resource option "retainOnDelete"). The keys are the program's
own and are deleted with the stack. Objects under `backups/` of the media bucket (where earlier versions
put their copies) still expire after backupKeepDays.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random

from components.settings import Settings

MEDIA_PREFIX = "media/"  # synapse-s3-storage-provider's prefix: it cannot change once media is uploaded
BACKUP_PREFIX = "backups/"
# A Spaces key's narrowest grant: "read", "readwrite" or "fullaccess" (the last for every bucket).
# Synapse writes media and the backup writes dumps, so readwrite on this one bucket.
KEY_PERMISSION = "readwrite"


@dataclass(frozen=True)
class MediaBucketEndpoint:
    """What the droplet needs to reach the buckets."""

    bucket: pulumi.Input[str]
    region: str
    endpoint_url: pulumi.Input[str]  # https://<region>.digitaloceanspaces.com, from the bucket
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]  # secret
    backup_bucket: pulumi.Input[str]
    backup_access_key: pulumi.Input[str]
    backup_secret_key: pulumi.Input[str]  # secret; root's alone on the droplet
    backup_encryption_key: pulumi.Input[str]  # secret: base64 of 32 random bytes


class MediaBucket(pulumi.ComponentResource):
    """The private bucket (retained on delete, backups expiring) and its bucket-scoped key."""

    bucket: do.SpacesBucket
    key: do.SpacesKey
    backup_bucket: do.SpacesBucket
    backup_key: do.SpacesKey
    backup_encryption_key: random.RandomBytes
    endpoint: MediaBucketEndpoint

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("matrix-stack:cloud:MediaBucket", name, {}, opts)
        self.bucket = do.SpacesBucket(
            f"{name}-bucket",
            name=settings.spaces_bucket_name,
            region=settings.spaces_bucket_region,
            acl="private",
            # Never empty a bucket of users' files to delete it (the default, stated for the reader).
            force_destroy=False,
            lifecycle_rules=[do.SpacesBucketLifecycleRuleArgs(
                enabled=True, prefix=BACKUP_PREFIX,
                expiration=do.SpacesBucketLifecycleRuleExpirationArgs(days=settings.backup_keep_days),
            )],
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.key = do.SpacesKey(
            f"{name}-key",
            name=f"{settings.resource_prefix}-synapse-media"[:63],
            grants=[do.SpacesKeyGrantArgs(bucket=self.bucket.name, permission=KEY_PERMISSION)],
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretKey"]),
        )
        # Versioned: what is deleted or overwritten stays as a noncurrent version for backupKeepDays.
        keep = settings.backup_keep_days
        self.backup_bucket = do.SpacesBucket(
            f"{name}-backups",
            name=settings.spaces_backup_bucket_name,
            region=settings.spaces_bucket_region,
            acl="private",
            force_destroy=False,
            versioning=do.SpacesBucketVersioningArgs(enabled=True),
            lifecycle_rules=[do.SpacesBucketLifecycleRuleArgs(
                enabled=True, prefix=BACKUP_PREFIX,
                expiration=do.SpacesBucketLifecycleRuleExpirationArgs(days=keep),
                noncurrent_version_expiration=do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs(days=keep),
            )],
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.backup_key = do.SpacesKey(
            f"{name}-backup-key",
            name=f"{settings.resource_prefix}-backups"[:63],
            grants=[do.SpacesKeyGrantArgs(bucket=self.backup_bucket.name, permission=KEY_PERMISSION)],
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretKey"]),
        )
        # The backups' encryption key: in the state (encrypted) and on the droplet (0600 root) only. A new
        # stack restoring an old stack's bucket imports the old value (README "Media and backups on Spaces").
        self.backup_encryption_key = random.RandomBytes(f"{name}-backup-encryption-key", length=32,
                                                        opts=pulumi.ResourceOptions(parent=self))
        self.endpoint = MediaBucketEndpoint(
            bucket=self.bucket.name,
            region=settings.spaces_bucket_region,
            endpoint_url=self.bucket.endpoint.apply(lambda host: f"https://{host}"),
            access_key=self.key.access_key,
            secret_key=pulumi.Output.secret(self.key.secret_key),
            backup_bucket=self.backup_bucket.name,
            backup_access_key=self.backup_key.access_key,
            backup_secret_key=pulumi.Output.secret(self.backup_key.secret_key),
            backup_encryption_key=pulumi.Output.secret(self.backup_encryption_key.base64),
        )
        self.register_outputs({"bucket": self.bucket.name, "backupBucket": self.backup_bucket.name})
