"""Device identity: who vouches for an MDM request.

A device proves its identity with the identity certificate from its enrollment profile, in one
of two ways:

* **``Mdm-Signature``** (enrollment profile ``SignMessage=true``): the header is base64 of a
  detached CMS ``SignedData`` over the raw HTTP body with the signer certificate embedded.
  :func:`verify_mdm_signature` checks it (BER with indefinite lengths, SHA-1/SHA-2 digests, with
  or without signed attributes, RSA PKCS#1 v1.5 or ECDSA) and returns the signer certificate.
  ASN.1 is read with :mod:`asn1crypto`; signatures are checked with :mod:`cryptography`.
* **Mutual TLS** terminated by a proxy, which forwards the client certificate in a header:
  :func:`parse_forwarded_client_cert` reads RFC 9440 (``Client-Cert: :<base64 DER>:``),
  URL-escaped PEM (nginx ``$ssl_client_escaped_cert``) or plain base64 DER.

Neither step says whether the certificate is *ours*; :class:`DeviceCATrust` checks that the
certificate was issued by a configured device CA (the SCEP/ACME CA behind enrollment) and is
valid. :func:`identify` strings the steps together for the web layer and returns a
:class:`VerifiedIdentity` whose ``cert_sha256`` (lowercase hex SHA-256 of the certificate DER)
is what the enrollment gets bound to.

Some CAs issue each device a certificate that names its UDID (SCEP with the UDID as the subject
CN, or in a subjectAltName). :func:`check_names_device` holds a message to that: its UDID (or,
for a User Enrollment, its EnrollmentID) must be one of the certificate's names
(:func:`certificate_names`), else ``IdentityError("subject_mismatch")``.

All failures raise :class:`~rollout.mdm.errors.IdentityError` (reasons listed there). The web
layer must answer those with 400 or 403 (or 5xx), never 401, which would unenroll the device.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rollout.mdm.errors import IdentityError

__all__ = [
    "DEFAULT_CERT_HEADER",
    "DEFAULT_SIGNATURE_HEADER",
    "DeviceCATrust",
    "IdentityConfig",
    "IdentityError",
    "IdentitySource",
    "VerifiedIdentity",
    "cert_sha256",
    "certificate_names",
    "check_names_device",
    "identify",
    "parse_forwarded_client_cert",
    "verify_mdm_signature",
]

DEFAULT_SIGNATURE_HEADER = "Mdm-Signature"
DEFAULT_CERT_HEADER = "Client-Cert"
"""RFC 9440's header name for a client certificate forwarded by a TLS-terminating proxy."""

MAX_HEADER_CHARS = 64 * 1024
"""Longest identity header accepted (a real Mdm-Signature is about 2 KB)."""

