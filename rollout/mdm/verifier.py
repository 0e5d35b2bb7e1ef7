"""Device identity on the hot path: :func:`rollout.mdm.identify` with a lean fast path.

:func:`rollout.mdm.identify` reads the ``Mdm-Signature`` CMS structure with asn1crypto and
checks the signer certificate against the device CAs on every request. Measured on the
2-core bench machine it costs about 850 µs per request, of which the two signature checks
(the body's and the CA's on the certificate) are about 150 µs: the rest is asn1crypto building
objects and comparing X.509 names with LDAP string preparation. That alone capped the check-in
endpoint near 1,000 requests/s per process.

:class:`IdentityVerifier` gives the same answers for less:

* The CMS ``SignedData`` is walked as plain DER/BER (a few dozen lines below) when it has the
  shape devices send: definite lengths or BER's indefinite ones (iOS sends the latter), one
  signer identified by issuer and serial number, exactly one embedded certificate (itself
  DER), signed attributes limited to content-type, message-digest and signing-time, no CRLs
  and no unsigned attributes. The issuer and serial must equal the
  certificate's byte for byte.
* Per certificate (keyed by its DER bytes) the parsed certificate, its SHA-256, subject and the
  result of the device-CA check are kept, with the time window in which that check holds (the
  check depends on the time only through the certificate's and the CA's validity dates).
* The body's digest and the signature over the signed attributes are verified on **every**
  request, exactly as :func:`~rollout.mdm.identity.verify_mdm_signature` does.

Anything else — another shape, a failed check, an untrusted or expired certificate, a request
whose identity comes from another source — goes through :func:`rollout.mdm.identify`
unchanged, so every refusal has the reason and message it always had. The fast path accepts a
strict subset of what the full path accepts.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rollout.clock import SYSTEM_CLOCK, Clock
from rollout.mdm.identity import MAX_HEADER_CHARS, IdentityConfig, VerifiedIdentity, identify

__all__ = ["IdentityVerifier"]

_OID = 0x06
_INT = 0x02
_OCTETS = 0x04
_NULL = 0x05
_SEQ = 0x30
_SET = 0x31
_CTX0 = 0xA0
_UTCTIME = 0x17
_GENTIME = 0x18

_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
_DATA = bytes.fromhex("2a864886f70d010701")
_ATTR_CONTENT_TYPE = bytes.fromhex("2a864886f70d010903")
_ATTR_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")
_ATTR_SIGNING_TIME = bytes.fromhex("2a864886f70d010905")

_DIGESTS: dict[bytes, tuple[str, type[hashes.HashAlgorithm]]] = {
    bytes.fromhex("2b0e03021a"): ("sha1", hashes.SHA1),
    bytes.fromhex("608648016503040204"): ("sha224", hashes.SHA224),
    bytes.fromhex("608648016503040201"): ("sha256", hashes.SHA256),
    bytes.fromhex("608648016503040202"): ("sha384", hashes.SHA384),
    bytes.fromhex("608648016503040203"): ("sha512", hashes.SHA512),
}
# Signature algorithm OID -> (kind, the digest it is bound to, or None for plain RSA).
_SIGNATURES: dict[bytes, tuple[str, str | None]] = {
    bytes.fromhex("2a8648ce3d0401"): ("ecdsa", "sha1"),
    bytes.fromhex("2a8648ce3d040301"): ("ecdsa", "sha224"),
    bytes.fromhex("2a8648ce3d040302"): ("ecdsa", "sha256"),
    bytes.fromhex("2a8648ce3d040303"): ("ecdsa", "sha384"),
    bytes.fromhex("2a8648ce3d040304"): ("ecdsa", "sha512"),
    bytes.fromhex("2a864886f70d010101"): ("rsa", None),
    bytes.fromhex("2a864886f70d010105"): ("rsa", "sha1"),
    bytes.fromhex("2a864886f70d01010e"): ("rsa", "sha224"),
    bytes.fromhex("2a864886f70d01010b"): ("rsa", "sha256"),
    bytes.fromhex("2a864886f70d01010c"): ("rsa", "sha384"),
    bytes.fromhex("2a864886f70d01010d"): ("rsa", "sha512"),
}
_MAX_CACHED = 20_000
"""Certificates kept (oldest dropped first): a few KB each, and what matters is that a device's
session (Idle, then each result a moment later) finds its certificate."""


class _Unusual(Exception):
    """Not the common shape: let the full path decide."""


def _tlv(buf: bytes, off: int, end: int) -> tuple[int, int, int, int]:
    """(tag, content start, content end, element end) of the element at ``off``.

    Low tag numbers only. Definite lengths, and BER's indefinite length on constructed
    elements (real devices send their Mdm-Signature that way): the contents then run to the
    end-of-contents octets, which the element end includes.
    """
    if off + 2 > end:
        raise _Unusual
    tag = buf[off]
    if tag & 0x1F == 0x1F:
        raise _Unusual
    n = buf[off + 1]
    off += 2
    if n == 0x80:
        if not tag & 0x20:
            raise _Unusual  # only constructed elements may have an indefinite length
        pos = off
        while True:
            if pos + 2 > end:
                raise _Unusual
            if buf[pos] == 0 and buf[pos + 1] == 0:
                return tag, off, pos, pos + 2
            pos = _tlv(buf, pos, end)[3]
    if n & 0x80:
        count = n & 0x7F
        if count > 3 or off + count > end:
            raise _Unusual  # absurd lengths
        n = int.from_bytes(buf[off : off + count], "big")
        off += count
    if off + n > end:
        raise _Unusual
    return tag, off, off + n, off + n


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """(tag, element start, content start, content end, element end) of each element."""
    out = []
    off = start
    while off < end:
        tag, cs, ce, ee = _tlv(buf, off, end)
        out.append((tag, off, cs, ce, ee))
        off = ee
    return out


def _der_set(contents: bytes) -> bytes:
    """A DER ``SET`` around ``contents``: what the signature over signed attributes covers."""
    n = len(contents)
    if n < 0x80:
        return b"\x31" + bytes([n]) + contents
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x31" + bytes([0x80 | len(raw)]) + raw + contents


def _algorithm(buf: bytes, start: int, end: int) -> bytes:
    """The OID of an AlgorithmIdentifier whose parameters are absent or NULL."""
    parts = _children(buf, start, end)
    if not parts or parts[0][0] != _OID:
        raise _Unusual
    if len(parts) == 2:
        tag, _, cs, ce, _ = parts[1]
        if tag != _NULL or cs != ce:
            raise _Unusual
    elif len(parts) != 1:
        raise _Unusual
    return buf[parts[0][2] : parts[0][3]]


def _check_time(tag: int, value: bytes) -> None:
    """A signing time the full path reads too: ``YYMMDDHHMMSSZ`` or ``YYYYMMDDHHMMSSZ``."""
    size = 13 if tag == _UTCTIME else 15
    if tag not in (_UTCTIME, _GENTIME) or len(value) != size or value[-1:] != b"Z":
        raise _Unusual
    digits = value[:-1]
    if not digits.isdigit():
        raise _Unusual
    if tag == _UTCTIME:
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    else:
        year = int(digits[:4])
        rest = digits[4:]
    try:
        dt.datetime(
            year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]), int(rest[8:10])
        )
    except ValueError:
        raise _Unusual from None


@dataclass(frozen=True)
class _Parts:
    digest: str
    hash_type: type[hashes.HashAlgorithm]
    kind: str
    signature: bytes
    signed_attrs: bytes | None  # DER SET OF Attribute, what the signature covers
    message_digest: bytes | None
    cert_der: bytes
    issuer: bytes  # the sid's issuer Name, whole element
    serial: bytes  # the sid's serial number, content octets


def _signed_data(der: bytes) -> _Parts:
    """Pick a detached, single-signer, single-certificate SignedData apart (or ``_Unusual``)."""
    tag, cs, ce, ee = _tlv(der, 0, len(der))
    if tag != _SEQ or ee != len(der):
        raise _Unusual
    info = _children(der, cs, ce)
    if len(info) != 2 or info[0][0] != _OID or der[info[0][2] : info[0][3]] != _SIGNED_DATA:
        raise _Unusual
    if info[1][0] != _CTX0:
        raise _Unusual
    inner = _children(der, info[1][2], info[1][3])
    if len(inner) != 1 or inner[0][0] != _SEQ:
        raise _Unusual
    fields = _children(der, inner[0][2], inner[0][3])
    # version, digestAlgorithms, encapContentInfo, certificates [0], signerInfos
    if [f[0] for f in fields] != [_INT, _SET, _SEQ, _CTX0, _SET]:
        raise _Unusual
    encap = _children(der, fields[2][2], fields[2][3])
    if len(encap) != 1 or encap[0][0] != _OID or der[encap[0][2] : encap[0][3]] != _DATA:
        raise _Unusual
    certs = _children(der, fields[3][2], fields[3][3])
    if len(certs) != 1 or certs[0][0] != _SEQ or certs[0][3] != certs[0][4]:
        raise _Unusual  # more than one certificate, or one in BER: the full path decides
    cert_der = der[certs[0][1] : certs[0][4]]
    signers = _children(der, fields[4][2], fields[4][3])
    if len(signers) != 1 or signers[0][0] != _SEQ:
        raise _Unusual
    s = _children(der, signers[0][2], signers[0][3])
    tags = [x[0] for x in s]
    if tags == [_INT, _SEQ, _SEQ, _CTX0, _SEQ, _OCTETS]:
        attrs: tuple[int, int, int, int, int] | None = s[3]
        sig_alg, signature = s[4], s[5]
    elif tags == [_INT, _SEQ, _SEQ, _SEQ, _OCTETS]:
        attrs = None
        sig_alg, signature = s[3], s[4]
    else:
        raise _Unusual
    sid = _children(der, s[1][2], s[1][3])
    if len(sid) != 2 or sid[0][0] != _SEQ or sid[1][0] != _INT:
        raise _Unusual
    digest_entry = _DIGESTS.get(_algorithm(der, s[2][2], s[2][3]))
    signature_entry = _SIGNATURES.get(_algorithm(der, sig_alg[2], sig_alg[3]))
    if digest_entry is None or signature_entry is None:
        raise _Unusual
    digest, hash_type = digest_entry
    kind, bound = signature_entry
    if bound is not None and bound != digest:
        raise _Unusual

    signed_attrs: bytes | None = None
    message_digest: bytes | None = None
    if attrs is not None:
        seen: dict[bytes, tuple[int, bytes]] = {}
        for tag, _, acs, ace, _ in _children(der, attrs[2], attrs[3]):
            parts = _children(der, acs, ace) if tag == _SEQ else []
            if len(parts) != 2 or parts[0][0] != _OID or parts[1][0] != _SET:
                raise _Unusual
            oid = der[parts[0][2] : parts[0][3]]
            values = _children(der, parts[1][2], parts[1][3])
            if oid in seen or len(values) != 1:
                raise _Unusual
            vtag, _, vcs, vce, _ = values[0]
            seen[oid] = (vtag, der[vcs:vce])
        if set(seen) - {_ATTR_CONTENT_TYPE, _ATTR_MESSAGE_DIGEST, _ATTR_SIGNING_TIME}:
            raise _Unusual
        if seen.get(_ATTR_CONTENT_TYPE) != (_OID, _DATA):
            raise _Unusual
        md = seen.get(_ATTR_MESSAGE_DIGEST)
        if md is None or md[0] != _OCTETS:
            raise _Unusual
        message_digest = md[1]
        if _ATTR_SIGNING_TIME in seen:
            _check_time(*seen[_ATTR_SIGNING_TIME])
        signed_attrs = _der_set(der[attrs[2] : attrs[3]])  # [0] IMPLICIT -> SET OF
    return _Parts(
        digest=digest,
        hash_type=hash_type,
        kind=kind,
        signature=der[signature[2] : signature[3]],
        signed_attrs=signed_attrs,
        message_digest=message_digest,
        cert_der=cert_der,
        issuer=der[sid[0][1] : sid[0][4]],
        serial=der[sid[1][2] : sid[1][3]],
    )


def _issuer_and_serial(cert_der: bytes) -> tuple[bytes, bytes]:
    """The issuer Name element and the serial number octets of a certificate."""
    _, cs, ce, _ = _tlv(cert_der, 0, len(cert_der))
    _, tcs, tce, _ = _tlv(cert_der, cs, ce)  # tbsCertificate
    tbs = _children(cert_der, tcs, tce)
    i = 1 if tbs and tbs[0][0] == _CTX0 else 0  # [0] version
    if len(tbs) < i + 3 or tbs[i][0] != _INT or tbs[i + 2][0] != _SEQ:
        raise _Unusual
    serial = cert_der[tbs[i][2] : tbs[i][3]]
    issuer = cert_der[tbs[i + 2][1] : tbs[i + 2][4]]
    return issuer, serial


@dataclass
class _Cert:
    cert: x509.Certificate
    issuer: bytes
    serial: bytes
    sha256: str
    key: Any
    subject: str | None = None  # read on demand: building an x509.Name is not cheap
    trusted_from: dt.datetime | None = None  # the CA check holds in [from, until]
    trusted_until: dt.datetime | None = None


class IdentityVerifier:
    """:func:`rollout.mdm.identify` for one configuration, with the fast path described above."""

    def __init__(self, config: IdentityConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self._certs: dict[bytes, _Cert] = {}
        self.fast = 0
        self.full = 0

    def identify(self, headers: Mapping[str, str], body: bytes) -> VerifiedIdentity | None:
        """The verified identity (see :func:`rollout.mdm.identify`); ``headers`` lower-cased."""
        entry = self._try_fast(headers, body)
        if entry is None:
            self.full += 1
            return identify(headers, body, self.config)
        self.fast += 1
        if entry.subject is None:
            entry.subject = entry.cert.subject.rfc4514_string()
        return VerifiedIdentity(
            cert_sha256=entry.sha256,
            subject=entry.subject,
            source="mdm-signature",
            chain_checked=self.config.trust is not None,
            certificate=entry.cert,
        )

    def cert_sha256(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Only the verified certificate's SHA-256 (what the endpoints bind and compare)."""
        entry = self._try_fast(headers, body)
        if entry is not None:
            self.fast += 1
            return entry.sha256
        self.full += 1
        verified = identify(headers, body, self.config)
        return verified.cert_sha256 if verified is not None else None

    def _try_fast(self, headers: Mapping[str, str], body: bytes) -> _Cert | None:
        """The fast path never decides a refusal: whatever goes wrong in it, the full path
        looks at the request again and gives the reason."""
        try:
            return self._fast(headers, body)
        except Exception:
            return None

    def _fast(self, headers: Mapping[str, str], body: bytes) -> _Cert | None:
        config = self.config
        if config.sources[0] != "mdm-signature":
            return None  # another source may decide: the full path handles it
        value = headers.get(config.signature_header.lower())
        if value is None:
            return None
        if len(value) > MAX_HEADER_CHARS:
            return None
        try:
            der = base64.b64decode(value.strip(), validate=True)
            parts = _signed_data(der)
            entry = self._cert(parts.cert_der)
        except (_Unusual, binascii.Error, ValueError, RecursionError):
            return None
        if entry is None or entry.issuer != parts.issuer or entry.serial != parts.serial:
            return None
        if parts.signed_attrs is None:
            signed = bytes(body)
        else:
            computed = hashlib.new(parts.digest, body).digest()
            if parts.message_digest is None or not hmac.compare_digest(
                computed, parts.message_digest
            ):
                return None
            signed = parts.signed_attrs
        key = entry.key
        try:
            if parts.kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(parts.signature, signed, padding.PKCS1v15(), parts.hash_type())
            elif parts.kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(parts.signature, signed, ec.ECDSA(parts.hash_type()))
            else:
                return None
        except InvalidSignature:
            return None
        trust = self.config.trust
        if trust is not None:
            now = self.clock.now()
            if entry.trusted_from is None or not (
                entry.trusted_from <= now <= (entry.trusted_until or now)
            ):
                try:
                    ca = trust.check(entry.cert, now)
                except Exception:
                    return None
                entry.trusted_from = max(entry.cert.not_valid_before_utc, ca.not_valid_before_utc)
                entry.trusted_until = min(entry.cert.not_valid_after_utc, ca.not_valid_after_utc)
        return entry

    def _cert(self, der: bytes) -> _Cert | None:
        entry = self._certs.get(der)
        if entry is not None:
            return entry
        try:
            cert = x509.load_der_x509_certificate(der)
            issuer, serial = _issuer_and_serial(der)
        except (ValueError, _Unusual):
            return None
        try:
            key = cert.public_key()
        except (ValueError, TypeError):  # an unsupported key type: the full path says so
            return None
        entry = _Cert(cert, issuer, serial, hashlib.sha256(der).hexdigest(), key)
        if len(self._certs) >= _MAX_CACHED:
            self._certs.pop(next(iter(self._certs)))
        self._certs[der] = entry
        return entry
