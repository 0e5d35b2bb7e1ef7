"""A small test PKI: certificate authorities and leaf certificates made with ``cryptography``.

Used by the demo, the tests and the benchmarks to stand in for Apple's signing chain, device
identity certificates and the MDM push certificate. Nothing here is for production keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_UTC = dt.UTC


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key (and the chain above it, nearest issuer first)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_der(self) -> bytes:
        """The certificate alone, DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)


def new_key(kind: str = "rsa") -> PrivateKey:
    """A fresh private key: ``rsa`` (2048 bits) or ``ec`` (P-256)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def name(common_name: str, **attrs: str) -> x509.Name:
    """An X.509 name from a common name plus optional ``O``, ``OU``, ``C``, ``UID`` attributes."""
    oids = {
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "C": NameOID.COUNTRY_NAME,
        "UID": NameOID.USER_ID,
    }
    parts = [x509.NameAttribute(oids[k], v) for k, v in attrs.items()]
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def make_ca(
    common_name: str,
    *,
    issuer: Issued | None = None,
    not_before: dt.datetime | None = None,
    days: int = 3650,
    key_kind: str = "rsa",
    **attrs: str,
) -> Issued:
    """A CA certificate: self-signed when ``issuer`` is None, else an intermediate under it."""
    key = new_key(key_kind)
    start = not_before or dt.datetime.now(_UTC) - dt.timedelta(days=1)
    subject = name(common_name, **attrs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signing_key = issuer.key if issuer else key
    cert = builder.sign(signing_key, hashes.SHA256())
    chain = (issuer.cert, *issuer.chain) if issuer else ()
    return Issued(cert=cert, key=key, chain=chain)


def issue_leaf(
    issuer: Issued,
    common_name: str,
    *,
    not_before: dt.datetime | None = None,
    days: int = 365,
    key_kind: str = "rsa",
    client_auth: bool = False,
    server_auth: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    key: PrivateKey | None = None,
    **attrs: str,
) -> Issued:
    """A leaf certificate signed by ``issuer`` (key usage for signing; optional TLS usages).

    ``key`` reuses an existing private key (many certificates over one key cost one signature
    each, no key generation); by default a new ``key_kind`` key is made.
    """
    import ipaddress

    key = key or new_key(key_kind)
    start = not_before or dt.datetime.now(_UTC) - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common_name, **attrs))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    usages = []
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    return Issued(cert=cert, key=key, chain=(issuer.cert, *issuer.chain))
