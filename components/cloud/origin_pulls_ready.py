"""Wait until Cloudflare presents the stack's origin-pull certificate for each of its names.

Per-hostname origin-pull certificates and hostname associations deploy asynchronously: the API answers
`pending_deployment` and the status becomes `active` minutes later (API reference, "Per-hostname
Authenticated Origin Pull"), and terraform-provider-cloudflare returns at once
(internal/services/authenticated_origin_pulls_hostname_certificate/resource.go: one POST, no polling).
nginx requires the certificate from its first step, so until then every request through Cloudflare
would fail and the first `up`'s self-check with it. This resource polls the certificate and each
association until they are active, for a bounded time, and nginx's step waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from components.cloud.cloudflare_api import CloudflareApiError, CloudflareProvider

ACTIVE = "active"
FAILED = ("deployment_timed_out", "deleted", "deletion_timed_out", "pending_deletion")


class OriginPullsNotActive(RuntimeError):
    """Cloudflare did not report the certificate and every association active within the wait."""


class OriginPullsReadyProvider(CloudflareProvider):
    """Polls GET .../hostnames/certificates/<id> and GET .../hostnames/<name> until all are active."""

    wait_seconds = 15 * 60.0  # Cloudflare publishes no figure; "a few minutes" is what users see
    poll_seconds = 10.0

    def _statuses(self, props: dict[str, Any]) -> dict[str, str]:
        """What is not active yet: certificate or hostname -> its status (empty when all are active)."""
        zone, certificate = props["zone_id"], props["certificate_id"]
        base = f"/zones/{zone}/origin_tls_client_auth/hostnames"
        pending: dict[str, str] = {}
        status = self._call("GET", f"{base}/certificates/{certificate}").get("status", "")
        if status != ACTIVE:
            pending[f"certificate {certificate}"] = status
        for hostname in props["hostnames"]:
            try:
                association = self._call("GET", f"{base}/{hostname}")
            except CloudflareApiError as error:
                if error.status != 404:
                    raise
                association = {"status": "missing"}
            if association.get("cert_id") not in (None, certificate) or association.get("enabled") is False:
                pending[hostname] = f"associated with {association.get('cert_id')}, enabled={association.get('enabled')}"
            elif association.get("status") != ACTIVE:
                pending[hostname] = str(association.get("status"))
        return pending

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            pending = self._statuses(props)
            broken = {k: v for k, v in pending.items() if v in FAILED or v.startswith("associated with")}
            if broken:
                raise OriginPullsNotActive(f"Authenticated Origin Pulls: {broken}")
            if not pending:
                return {**props, "active": True}
            if time.monotonic() >= deadline:
                raise OriginPullsNotActive(
                    f"Authenticated Origin Pulls not active after {self.wait_seconds / 60:.0f} min: {pending} "
                    "(Cloudflare deploys certificates asynchronously; run `pulumi up` again later)")
            time.sleep(self.poll_seconds)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['zone_id']}/{props['certificate_id']}", outs=self._wait(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, {**props, "active": not self._statuses(props)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("zone_id", "certificate_id", "hostnames")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys) or olds.get("active") is not True)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._wait(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to undo: it only waited."""


class OriginPullsReady(Resource):
    """Done once Cloudflare presents `certificate_id` for every name in `hostnames`."""

    def __init__(self, name: str, zone_id: pulumi.Input[str], certificate_id: pulumi.Input[str],
                 hostnames: Sequence[str], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(OriginPullsReadyProvider(), name, {
            "zone_id": zone_id, "certificate_id": certificate_id, "hostnames": list(hostnames), "active": None,
        }, opts)
