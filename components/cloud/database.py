"""`database: managed`: a DigitalOcean Managed PostgreSQL cluster for Synapse, open to the droplet alone.

The cluster, Synapse's user and the trusted source are resources here; the database itself is created
by the droplet's `postgres-managed` step, in SQL as the cluster's admin role, because the provider's
database resource has no encoding or collation option and Synapse needs UTF8 with C collation
(services/postgres.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from components import paths
from components.settings import Settings


@dataclass(frozen=True)
class DatabaseEndpoint:
    """What the droplet needs to reach the cluster: address, identities and the CA to verify it by."""

    host: pulumi.Input[str]  # the cluster's private (VPC) host name, which its certificate names
    port: pulumi.Input[int]
    user: str  # Synapse's role
    password: pulumi.Input[str]  # secret
    admin_user: pulumi.Input[str]  # the cluster's admin (doadmin): not a superuser
    admin_password: pulumi.Input[str]  # secret
    ca_certificate: pulumi.Input[str]  # the cluster's CA (sslmode=verify-full)


class ManagedDatabase(pulumi.ComponentResource):
    """The cluster (one node, the droplet image's PostgreSQL major), Synapse's user and the firewall
    that trusts only the main droplet."""

    cluster: do.DatabaseCluster
    user: do.DatabaseUser
    firewall: do.DatabaseFirewall
    endpoint: DatabaseEndpoint

    def __init__(self, name: str, settings: Settings, droplet_id: pulumi.Input[str],
                 project_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("matrix-stack:cloud:ManagedDatabase", name, {}, opts)
        # The cluster holds every message once Synapse uses it: like the volume it is retained, not
        # deleted, when it leaves the program (`pulumi destroy`, `database` back to local, a
        # replacement): the engine drops it from the state and leaves it in the account (Pulumi docs,
        # resource option "retainOnDelete"). Its version follows the droplet image's PostgreSQL, so
        # the droplet's pg_dump and pg_restore (same major) can move the data both ways.
        self.cluster = do.DatabaseCluster(
            f"{name}-cluster",
            name=f"{settings.resource_prefix}-db"[:63],
            engine="pg",
            version=settings.platform.postgres_major,
            size=settings.database_size,
            region=settings.region,
            node_count=1,
            project_id=project_id,
            tags=["matrix-stack", f"matrix-stack-{settings.stack}"],
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.user = do.DatabaseUser(f"{name}-synapse-user", cluster_id=self.cluster.id, name=paths.POSTGRES_USER,
                                    opts=pulumi.ResourceOptions(parent=self))
        # Trusted sources: the main droplet only (a "droplet" rule covers its public and private
        # addresses; a replacement droplet's id updates the rule before its steps connect).
        self.firewall = do.DatabaseFirewall(
            f"{name}-firewall",
            cluster_id=self.cluster.id,
            rules=[do.DatabaseFirewallRuleArgs(type="droplet", value=droplet_id)],
            opts=pulumi.ResourceOptions(parent=self),
        )
        ca = do.get_database_ca_output(cluster_id=self.cluster.id, opts=pulumi.InvokeOptions(parent=self))
        self.endpoint = DatabaseEndpoint(
            host=self.cluster.private_host,
            port=self.cluster.port,
            user=paths.POSTGRES_USER,
            password=pulumi.Output.secret(self.user.password),
            admin_user=self.cluster.user,
            admin_password=pulumi.Output.secret(self.cluster.password),
            ca_certificate=ca.certificate,
        )
        self.register_outputs({"host": self.cluster.private_host})
