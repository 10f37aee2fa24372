"""The droplets (the main one, and coturn's own when `turnDroplet` is on), their deploy key, the
protected data volume and the DigitalOcean project."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_digitalocean as do
import pulumi_tls as tls
from pulumi_command import remote

from components.cloud.adoption import VolumePlan, volume_description
from components.render import render
from components.settings import Settings

# Inputs of digitalocean.Volume that the provider can only change by creating a new volume.
VOLUME_REPLACING_INPUTS = ["name", "region", "description", "initialFilesystemType", "initialFilesystemLabel",
                           "filesystemType", "snapshotId"]


class PinnedKeyDroplet:
    """A droplet whose SSH host key the program generates: installed by cloud-init from the user data at
    creation and pinned in every step's connection (host_key), so no step talks to an impostor."""

    def __init__(self, name: str, parent: pulumi.Resource, deploy_key: tls.PrivateKey,
                 args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        self.host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519",
                                       opts=pulumi.ResourceOptions(parent=parent))
        keys = pulumi.Output.all(self.host_key.private_key_openssh, self.host_key.public_key_openssh)
        cloud_config: pulumi.Output[str] = keys.apply(lambda k: render(
            "cloud-init/user-data.yaml.j2", host_private_key=k[0], host_public_key=k[1].strip()))
        user_data: pulumi.Output[str] = pulumi.Output.secret(cloud_config)
        # Changing the user data replaces the droplet; it changes only with the host key.
        self.droplet = do.Droplet(f"{name}-droplet", user_data=user_data, **args, opts=opts)
        self.connection = remote.ConnectionArgs(
            host=self.droplet.ipv4_address,
            user="root",
            private_key=deploy_key.private_key_openssh,
            host_key=self.host_key.public_key_openssh.apply(str.strip),
            dial_error_limit=40,  # a fresh droplet takes a minute or two before sshd answers
            per_dial_timeout=15,
        )


class Host(pulumi.ComponentResource):
    """A Debian droplet with the data volume attached, reachable over SSH with the deploy key; and, with
    `turnDroplet`, a second small droplet for coturn alone (`turn`), reachable the same way."""

    droplet: do.Droplet
    turn: PinnedKeyDroplet | None
    volume: do.Volume
    attachment: do.VolumeAttachment
    deploy_key: tls.PrivateKey
    host_key: tls.PrivateKey
    connection: remote.ConnectionArgs
    project: do.Project

    def __init__(self, name: str, settings: Settings, volume_plan: VolumePlan,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("matrix-stack:cloud:Host", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = settings.resource_prefix

        self.deploy_key = tls.PrivateKey(f"{name}-deploy-key", algorithm="ED25519", opts=child)
        deploy_ssh_key = do.SshKey(
            f"{name}-deploy-key",
            name=f"{prefix}-deploy",
            public_key=self.deploy_key.public_key_openssh,
            opts=child,
        )
        user_keys = [
            do.SshKey(f"{name}-user-key-{i}", name=f"{prefix}-user-{i}", public_key=key, opts=child)
            for i, key in enumerate(settings.ssh_public_keys)
        ]

        # The volume outlives droplets and `pulumi destroy`: it holds the database, media and signing key.
        # - retain_on_delete, not protect: the engine refuses any deployment that would delete a
        #   protected resource, so a protected volume makes `pulumi destroy` fail at its preview.
        #   A retained one is dropped from the state and never deleted in the account, on destroy
        #   and on replacement (Pulumi docs, resource options "protect" and "retainOnDelete").
        # - ignore_changes on every input the provider can only apply by replacing the volume
        #   (name, region, description, filesystem and snapshot inputs), so no setting change ever
        #   swaps the data for an empty volume; only `size` (grow only) is applied in place.
        # - import_: a kept volume named by `adoptVolume` is adopted, not created (adoption.py).
        self.volume = do.Volume(
            f"{name}-data",
            name=volume_plan.name,
            region=settings.region,
            size=volume_plan.size_gb,
            initial_filesystem_type="xfs",
            description=volume_description(settings.domain),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, ignore_changes=VOLUME_REPLACING_INPUTS,
                                        import_=volume_plan.import_id),
        )

        # ssh_keys only seed root's authorized_keys at creation; changing them would replace the
        # droplet, so later key changes are applied by the base step instead (ignore_changes).
        # A new size replaces the droplet (replace_on_changes) instead of resizing it: the provider
        # resizes by powering the droplet off hard and grows its disk for good (resize_disk), while
        # a replacement stops the services and unmounts the volume first (release-volume), keeps
        # every byte on the volume, and can go back to a smaller size.
        ssh_keys = [deploy_ssh_key.fingerprint, *[k.fingerprint for k in user_keys]]
        common = {"image": settings.droplet_image, "region": settings.region, "monitoring": True,
                  "graceful_shutdown": True, "ssh_keys": ssh_keys,
                  "tags": ["matrix-stack", f"matrix-stack-{settings.stack}"]}

        def keep_keys() -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, ignore_changes=["sshKeys"], replace_on_changes=["size"])

        main = PinnedKeyDroplet(name, self, self.deploy_key,
                                {"name": prefix, "size": settings.droplet_size, "ipv6": True, **common}, keep_keys())
        self.droplet, self.host_key, self.connection = main.droplet, main.host_key, main.connection
        # coturn's own droplet holds no data: a replacement (new size or image) provisions the new one,
        # created before the old one is deleted (the engine's default; Pulumi docs, resource option
        # "deleteBeforeReplace"), and its steps follow it (a new address updates their connection).
        # IPv4 only, like the turn. record (edge.py).
        self.turn = PinnedKeyDroplet(
            f"{name}-turn", self, self.deploy_key,
            {"name": f"{prefix}-turn", "size": settings.turn_droplet_size, "ipv6": False, **common}, keep_keys(),
        ) if settings.turn_droplet else None
        # A volume attaches to one droplet at a time: on droplet replacement detach first.
        self.attachment = do.VolumeAttachment(
            f"{name}-data-attachment",
            droplet_id=self.droplet.id.apply(int),
            volume_id=self.volume.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        # On destroy the provider first moves the project's members to the default project (the
        # retained volume among them) and retries the delete until DigitalOcean has done so; that
        # can take longer than the 3-minute default (terraform-provider-digitalocean #943, #1608).
        self.project = do.Project(
            f"{name}-project",
            name=prefix,
            description=f"Matrix server {settings.domain} (matrix-stack, stack {settings.stack})",
            purpose="Service or API",
            environment="Production" if settings.stack.startswith("prod") else "Development",
            resources=[self.droplet.droplet_urn, self.volume.volume_urn,
                       *([self.turn.droplet.droplet_urn] if self.turn else [])],
            opts=pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(delete="15m")),
        )
        self.register_outputs(
            {"ipv4": self.droplet.ipv4_address, "ipv6": self.droplet.ipv6_address, "volume": self.volume.id}
        )
