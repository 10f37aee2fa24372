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
        keep = settings.backup_keep_days
        # Media never expire; the backups an earlier version copied here expire like those on the volume.
        self.bucket = self._private_bucket(f"{name}-bucket", settings.spaces_bucket_name, settings,
                                           do.SpacesBucketLifecycleRuleArgs(
                                               enabled=True, prefix=BACKUP_PREFIX,
                                               expiration=do.SpacesBucketLifecycleRuleExpirationArgs(days=keep)))
        self.key = self._key_for(f"{name}-key", f"{settings.resource_prefix}-synapse-media", self.bucket)
        # Versioned: what is deleted or overwritten stays as a noncurrent version for backupKeepDays.
        self.backup_bucket = self._private_bucket(
            f"{name}-backups", settings.spaces_backup_bucket_name, settings, do.SpacesBucketLifecycleRuleArgs(
                enabled=True, prefix=BACKUP_PREFIX, expiration=do.SpacesBucketLifecycleRuleExpirationArgs(days=keep),
                noncurrent_version_expiration=do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs(days=keep)),
            versioning=do.SpacesBucketVersioningArgs(enabled=True))
        self.backup_key = self._key_for(f"{name}-backup-key", f"{settings.resource_prefix}-backups", self.backup_bucket)
        # The backups' encryption key: in the state (encrypted) and on the droplet (0600 root) only. A new
        # stack restoring an old stack's bucket imports the old value (docs/grow.md, "Media and backups on Spaces").
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

    def _private_bucket(self, resource: str, name: str, settings: Settings, rule: do.SpacesBucketLifecycleRuleArgs,
                        versioning: do.SpacesBucketVersioningArgs | None = None) -> do.SpacesBucket:
        """A private bucket that the engine leaves in the account when it leaves the program (retained),
        and that is never emptied to be deleted (force_destroy off, the default, stated for the reader).
        It keeps the name it was created with: the provider accepts a new name and never applies it (its
        update does not rename a bucket: terraform-provider-digitalocean spaces/resource_spaces_bucket.go),
        and a new bucket would not hold the files (the name setting is read once)."""
        return do.SpacesBucket(resource, name=name, region=settings.spaces_bucket_region, acl="private",
                               force_destroy=False, versioning=versioning, lifecycle_rules=[rule],
                               opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, ignore_changes=["name"]))

    def _key_for(self, resource: str, name: str, bucket: do.SpacesBucket) -> do.SpacesKey:
        """A Spaces key granted this one bucket, its secret a secret output."""
        return do.SpacesKey(resource, name=name[:63],
                            grants=[do.SpacesKeyGrantArgs(bucket=bucket.name, permission=KEY_PERMISSION)],
                            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretKey"]))
