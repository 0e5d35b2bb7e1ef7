"""CMS (PKCS#7) SignedData: unwrap the encapsulated content and check the signature over it.

Only the structure and the signature live here; certificate-chain trust is in ``chain.py``.
asn1crypto reads DER and BER (indefinite lengths, chunked OCTET STRINGs). Its parsing is lazy, so
every place that touches the structure converts its exceptions into a :class:`ProfileError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rollout.profiles.errors import (
    DetachedContentError,
    MalformedCMSError,
    NotCMSError,
    NotSignedDataError,
    UnsignedPlistError,
)
from rollout.profiles.reasons import plain_reason

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_T = TypeVar("_T")


def _structural(what: str, func: Callable[[], _T]) -> _T:
    """Run an asn1crypto access; turn whatever it raises into a MalformedCMSError."""
    try:
        return func()
    except Exception as exc:  # asn1crypto raises many types on broken input
        raise MalformedCMSError(f"malformed CMS {what}: {plain_reason(exc)}") from exc


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """The parts of one CMS SignerInfo needed to verify it."""

    issuer: ax509.Name | None
    serial: int | None
    key_id: bytes | None
    digest_algorithm: str
    signature_algorithm: str
    signature: bytes
    signed_attrs_der: bytes | None
    content_type_attr: str | None
    message_digest: bytes | None
    signing_time: dt.datetime | None
    attr_problem: str | None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A SignedData with attached content, certificates and signer infos."""

    content_type: str
    content: bytes
    certificates: tuple[x509.Certificate, ...]
    signers: tuple[SignerInfo, ...]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Outcome of :func:`verify_signature`."""

    valid: bool
    reason: str | None
    signer_cert: x509.Certificate | None
    signed_at: dt.datetime | None


def _sniff(data: bytes) -> None:
    """Reject the obvious non-CMS inputs with a precise message before decoding."""
    if not data:
        raise NotCMSError("empty file: expected a CMS-signed provisioning profile")
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"bplist"):
        raise UnsignedPlistError(
            "file is an unsigned binary property list, not a signed profile (CMS)"
        )
    if head.startswith(b"<"):
        if b"<plist" in data[:4096] or b"PropertyList" in data[:4096]:
            raise UnsignedPlistError(
                "file is an unsigned XML property list, not a signed profile (CMS)"
            )
        raise NotCMSError("file is XML/text, not a CMS-signed provisioning profile")
    if data[0] != 0x30:
        raise NotCMSError(
            f"not CMS: expected an ASN.1 SEQUENCE (0x30) at offset 0, found 0x{data[0]:02x}"
        )


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _attr_value(attr: acms.CMSAttribute, name: str) -> tuple[object | None, str | None]:
    values = attr["values"]
    if len(values) != 1:
        return None, f"{name} attribute has {len(values)} values, expected 1"
    return values[0].native, None


def _read_signer(si: acms.SignerInfo) -> SignerInfo:
    sid = si["sid"]
    issuer: ax509.Name | None = None
    serial: int | None = None
    key_id: bytes | None = None
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
    else:
        key_id = sid.chosen.native
    signed_attrs_der: bytes | None = None
    content_type_attr: str | None = None
    message_digest: bytes | None = None
    signing_time: dt.datetime | None = None
    problems: list[str] = []
    attrs = si["signed_attrs"]
    if isinstance(attrs, acms.CMSAttributes):
        signed_attrs_der = b"\x31" + _der_length(len(attrs.contents)) + attrs.contents
        for attr in attrs:
            oid = attr["type"].dotted
            if oid == OID_CONTENT_TYPE:
                value, problem = _attr_value(attr, "content-type")
                content_type_attr = attr["values"][0].dotted if value is not None else None
            elif oid == OID_MESSAGE_DIGEST:
                value, problem = _attr_value(attr, "message-digest")
                message_digest = value if isinstance(value, bytes) else None
            elif oid == OID_SIGNING_TIME:
                value, problem = _attr_value(attr, "signing-time")
                signing_time = value if isinstance(value, dt.datetime) else None
            else:
                continue  # other attributes are covered by the signature, not interpreted
            if problem:
                problems.append(problem)
    return SignerInfo(
        issuer=issuer,
        serial=serial,
        key_id=key_id,
        digest_algorithm=si["digest_algorithm"]["algorithm"].native,
        signature_algorithm=si["signature_algorithm"]["algorithm"].native,
        signature=si["signature"].native,
        signed_attrs_der=signed_attrs_der,
        content_type_attr=content_type_attr,
        message_digest=message_digest,
        signing_time=signing_time,
        attr_problem="; ".join(problems) or None,
    )


def _read_signer_checked(si: acms.SignerInfo) -> SignerInfo:
    return _structural("signer info", lambda: _read_signer(si))


def _load_cert(index: int, choice: acms.CertificateChoices) -> x509.Certificate | None:
    if choice.name != "certificate":
        return None  # attribute certificates and the like play no part here
    try:
        with warnings.catch_warnings():
            # cryptography warns (on stderr, with a source line) about a serial that is not
            # positive and about over-long names; the serial is refused below instead, and
            # Apple's own certificates carry common names longer than X.520 allows
            warnings.simplefilter("ignore", UserWarning)
            cert = x509.load_der_x509_certificate(choice.chosen.dump())
            # cryptography decodes these lazily; read them now so later code cannot trip on them
            _ = (cert.subject, cert.issuer)
            serial = cert.serial_number
            _ = (cert.not_valid_before_utc, cert.not_valid_after_utc)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise MalformedCMSError(
            f"malformed CMS: certificate #{index} is not a valid X.509 certificate "
            f"({plain_reason(exc)})"
        ) from exc
    if serial <= 0:
        # RFC 5280 requires a positive serial and cryptography will soon refuse the rest
        raise MalformedCMSError(
            f"malformed CMS: certificate #{index} has a serial number that is not positive"
        )
    return cert


def open_envelope(data: bytes) -> Envelope:
    """Decode ``data`` as CMS SignedData with attached content, or raise a ProfileError."""
    _sniff(data)
    try:
        info = acms.ContentInfo.load(data, strict=True)
        content_type = info["content_type"].dotted
    except Exception as exc:  # asn1crypto raises many types on broken input
        raise NotCMSError(f"not a CMS structure ({plain_reason(exc)})") from exc
    if content_type != OID_SIGNED_DATA:
        name = _structural("content type", lambda: info["content_type"].native)
        raise NotSignedDataError(f"CMS content type is {name} ({content_type}), not SignedData")
    signed = _structural("SignedData", lambda: info["content"])
    encap = _structural("encapsulated content", lambda: signed["encap_content_info"])
    encap_type = _structural("encapsulated content type", lambda: encap["content_type"].dotted)
    content = _structural("encapsulated content", lambda: encap["content"].native)
    if content is None:
        raise DetachedContentError(
            "SignedData has no encapsulated content (detached signature); "
            "a profile must embed its plist"
        )
    if not isinstance(content, bytes):
        raise MalformedCMSError("malformed CMS: encapsulated content is not an OCTET STRING")
    choices = _structural("certificates", lambda: list(signed["certificates"] or []))
    loaded = (_load_cert(i, c) for i, c in enumerate(choices))
    certificates = tuple(c for c in loaded if c is not None)
    infos = _structural("signer infos", lambda: list(signed["signer_infos"]))
    signers = tuple(_read_signer_checked(si) for si in infos)
    return Envelope(
        content_type=encap_type, content=content, certificates=certificates, signers=signers
    )


def _matches(signer: SignerInfo, cert: x509.Certificate) -> bool:
    if signer.key_id is not None:
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            return False
        return ski.value.digest == signer.key_id
    if signer.serial != cert.serial_number or signer.issuer is None:
        return False
    try:
        return bool(ax509.Name.load(cert.issuer.public_bytes()) == signer.issuer)
    except Exception:  # an issuer name asn1crypto cannot normalise cannot be the signer
        return False


def _signature_hash(signer: SignerInfo) -> hashes.HashAlgorithm | None:
    algo = signer.signature_algorithm
    for prefix in ("sha1", "sha224", "sha256", "sha384", "sha512"):
        if algo.startswith(prefix + "_"):
            return _HASHES[prefix]()
    factory = _HASHES.get(signer.digest_algorithm)
    return factory() if factory else None


def _check_raw_signature(signer: SignerInfo, cert: x509.Certificate, signed: bytes) -> str | None:
    """None when the signature verifies, else why not."""
    algo = signer.signature_algorithm
    hash_algo = _signature_hash(signer)
    if hash_algo is None:
        return f"unsupported signature algorithm {algo}"
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "signer certificate's public key is unreadable or of an unsupported type"
    try:
        if algo == "rsassa_pkcs1v15" or algo.endswith("_rsa"):
            if not isinstance(key, rsa.RSAPublicKey):
                return f"signature algorithm {algo} does not match the signer's key type"
            key.verify(signer.signature, signed, padding.PKCS1v15(), hash_algo)
        elif algo == "ecdsa" or algo.endswith("_ecdsa"):
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return f"signature algorithm {algo} does not match the signer's key type"
            key.verify(signer.signature, signed, ec.ECDSA(hash_algo))
        else:
            return f"unsupported signature algorithm {algo}"
    except InvalidSignature:
        return "signature does not verify with the signer certificate's key"
    return None


def _verify_one(
    envelope: Envelope, signer: SignerInfo
) -> tuple[str | None, x509.Certificate | None]:
    cert = next((c for c in envelope.certificates if _matches(signer, c)), None)
    if cert is None:
        return "signer certificate is not embedded in the CMS", None
    factory = _HASHES.get(signer.digest_algorithm)
    if factory is None:
        return f"unsupported digest algorithm {signer.digest_algorithm}", cert
    digest = hashlib.new(factory().name, envelope.content).digest()
    if signer.signed_attrs_der is None:
        if envelope.content_type != OID_DATA:
            return "signed attributes are required for non-data content", cert
        return _check_raw_signature(signer, cert, envelope.content), cert
    if signer.attr_problem:
        return signer.attr_problem, cert
    if signer.message_digest is None:
        return "signed attributes lack the message-digest attribute", cert
    if signer.content_type_attr is None:
        return "signed attributes lack the content-type attribute", cert
    if signer.content_type_attr != envelope.content_type:
        return "content-type attribute does not match the encapsulated content type", cert
    if signer.message_digest != digest:
        return "message digest does not match the content (content was altered)", cert
    return _check_raw_signature(signer, cert, signer.signed_attrs_der), cert


def verify_signature(envelope: Envelope) -> SignatureCheck:
    """Check every SignerInfo over the content; valid only if there is one and all verify."""
    if not envelope.signers:
        return SignatureCheck(False, "SignedData has no signer", None, None)
    first_cert: x509.Certificate | None = None
    for index, signer in enumerate(envelope.signers):
        reason, cert = _verify_one(envelope, signer)
        if index == 0:
            first_cert = cert
        if reason is not None:
            if len(envelope.signers) > 1:
                reason = f"signer #{index}: {reason}"
            return SignatureCheck(False, reason, first_cert, envelope.signers[0].signing_time)
    return SignatureCheck(True, None, first_cert, envelope.signers[0].signing_time)
