"""Authenticated Origin Pulls with the stack's own CA: only Cloudflare, for this zone, reaches the origin.

The firewall admits every Cloudflare address, so any Cloudflare customer could point a proxied name
at our droplet. Cloudflare's global origin-pull certificate is the same for every account (Cloudflare
docs, "Authenticated Origin Pulls"); a certificate of our own, uploaded for our hostnames only
(per-hostname AOP), is what ties the origin to this zone. nginx requires a client certificate signed
by this CA on every site.

Both keys are ECDSA P-256 (pulumi-tls), kept encrypted in the state. The client certificate is
renewed by a `pulumi up` in its last 30 days (early_renewal_hours); the CA, which nginx trusts,
lasts ten years, so a renewal changes nothing on the origin.
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from components.settings import Settings

HOURS_PER_YEAR = 24 * 365
CA_YEARS = 10
CLIENT_YEARS = 2
EARLY_RENEWAL_HOURS = 30 * 24


class OriginPullCertificates:
    """The CA (public part to nginx) and the client certificate Cloudflare presents (to Cloudflare)."""

    ca_cert_pem: pulumi.Output[str]
    client_cert_pem: pulumi.Output[str]
    client_key_pem: pulumi.Output[str]

    def __init__(self, name: str, settings: Settings, parent: pulumi.Resource) -> None:
        child = pulumi.ResourceOptions(parent=parent)
        def subject(common_name: str) -> tls.SelfSignedCertSubjectArgsDict:
            return {"organization": "matrix-stack", "organizational_unit": settings.resource_prefix,
                    "common_name": common_name}

        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            subject=subject(f"origin pull CA for {settings.domain}"),
            validity_period_hours=CA_YEARS * HOURS_PER_YEAR,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            opts=child,
        )
        client_key = tls.PrivateKey(f"{name}-client-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-client-request",
            private_key_pem=client_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(organization="matrix-stack", organizational_unit=settings.resource_prefix,
                                               common_name=f"Cloudflare origin pull for {settings.domain}"),
            opts=child,
        )
        client = tls.LocallySignedCert(
            f"{name}-client",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=CLIENT_YEARS * HOURS_PER_YEAR,
            early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=["client_auth", "digital_signature"],
            opts=child,
        )
        self.ca_cert_pem = ca.cert_pem
        self.client_cert_pem = client.cert_pem
        self.client_key_pem = pulumi.Output.secret(client_key.private_key_pem)
