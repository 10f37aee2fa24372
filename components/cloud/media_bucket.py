"""`mediaStorage: spaces`: a DigitalOcean Spaces bucket for Synapse's media and a copy of each backup,
and an access key that can reach that bucket alone.

The bucket holds users' files: like the volume it is retained, not deleted, when it leaves the
program (`pulumi destroy`, `mediaStorage` back to local); the engine drops it from the state and
leaves it in the account (Pulumi docs, resource option "retainOnDelete"). The key is the program's
own and is deleted with the stack. Objects under `backups/` expire after backupKeepDays by the
bucket's lifecycle rule, as the copies on the volume do.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from components.settings import Settings

MEDIA_PREFIX = "media/"  # synapse-s3-storage-provider's prefix: it cannot change once media is uploaded
BACKUP_PREFIX = "backups/"
# A Spaces key's narrowest grant: "read", "readwrite" or "fullaccess" (the last for every bucket).
# Synapse writes media and the backup writes dumps, so readwrite on this one bucket.
KEY_PERMISSION = "readwrite"


@dataclass(frozen=True)
class MediaBucketEndpoint:
    """What the droplet needs to reach the bucket."""

    bucket: pulumi.Input[str]
    region: str
    endpoint_url: pulumi.Input[str]  # https://<region>.digitaloceanspaces.com, from the bucket
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]  # secret


class MediaBucket(pulumi.ComponentResource):
    """The private bucket (retained on delete, backups expiring) and its bucket-scoped key."""

    bucket: do.SpacesBucket
    key: do.SpacesKey
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
            # The provider accepts a new name and never applies it (its update does not rename a bucket:
            # terraform-provider-digitalocean spaces/resource_spaces_bucket.go), and a new bucket would not hold
            # the users' files: the bucket keeps the name it was created with (mediaBucket is read once).
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, ignore_changes=["name"]),
        )
        self.key = do.SpacesKey(
            f"{name}-key",
            name=f"{settings.resource_prefix}-synapse-media"[:63],
            grants=[do.SpacesKeyGrantArgs(bucket=self.bucket.name, permission=KEY_PERMISSION)],
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretKey"]),
        )
        self.endpoint = MediaBucketEndpoint(
            bucket=self.bucket.name,
            region=settings.spaces_bucket_region,
            endpoint_url=self.bucket.endpoint.apply(lambda host: f"https://{host}"),
            access_key=self.key.access_key,
            secret_key=pulumi.Output.secret(self.key.secret_key),
        )
        self.register_outputs({"bucket": self.bucket.name})