IdentitySource = Literal["mdm-signature", "client-cert"]

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_SIGNATURE_ALGOS = ("rsassa_pkcs1v15", "ecdsa")
_WHITESPACE = re.compile(r"\s+")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _b64decode(text: str, what: str) -> bytes:
    """Strict base64 (standard alphabet, padding required); whitespace is ignored."""
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise IdentityError("bad_base64", f"{what} is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IdentityError("bad_base64", f"{what} is not valid base64") from exc


def _check_header_value(header_value: str, what: str) -> str:
    if not isinstance(header_value, str):
        raise IdentityError("bad_base64", f"{what} must be a string")
    if len(header_value) > MAX_HEADER_CHARS:
        raise IdentityError("too_large", f"{what} is over {MAX_HEADER_CHARS} characters")
    return header_value.strip()


def _load_der_cert(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except Exception as exc:  # ValueError, InvalidVersion and friends on damaged input
        raise IdentityError("bad_cert", f"cannot parse the certificate: {exc}") from exc


def _der_set(contents: bytes) -> bytes:
    """DER ``SET`` header plus ``contents`` (signed attributes are signed as a SET OF)."""
    n = len(contents)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x31" + length + contents


@dataclass(frozen=True)
class _SignerParts:
    digest: str
    signature_algo: str
    signature: bytes
    signed_attrs: bytes | None  # DER SET OF Attribute, what the signature covers
    message_digest: bytes | None
    cert_der: bytes


def _read_signed_data(der: bytes) -> _SignerParts:
    """Pick a detached, single-signer CMS SignedData apart (may raise on malformed ASN.1)."""
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        raise IdentityError("not_cms", "the signature is not a CMS SignedData")
    signed_data = info["content"]
    encap = signed_data["encap_content_info"]
    if encap["content_type"].native != "data":
        raise IdentityError("not_cms", "the SignedData does not sign plain data")
    if encap["content"].native is not None:
        raise IdentityError("not_detached", "the SignedData is not detached from the body")
    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) != 1:
        raise IdentityError("unsupported", f"expected one signer, found {len(signer_infos)}")
    signer = signer_infos[0]

    digest = signer["digest_algorithm"]["algorithm"].native
    if digest not in _DIGESTS:
        raise IdentityError("unsupported", f"digest algorithm {digest!r} is not accepted")
    sig_alg = signer["signature_algorithm"]
    signature_algo = sig_alg.signature_algo
    if signature_algo not in _SIGNATURE_ALGOS:
        raise IdentityError("unsupported", f"signature algorithm {signature_algo!r}")
    try:
        combined_hash = sig_alg.hash_algo  # only for OIDs such as sha256WithRSAEncryption
    except ValueError:
        combined_hash = None
    if combined_hash is not None and combined_hash != digest:
        raise IdentityError(
            "unsupported", f"signature hash {combined_hash} differs from digest {digest}"
        )

    signed_attrs: bytes | None = None
    message_digest: bytes | None = None
    attrs = signer["signed_attrs"]
    if attrs.native is not None:
        seen: dict[str, Any] = {}
        for attr in attrs:
            name = attr["type"].native
            values = attr["values"]
            if name in seen or len(values) != 1:
                raise IdentityError("not_cms", f"signed attribute {name!r} is malformed")
            seen[name] = values[0].native
        if seen.get("content_type") != "data":
            raise IdentityError("not_cms", "signed attributes lack content-type data")
        message_digest = seen.get("message_digest")
        if not isinstance(message_digest, bytes):
            raise IdentityError("not_cms", "signed attributes lack message-digest")
        signed_attrs = _der_set(attrs.contents)

    sid = signer["sid"]
    cert_der: bytes | None = None
    certificates = signed_data["certificates"]
    for choice in certificates if certificates.native is not None else ():
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            match = (
                cert.issuer == sid.chosen["issuer"]
                and cert.serial_number == sid.chosen["serial_number"].native
            )
        else:
            match = cert.key_identifier == sid.chosen.native
        if match:
            cert_der = cert.dump()
            break
    if cert_der is None:
        raise IdentityError("no_signer_cert", "the signer certificate is not in the SignedData")
    return _SignerParts(
        digest=digest,
        signature_algo=signature_algo,
        signature=signer["signature"].native,
        signed_attrs=signed_attrs,
        message_digest=message_digest,
        cert_der=cert_der,
    )


def verify_mdm_signature(header_value: str, body: bytes) -> x509.Certificate:
    """Verify an ``Mdm-Signature`` header over ``body``; return the signer certificate.

    Only the signature is checked here; use :class:`DeviceCATrust` for the certificate chain.
    """
    header_value = _check_header_value(header_value, "Mdm-Signature")
    der = _b64decode(header_value, "Mdm-Signature")
    try:
        parts = _read_signed_data(der)
    except IdentityError:
        raise
    except Exception as exc:  # asn1crypto parses lazily and raises many types on bad input
        raise IdentityError(
            "not_cms", f"the signature is not valid CMS ({type(exc).__name__})"
        ) from exc

    cert = _load_der_cert(parts.cert_der)
    hash_algorithm = _DIGESTS[parts.digest]()
    if parts.signed_attrs is None:
        signed = bytes(body)
    else:
        digest = hashes.Hash(_DIGESTS[parts.digest]())
        digest.update(body)
        assert parts.message_digest is not None
        if not hmac.compare_digest(digest.finalize(), parts.message_digest):
            raise IdentityError("digest_mismatch", "the body does not match the signed digest")
        signed = parts.signed_attrs

    try:
        # A damaged certificate can parse and still carry a key that cannot be loaded.
        key = cert.public_key()
    except Exception as exc:  # ValueError, UnsupportedAlgorithm (a mangled curve OID), …
        raise IdentityError("bad_cert", f"the signer certificate's key is unusable: {exc}") from exc
    try:
        if parts.signature_algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(parts.signature, signed, padding.PKCS1v15(), hash_algorithm)
        elif parts.signature_algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(parts.signature, signed, ec.ECDSA(hash_algorithm))
        else:
            raise IdentityError(
                "unsupported",
                f"{parts.signature_algo} signature with a {type(key).__name__} key",
            )
    except InvalidSignature as exc:
        raise IdentityError("bad_signature", "the Mdm-Signature does not verify") from exc
    return cert


def parse_forwarded_client_cert(header_value: str) -> x509.Certificate:
    """The client certificate a TLS-terminating proxy forwarded in a header.

    Accepted forms: RFC 9440 byte sequence ``:<base64 DER>:``; URL-escaped PEM as nginx's
    ``$ssl_client_escaped_cert`` gives (raw PEM whose line breaks were turned into spaces works
    too); plain base64 DER.
    """
    value = _check_header_value(header_value, "the client-certificate header")
    if not value:
        raise IdentityError("missing", "the client-certificate header is empty")
    if len(value) >= 2 and value.startswith(":") and value.endswith(":"):
        return _load_der_cert(_b64decode(value[1:-1], "the RFC 9440 certificate"))
    if "%" in value or "-----BEGIN" in value:
        pem = urllib.parse.unquote(value)
        found = _PEM_CERT.search(pem)
        if found is None:
            raise IdentityError("bad_cert", "the header holds no PEM certificate")
        return _load_der_cert(_b64decode(found.group(1), "the PEM certificate"))
    return _load_der_cert(_b64decode(value, "the base64 certificate"))


def cert_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding (the binding key)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _ext(cert: x509.Certificate, ext_type: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # extensions are parsed lazily: a damaged one shows up here
        raise IdentityError("bad_cert", f"the certificate's extensions are damaged: {exc}") from exc


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _ext(cert, x509.BasicConstraints)
    return bool(constraints is not None and constraints.ca)


class DeviceCATrust:
    """The CAs that issue device identity certificates, and the check against them.

    Every configured certificate (a root or an intermediate) is a trust anchor: a device
    certificate is accepted when one of them issued it directly. Rules applied by :meth:`check`:

    * the device certificate is within its validity dates at ``at`` (default now);
    * it is not a CA, its key usage (if present) allows digital signatures, and its extended key
      usage (if present) allows TLS client authentication or any usage;
    * a configured CA with the issuer's name verifies its signature, is valid at ``at`` and
      (if it has a key usage extension) may sign certificates.
    """

    def __init__(self, cas: Sequence[x509.Certificate]) -> None:
        if not cas:
            raise ValueError("DeviceCATrust needs at least one CA certificate")
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for ca in cas:
            if not _is_ca(ca):
                raise ValueError(f"{ca.subject.rfc4514_string()!r} is not a CA certificate")
            self._by_subject.setdefault(ca.subject, []).append(ca)

    @classmethod
    def from_pem(cls, pem: bytes) -> DeviceCATrust:
        """From one or more concatenated PEM certificates."""
        return cls(x509.load_pem_x509_certificates(pem))

    @property
    def cas(self) -> tuple[x509.Certificate, ...]:
        """The configured CA certificates."""
        return tuple(ca for group in self._by_subject.values() for ca in group)

    def check(self, cert: x509.Certificate, at: dt.datetime | None = None) -> x509.Certificate:
        """Raise :class:`IdentityError` unless a configured CA vouches for ``cert``.

        Returns the issuing CA. ``at`` must be timezone-aware.
        """
        if at is None:
            at = dt.datetime.now(dt.UTC)
        elif at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        if at < cert.not_valid_before_utc:
            raise IdentityError("not_yet_valid", "the device certificate is not valid yet")
        if at > cert.not_valid_after_utc:
            raise IdentityError("expired", "the device certificate has expired")
        if _is_ca(cert):
            raise IdentityError("bad_usage", "the device certificate is a CA certificate")
        usage = _ext(cert, x509.KeyUsage)
        if usage is not None and not usage.digital_signature:
            raise IdentityError("bad_usage", "the device key may not make digital signatures")
        extended = _ext(cert, x509.ExtendedKeyUsage)
        if extended is not None and not (
            ExtendedKeyUsageOID.CLIENT_AUTH in extended
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in extended
        ):
            raise IdentityError("bad_usage", "the device certificate is not for client auth")

        problems: list[str] = []
        for ca in self._by_subject.get(cert.issuer, ()):
            if not ca.not_valid_before_utc <= at <= ca.not_valid_after_utc:
                problems.append("the issuing CA is outside its validity dates")
                continue
            ca_usage = _ext(ca, x509.KeyUsage)
            if ca_usage is not None and not ca_usage.key_cert_sign:
                problems.append("the issuing CA may not sign certificates")
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                problems.append("the CA's signature on the certificate does not verify")
                continue
            return ca
        detail = "; ".join(problems) or "no configured device CA has the issuer's name"
        raise IdentityError(
            "untrusted",
            f"certificate issued by {cert.issuer.rfc4514_string()!r} is not trusted: {detail}",
        )


@dataclass(frozen=True)
class IdentityConfig:
    """How :func:`identify` finds and checks a device identity.

    ``trust``: the device CAs; ``None`` skips the chain check (signature-only, development).
    ``sources``: where to look, in order. ``"mdm-signature"`` reads ``signature_header``;
    ``"client-cert"`` reads ``cert_header`` (default ``Client-Cert``, RFC 9440) and must only be
    enabled behind a proxy that sets that header itself and drops any copy a client sent.
    The first source whose header is present decides; a present but invalid header is an error,
    never a reason to try the next source.
    ``allow_missing``: return ``None`` instead of raising when no header is present
    (development only).
    """

    trust: DeviceCATrust | None
    sources: tuple[IdentitySource, ...] = ("mdm-signature",)
    cert_header: str = DEFAULT_CERT_HEADER
    signature_header: str = DEFAULT_SIGNATURE_HEADER
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("IdentityConfig needs at least one source")
        for source in self.sources:
            if source not in ("mdm-signature", "client-cert"):
                raise ValueError(f"unknown identity source {source!r}")


@dataclass(frozen=True)
class VerifiedIdentity:
    """A device certificate that vouched for a request."""

    cert_sha256: str
    subject: str
    source: IdentitySource
    chain_checked: bool
    certificate: x509.Certificate = field(repr=False, compare=False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def identify(
    headers: Mapping[str, str],
    body: bytes,
    config: IdentityConfig,
    *,
    at: dt.datetime | None = None,
) -> VerifiedIdentity | None:
    """The verified device identity for a request, or ``None`` if absent and allowed.

    Raises :class:`IdentityError` for an invalid header, an untrusted certificate, or a missing
    identity when ``config.allow_missing`` is false.
    """
    for source in config.sources:
        if source == "mdm-signature":
            value = _header(headers, config.signature_header)
            if value is None:
                continue
            cert = verify_mdm_signature(value, body)
        else:
            value = _header(headers, config.cert_header)
            if value is None or not value.strip():
                continue
            cert = parse_forwarded_client_cert(value)
        if config.trust is not None:
            config.trust.check(cert, at)
        return VerifiedIdentity(
            cert_sha256=cert_sha256(cert),
            subject=cert.subject.rfc4514_string(),
            source=source,
            chain_checked=config.trust is not None,
            certificate=cert,
        )
    if config.allow_missing:
        return None
    wanted = " or ".join(
        config.signature_header if s == "mdm-signature" else config.cert_header
        for s in config.sources
    )
    raise IdentityError("missing", f"the request carries no device identity ({wanted})")


def describe_forwarded_cert(
    headers: Mapping[str, str], config: IdentityConfig, at: dt.datetime
) -> dict[str, object] | None:
    """What a request's forwarded client-certificate header holds, for a deployment check
    through the TLS proxy: None when the header is absent or empty, else the certificate's
    subject and SHA-256 and whether the device CA vouches for it (or why the header is not a
    certificate). Only ever describes what the request itself carried."""
    value = _header(headers, config.cert_header)
    if value is None or not value.strip():
        return None
    try:
        cert = parse_forwarded_client_cert(value)
    except IdentityError as exc:
        return {"error": str(exc)}
    found: dict[str, object] = {
        "subject": cert.subject.rfc4514_string(),
        "sha256": cert_sha256(cert),
        "trusted": None,
    }
    if config.trust is not None:
        try:
            config.trust.check(cert, at)
            found["trusted"] = True
        except IdentityError as exc:
            found["trusted"] = False
            found["error"] = str(exc)
    return found


def certificate_names(cert: x509.Certificate) -> frozenset[str]:
    """The names a certificate gives its holder: every subject CN, and the DNS names and URIs
    of its subjectAltName (callers keep them per certificate: devices send the same one every
    time, and reading the extensions is not cheap)."""
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    alt = _ext(cert, x509.SubjectAlternativeName)
    if alt is not None:
        names += alt.get_values_for_type(x509.DNSName)
        names += alt.get_values_for_type(x509.UniformResourceIdentifier)
    return frozenset(n for n in names if isinstance(n, str) and n)


def check_names_device(names: Collection[str], udid: str | None, enrollment_id: str | None) -> None:
    """Raise ``IdentityError("subject_mismatch")`` unless a certificate's ``names`` (see
    :func:`certificate_names`) name the device: its UDID (compared without regard to case, as
    UDIDs are), or else its EnrollmentID (exactly).

    A name must be the whole value: a CN that merely contains the UDID names someone else.
    """
    if udid is not None:
        wanted = udid.upper()
        if any(n.upper() == wanted for n in names):
            return
        raise IdentityError("subject_mismatch", f"the certificate does not name UDID {udid[:64]!r}")
    if enrollment_id is not None and enrollment_id in names:
        return
    shown = (enrollment_id or "")[:64]
    raise IdentityError("subject_mismatch", f"the certificate does not name enrollment {shown!r}")
