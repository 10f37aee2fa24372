"""Real keys and certificates where pulumi-tls would make them (the provider cannot run here).

The mocks hand the program what pulumi-tls returns: PEM keys, a self-signed CA, a CSR and a certificate
signed by that CA, with the requested uses. They are real, so nginx loads the CA, the edge stand-in
presents the client certificate and TLS verifies it. Each is made once per identity (the resource's
name, inputs and stack life) and cached, so two recordings of one stack life see the same PEMs,
as two `pulumi up`s would.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_cache: dict[str, Any] = {}
_NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _cached(identity: str, make: Any) -> Any:
    if identity not in _cache:
        _cache[identity] = make()
    return _cache[identity]


def private_key_pem(identity: str) -> str:
    """An ECDSA P-256 key in PKCS#8 PEM, as tls.PrivateKey(algorithm="ECDSA") gives it."""
    def make() -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    return str(_cached(f"key|{identity}", make))


def public_key_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _name(subject: dict[str, Any] | None) -> x509.Name:
    fields = {"common_name": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME,
              "organizational_unit": NameOID.ORGANIZATIONAL_UNIT_NAME}
    subject = subject or {}
    # the provider's inputs arrive camelCased from the mock monitor
    aliases = {"commonName": "common_name", "organizationalUnit": "organizational_unit"}
    subject = {aliases.get(k, k): v for k, v in subject.items()}
    return x509.Name([x509.NameAttribute(oid, str(subject[k])) for k, oid in fields.items() if subject.get(k)])


def _usages(uses: list[str], builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    extended = {"client_auth": ExtendedKeyUsageOID.CLIENT_AUTH, "server_auth": ExtendedKeyUsageOID.SERVER_AUTH}
    ekus = [extended[u] for u in uses if u in extended]
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    return builder.add_extension(x509.KeyUsage(
        digital_signature="digital_signature" in uses, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign="cert_signing" in uses,
        crl_sign="crl_signing" in uses, encipher_only=False, decipher_only=False), critical=True)


def self_signed_cert(identity: str, private_pem: str, subject: dict[str, Any] | None, is_ca: bool,
                     uses: list[str], hours: int) -> str:
    def make() -> str:
        key = serialization.load_pem_private_key(private_pem.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        name = _name(subject)
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(_NOT_BEFORE)
                   .not_valid_after(_NOT_BEFORE + datetime.timedelta(hours=hours))
                   .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        cert = _usages(uses, builder).sign(key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode()
    return str(_cached(f"ca|{identity}", make))


def cert_request(identity: str, private_pem: str, subject: dict[str, Any] | None) -> str:
    def make() -> str:
        key = serialization.load_pem_private_key(private_pem.encode(), None)
        csr = x509.CertificateSigningRequestBuilder().subject_name(_name(subject)).sign(key, hashes.SHA256())  # type: ignore[arg-type]
        return csr.public_bytes(serialization.Encoding.PEM).decode()
    return str(_cached(f"csr|{identity}", make))


def locally_signed_cert(identity: str, csr_pem: str, ca_key_pem: str, ca_cert_pem: str, uses: list[str],
                        hours: int) -> str:
    def make() -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
        ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
                   .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_BEFORE + datetime.timedelta(hours=hours))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                                  critical=False))
        cert = _usages(uses, builder).sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        return cert.public_bytes(serialization.Encoding.PEM).decode()
    return str(_cached(f"signed|{identity}", make))


def origin_pull_pair(identity: str = "tests") -> tuple[str, str]:
    """(CA certificate, client certificate + key) as the program's origin-pull certificates give them."""
    ca_key = private_key_pem(f"{identity}|ca-key")
    ca = self_signed_cert(f"{identity}|ca", ca_key, {"common_name": "origin pull CA"}, True,
                          ["cert_signing", "crl_signing", "digital_signature"], 24 * 3650)
    client_key = private_key_pem(f"{identity}|client-key")
    csr = cert_request(f"{identity}|csr", client_key, {"common_name": "Cloudflare origin pull"})
    client = locally_signed_cert(f"{identity}|client", csr, ca_key, ca, ["client_auth", "digital_signature"], 24 * 730)
    return ca, client.rstrip("\n") + "\n" + client_key.rstrip("\n") + "\n"


def _general_name(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS name SAN otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_cert(identity: str, ca_key_pem: str, ca_cert_pem: str, names: list[str]) -> tuple[str, str]:
    """(certificate, key) for TLS servers named `names`, signed by the CA (the edge's certificates)."""
    def make() -> tuple[str, str]:
        key_pem = private_key_pem(f"server|{identity}")
        key = serialization.load_pem_private_key(key_pem.encode(), None)
        ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
        ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        builder = (x509.CertificateBuilder().subject_name(_name({"common_name": names[0]})).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
                   .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_BEFORE + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
                   # Python 3.13's default TLS context (VERIFY_X509_STRICT) refuses a certificate without it,
                   # as Debian 13's clients do; publicly trusted certificates (Cloudflare's) carry it.
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                                  critical=False))
        cert = _usages(["server_auth", "digital_signature"], builder).sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem
    result: tuple[str, str] = _cached(f"server|{identity}|{','.join(names)}", make)
    return result
