"""The MDM push certificate: loading (PKCS#12 or PEM), its topic, its expiry, its TLS context.

Apple puts the MDM topic (``com.apple.mgmt.External.<uuid>``) in the certificate subject's UID
(userID, OID 0.9.2342.19200300.100.1.1) attribute; every push must carry it as ``apns-topic``.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from rollout.apns.errors import CertificateLoadError, TopicError

MDM_TOPIC_PREFIX = "com.apple.mgmt."

PushKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def topic_from_certificate(cert: x509.Certificate) -> str:
    """The MDM topic in the subject's UID attribute; ``TopicError`` when absent or not MDM."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    subject = cert.subject.rfc4514_string()
    if not attrs:
        raise TopicError(f"push certificate has no UID attribute in its subject ({subject})")
    value = attrs[0].value
    uid = value.decode() if isinstance(value, bytes) else str(value)
    if not uid.startswith(MDM_TOPIC_PREFIX):
        raise TopicError(
            f"push certificate UID {uid!r} is not an MDM topic (must start with "
            f"{MDM_TOPIC_PREFIX!r})"
        )
    return uid


@dataclass(frozen=True)
class PushCertificate:
    """The push certificate, its private key (absent for a public-only file) and its topic."""

    cert: x509.Certificate
    key: PushKey | None
    topic: str | None
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def not_after(self) -> dt.datetime:
        """Expiry (aware, UTC): alert well before it; a *renewed* certificate keeps the topic."""
        return self.cert.not_valid_after_utc

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string."""
        return self.cert.subject.rfc4514_string()

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        """True when ``now`` (default: the current time) is past ``not_after``."""
        return (now or dt.datetime.now(dt.UTC)) > self.not_after

    def expires_in(self, now: dt.datetime | None = None) -> dt.timedelta:
        """Time left before expiry (negative once expired)."""
        return self.not_after - (now or dt.datetime.now(dt.UTC))

    def cert_pem(self) -> bytes:
        """The certificate and its chain, PEM."""
        enc = serialization.Encoding.PEM
        return b"".join(c.public_bytes(enc) for c in (self.cert, *self.chain))

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (``CertificateLoadError`` when absent)."""
        if self.key is None:
            raise CertificateLoadError("push certificate has no private key")
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def require_topic(self) -> str:
        """The topic, or ``TopicError``."""
        if self.topic is None:
            return topic_from_certificate(self.cert)
        return self.topic

    def ssl_context(self, ca_file: str | None = None) -> ssl.SSLContext:
        """A client TLS context presenting this certificate, offering ALPN ``h2``, TLS 1.2+.

        ``ca_file`` replaces the system trust store (tests and the stand-in).
        """
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["h2"])
        # load_cert_chain only reads files: write a private temp file and remove it at once.
        fd, path = tempfile.mkstemp(prefix="apns-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.cert_pem() + self.key_pem())
            ctx.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise CertificateLoadError(f"TLS library refused the certificate/key: {exc}") from exc
        finally:
            os.unlink(path)
        return ctx


def _read(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CertificateLoadError(f"cannot read {source}: {exc}") from exc


def _pw(password: str | bytes | None) -> bytes | None:
    return password.encode() if isinstance(password, str) else password


def _finish(
    cert: x509.Certificate,
    key: PushKey | None,
    chain: Sequence[x509.Certificate],
    *,
    require_key: bool,
    require_topic: bool,
) -> PushCertificate:
    if key is None and require_key:
        raise CertificateLoadError("no private key found for the push certificate")
    if key is not None:
        same = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not same:
            raise CertificateLoadError("the private key does not match the push certificate")
    if require_topic:
        topic: str | None = topic_from_certificate(cert)
    else:
        try:
            topic = topic_from_certificate(cert)
        except TopicError:
            topic = None
    return PushCertificate(cert=cert, key=key, topic=topic, chain=tuple(chain))


def load_pkcs12(
    source: str | os.PathLike[str] | bytes,
    password: str | bytes | None = None,
    *,
    require_topic: bool = True,
) -> PushCertificate:
    """Load a ``.p12``/``.pfx`` (legacy RC2-40 encryption included) with its key."""
    data = _read(source)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, _pw(password))
    except ValueError as exc:
        raise CertificateLoadError(f"cannot open PKCS#12 (wrong password?): {exc}") from exc
    if cert is None:
        raise CertificateLoadError("PKCS#12 holds no certificate")
    if key is not None and not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateLoadError(f"unsupported key type {type(key).__name__}")
    return _finish(cert, key, extra, require_key=True, require_topic=require_topic)


def load_pem(
    cert_source: str | os.PathLike[str] | bytes,
    key_source: str | os.PathLike[str] | bytes | None = None,
    password: str | bytes | None = None,
    *,
    require_key: bool = True,
    require_topic: bool = True,
) -> PushCertificate:
    """Load PEM: certificate and key in one file, or the key in ``key_source``.

    ``require_key=False`` accepts a public-only file (to read the topic and expiry).
    """
    data = _read(cert_source)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateLoadError(f"no PEM certificate found: {exc}") from exc
    key_data = _read(key_source) if key_source is not None else data
    key: PushKey | None = None
    if b"PRIVATE KEY-----" in key_data:
        try:
            loaded = serialization.load_pem_private_key(key_data, _pw(password))
        except (ValueError, TypeError) as exc:
            raise CertificateLoadError(f"cannot read the private key: {exc}") from exc
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise CertificateLoadError(f"unsupported key type {type(loaded).__name__}")
        key = loaded
    return _finish(certs[0], key, certs[1:], require_key=require_key, require_topic=require_topic)


def load_push_certificate(
    path: str | os.PathLike[str],
    password: str | bytes | None = None,
    key_path: str | os.PathLike[str] | None = None,
) -> PushCertificate:
    """Load by file name: ``.p12``/``.pfx`` as PKCS#12, anything else as PEM."""
    if str(path).lower().endswith((".p12", ".pfx")):
        return load_pkcs12(path, password)
    return load_pem(path, key_path, password)
