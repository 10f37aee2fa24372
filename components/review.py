"""Write every file and script each step would push, for review or audit, with no cloud access.

    python -m components.review OUT_DIR [--stack-config Pulumi.dev.yaml] [--stack dev]

Reads the stack's `matrix-stack:` settings from a stack config file (secrets there stay encrypted
and are not needed), renders every step exactly as `pulumi up` would, and writes
OUT_DIR/<step>/script.sh, OUT_DIR/<step>/files/<absolute path> and OUT_DIR/<step>/bundle.sh.
Generated secrets and host facts that only exist in a deployment (addresses, Cloudflare's ranges)
are placeholders: `<secret:postgres_password>` and the like, documentation addresses (192.0.2.1,
2001:db8::1 for the droplet, 192.0.2.2 for the TURN droplet; 198.51.100.0/24, 2001:db8:cf::/48 for Cloudflare), so the output is
safe to share. Without Cloudflare access the zone is assumed to have no website on the server name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import yaml

from components import paths
from components.cloud.database import DatabaseEndpoint
from components.cloud.media_bucket import MediaBucketEndpoint
from components.cloud.secrets import WorkerSecrets
from components.remote import StepSpec, bundle_text
from components.services import ServiceContext, health, release
from components.settings import PROJECT, load
from components.stack import SERVICE_ORDER, turn_steps

SECRET_FIELDS = ("postgres_password", "registration_shared_secret", "macaroon_secret", "form_secret",
                 "turn_shared_secret", "admin_password", "health_token", "smtp_password")


def placeholder_context(raw: dict[str, str], stack: str) -> ServiceContext:
    """The settings from `raw`, with placeholders for what only a deployment knows."""
    raw = {**raw, "certbotCloudflareToken": raw.get("certbotCloudflareToken") or "<secret:certbotCloudflareToken>"}
    settings, config_secrets = load(raw, stack)
    return ServiceContext(
        settings=settings,
        deploy_public_key="<deploy public key>",
        droplet_ipv4="192.0.2.1",  # documentation addresses stand for the droplet's
        droplet_ipv6="2001:db8::1",
        cloudflare_ipv4=["198.51.100.0/24"],  # and these for Cloudflare's published ranges
        cloudflare_ipv6=["2001:db8:cf::/48"],
        certbot_token=config_secrets.certbot_cloudflare_token,
        signing_key="<secret:signing_key>\n",
        origin_pull_ca="<origin-pull CA certificate (pulumi-tls)>\n",
        origin_pull_client="<secret:origin_pull_client certificate and key>\n",
        website_on_server_name=False,  # what the zone holds is only known with Cloudflare access
        role="main",
        database=DatabaseEndpoint(
            host="private-<cluster>.db.ondigitalocean.com", port=25060, user=paths.POSTGRES_USER,
            password="<secret:managed database password>", admin_user="doadmin",
            admin_password="<secret:managed database admin password>",
            ca_certificate="<the cluster's CA certificate (getDatabaseCa)>\n",
        ) if settings.managed_database else None,
        media=MediaBucketEndpoint(
            bucket=settings.spaces_bucket_name, region=settings.spaces_bucket_region,
            endpoint_url=f"https://{settings.spaces_bucket_region}.digitaloceanspaces.com",
            access_key="<Spaces access key>", secret_key="<secret:Spaces secret key>",
            backup_bucket=settings.spaces_backup_bucket_name, backup_access_key="<Spaces access key of the backups>",
            backup_secret_key="<secret:Spaces secret key of the backups>",
            backup_encryption_key="<secret:backup encryption key>",
        ) if settings.media_on_spaces else None,
        worker_secrets=WorkerSecrets(redis_password="<secret:redis_password>",
                                     replication_secret="<secret:replication_secret>")
        if settings.synapse_workers else None,
        **cast(dict[str, Any], {name: f"<secret:{name}>" for name in SECRET_FIELDS}),
    )


def all_steps(ctx: ServiceContext) -> list[StepSpec]:
    """Every step in the order the stack runs them (the volume guard first, the checks between deploys last)."""
    main = [spec for module in (release, *SERVICE_ORDER) for spec in module.steps(ctx)]
    if ctx.settings.turn_droplet:
        # The TURN droplet's address stands in as the next documentation address.
        main += turn_steps(dataclasses.replace(ctx, droplet_ipv4="192.0.2.2", droplet_ipv6="", role="turn"))
    return main + health.steps(ctx)


def write(out: Path, ctx: ServiceContext) -> list[str]:
    """Write each step's script, files and complete bundle under `out`; returns the step names."""
    names = []
    for spec in all_steps(ctx):
        contents = [str(f.content) for f in spec.files]
        step_dir = out / spec.name
        (step_dir / "files").mkdir(parents=True, exist_ok=True)
        (step_dir / "script.sh").write_text(spec.script)
        (step_dir / "bundle.sh").write_text(bundle_text(spec, contents))
        for file, content in zip(spec.files, contents):
            target = step_dir / "files" / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        names.append(spec.name)
    return names


def stack_settings(path: Path) -> dict[str, str]:
    """The plain `matrix-stack:` settings of a stack config file, as `pulumi config` stores them."""
    config: dict[str, Any] = yaml.safe_load(path.read_text()).get("config", {})
    prefix = f"{PROJECT}:"
    return {k[len(prefix):]: v if isinstance(v, str) else json.dumps(v)
            for k, v in config.items() if k.startswith(prefix) and not isinstance(v, dict)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.review", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the steps into")
    parser.add_argument("--stack-config", type=Path, default=Path("Pulumi.dev.yaml"))
    parser.add_argument("--stack", default=None, help="stack name (default: from the file name)")
    args = parser.parse_args(argv)
    stack = args.stack or args.stack_config.name.removeprefix("Pulumi.").removesuffix(".yaml")
    names = write(args.out, placeholder_context(stack_settings(args.stack_config), stack))
    print(f"wrote {len(names)} steps to {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
