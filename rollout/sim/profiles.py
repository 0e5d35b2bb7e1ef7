"""Test provisioning profiles, signed by a test chain shaped like Apple's.

Used by the tests, the product demo and the simulated device. Nothing here touches real Apple keys:

* :func:`make_apple_like_chain` builds root → "Test Apple iPhone Certification Authority" →
  "Test Apple iPhone OS Provisioning Profile Signing", plus a developer certificate to list in
  ``DeveloperCertificates``;
* :func:`make_profile` writes an Apple-shaped plist and signs it as CMS SignedData with the content
  attached, signed attributes (content-type, signing-time, message-digest) and the three chain
  certificates embedded, in DER or genuine BER (indefinite lengths, chunked OCTET STRING);
* :func:`sign_content` signs arbitrary bytes the same way (for malformed-content cases);
* :func:`to_ber` re-encodes a DER SignedData into BER; :func:`tamper` alters the signed content
  in place, keeping every length, so the signature no longer matches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import plistlib
import uuid as uuid_mod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from asn1crypto import algos
from asn1crypto import cms as acms
from asn1crypto import core as acore
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from rollout.sim.pki import Issued, issue_leaf, make_ca

Kind = Literal["enterprise", "development", "ad-hoc", "app-store", "developer-id"]
Digest = Literal["sha256", "sha1"]
Encoding = Literal["der", "ber"]

ROOT_NAME = "Test Apple Root CA"
INTERMEDIATE_NAME = "Test Apple iPhone Certification Authority"
SIGNER_NAME = "Test Apple iPhone OS Provisioning Profile Signing"
DEFAULT_DEVICES = ("00008030-001A2B3C4D5E6F70", "1c111c111c111c111c111c111c111c111c111c11")
BER_CHUNK = 1000

_UTC = dt.UTC
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


@dataclass(frozen=True)
class AppleLikeChain:
    """A test stand-in for Apple's profile-signing chain (root, intermediate, signer)."""

    root: Issued
    intermediate: Issued
    signer: Issued
    developer: Issued

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        """What to pass as ``trust_anchors``: the test root."""
        return (self.root.cert,)

    @property
    def embedded(self) -> tuple[x509.Certificate, ...]:
        """The certificates a profile carries: signer, intermediate, root (as Apple does)."""
        return (self.signer.cert, self.intermediate.cert, self.root.cert)


def make_apple_like_chain(
    *,
    not_before: dt.datetime | None = None,
    days: int = 3650,
    signer_days: int | None = None,
    key_kind: str = "rsa",
    team_name: str = "Example Corp",
    team_id: str = "ABCDE12345",
) -> AppleLikeChain:
    """A fresh chain; all certificates start at ``not_before`` (default: yesterday).

    ``days`` is the root's and intermediate's lifetime, ``signer_days`` the signer's (defaults to
    ``days``). An old chain that has since expired: ``not_before=now - 4000 days, days=3000``.
    ``key_kind`` is ``rsa`` or ``ec`` (the signer's key decides RSA or ECDSA signatures).
    """
    start = not_before or dt.datetime.now(_UTC) - dt.timedelta(days=1)
    root = make_ca(ROOT_NAME, not_before=start, days=days, key_kind=key_kind, O="Test Apple Inc.")
    intermediate = make_ca(
        INTERMEDIATE_NAME,
        issuer=root,
        not_before=start,
        days=days,
        key_kind=key_kind,
        O="Test Apple Inc.",
        OU="Certification Authority",
    )
    signer = issue_leaf(
        intermediate,
        SIGNER_NAME,
        not_before=start,
        days=signer_days if signer_days is not None else days,
        key_kind=key_kind,
        O="Test Apple Inc.",
    )
    developer = issue_leaf(
        intermediate,
        f"iPhone Distribution: {team_name} ({team_id})",
        not_before=start,
        days=days,
        key_kind=key_kind,
        OU=team_id,
        O=team_name,
    )
    return AppleLikeChain(root=root, intermediate=intermediate, signer=signer, developer=developer)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """plistlib writes naive datetimes as UTC; drop sub-second parts it cannot carry."""
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def profile_plist(
    chain: AppleLikeChain,
    *,
    kind: Kind = "enterprise",
    name: str = "Example Enterprise Profile",
    uuid: str | None = None,
    team_id: str = "ABCDE12345",
    team_name: str = "Example Corp",
    bundle_id: str = "com.example.app",
    platforms: Sequence[str] | None = None,
    devices: Sequence[str] = (),
    created_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The profile's plist as a dict, with the keys and shapes Apple uses for ``kind``.

    ``platforms`` defaults to ``("iOS",)``, or ``("OSX",)`` for ``developer-id``; development and
    ad-hoc profiles list ``devices`` (default :data:`DEFAULT_DEVICES`).
    """
    created = created_at or dt.datetime.now(_UTC)
    expires = expires_at or created + dt.timedelta(days=365)
    macos = kind == "developer-id"
    chosen_platforms = list(platforms or (("OSX",) if macos else ("iOS",)))
    app_id = f"{team_id}.{bundle_id}"
    development = kind == "development"
    entitlements: dict[str, Any] = {
        "com.apple.application-identifier" if macos else "application-identifier": app_id,
        "keychain-access-groups": [f"{team_id}.*"],
        "com.apple.developer.team-identifier": team_id,
    }
    if not macos:
        entitlements["get-task-allow"] = development
        entitlements["aps-environment"] = "development" if development else "production"
    if kind == "app-store":
        entitlements["beta-reports-active"] = True
    plist: dict[str, Any] = {
        "AppIDName": f"{bundle_id} app",
        "ApplicationIdentifierPrefix": [team_id],
        "CreationDate": _naive_utc(created),
        "Platform": chosen_platforms,
        "IsXcodeManaged": False,
        "DeveloperCertificates": [chain.developer.cert_der()],
        "Entitlements": entitlements,
        "ExpirationDate": _naive_utc(expires),
        "Name": name,
        "TeamIdentifier": [team_id],
        "TeamName": team_name,
        "TimeToLive": max(0, (expires - created).days),
        "UUID": (uuid or str(uuid_mod.uuid4())).upper(),
        "Version": 1,
    }
    if kind in ("enterprise", "developer-id"):
        plist["ProvisionsAllDevices"] = True
    elif kind in ("development", "ad-hoc"):
        plist["ProvisionedDevices"] = list(devices or DEFAULT_DEVICES)
    return plist


def plist_bytes(plist: Mapping[str, Any]) -> bytes:
    """XML plist bytes, as Apple's profiles carry them (keys kept in the given order)."""
    return plistlib.dumps(dict(plist), fmt=plistlib.FMT_XML, sort_keys=False)


def _attribute(oid_name: str, value: acore.Asn1Value) -> acms.CMSAttribute:
    return acms.CMSAttribute({"type": oid_name, "values": [value]})


def _cms_time(when: dt.datetime) -> acms.Time:
    """RFC 5652: UTCTime for 1950 to 2049, GeneralizedTime otherwise."""
    if 1950 <= when.year < 2050:
        return acms.Time({"utc_time": acore.UTCTime(when)})
    return acms.Time({"generalized_time": acore.GeneralizedTime(when)})


def _sign(signer: Issued, data: bytes, digest: str) -> tuple[bytes, str]:
    hash_algo = _HASHES[digest]()
    key = signer.key
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hash_algo), "rsassa_pkcs1v15"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_algo)), f"{digest}_ecdsa"
    raise TypeError(f"unsupported signer key {type(key).__name__}")


def sign_content(
    chain: AppleLikeChain,
    content: bytes,
    *,
    digest: Digest = "sha256",
    encoding: Encoding = "der",
    signing_time: dt.datetime | None = None,
    signed_attributes: bool = True,
    detached: bool = False,
    certificates: Iterable[x509.Certificate] | None = None,
) -> bytes:
    """CMS SignedData over ``content`` by ``chain.signer``.

    With ``signed_attributes`` (the default, as Apple does) the signature covers content-type,
    signing-time (``signing_time``, default now) and message-digest; without, it covers the content
    directly. ``detached`` leaves the content out. ``certificates`` overrides the embedded set
    (default ``chain.embedded``).
    """
    signer = chain.signer
    content_digest = hashlib.new(digest, content).digest()
    when = (signing_time or dt.datetime.now(_UTC)).astimezone(_UTC).replace(microsecond=0)
    signer_info: dict[str, Any] = {
        "version": "v1",
        "sid": acms.SignerIdentifier(
            {
                "issuer_and_serial_number": acms.IssuerAndSerialNumber(
                    {
                        "issuer": ax509.Name.load(signer.cert.issuer.public_bytes()),
                        "serial_number": signer.cert.serial_number,
                    }
                )
            }
        ),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
    }
    if signed_attributes:
        attrs = [
            _attribute("content_type", acms.ContentType("data")),
            _attribute("signing_time", _cms_time(when)),
            _attribute("message_digest", acore.OctetString(content_digest)),
        ]
        attrs.sort(key=lambda a: a.dump())  # DER orders SET OF members by their encoding
        signed_attrs = acms.CMSAttributes(attrs)
        signature, sig_algo = _sign(signer, signed_attrs.dump(), digest)
        signer_info["signed_attrs"] = signed_attrs
    else:
        signature, sig_algo = _sign(signer, content, digest)
    signer_info["signature_algorithm"] = algos.SignedDigestAlgorithm({"algorithm": sig_algo})
    signer_info["signature"] = signature
    embedded = chain.embedded if certificates is None else tuple(certificates)
    encap: dict[str, Any] = {"content_type": "data"}
    if not detached:
        encap["content"] = content
    signed_data = acms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
            "encap_content_info": encap,
            "certificates": [
                acms.CertificateChoices({"certificate": _asn1_cert(c)}) for c in embedded
            ],
            "signer_infos": [acms.SignerInfo(signer_info)],
        }
    )
    der = acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return to_ber(der) if encoding == "ber" else der


def _asn1_cert(cert: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def make_profile(
    chain: AppleLikeChain,
    *,
    kind: Kind = "enterprise",
    name: str = "Example Enterprise Profile",
    uuid: str | None = None,
    team_id: str = "ABCDE12345",
    team_name: str = "Example Corp",
    bundle_id: str = "com.example.app",
    platforms: Sequence[str] | None = None,
    devices: Sequence[str] = (),
    created_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    digest: Digest = "sha256",
    encoding: Encoding = "der",
    signing_time: dt.datetime | None = None,
    extra_keys: Mapping[str, Any] | None = None,
    drop_keys: Iterable[str] = (),
    signed_attributes: bool = True,
) -> bytes:
    """A signed ``.mobileprovision``: :func:`profile_plist` + :func:`sign_content`.

    ``uuid`` defaults to a random one; ``expires_at`` to ``created_at`` + 365 days;
    ``signing_time`` to ``created_at`` (Apple signs when it creates). ``extra_keys`` add or
    replace top-level keys (any plist-serialisable value, so wrong types can be tested) and
    ``drop_keys`` removes keys.
    """
    created = created_at or dt.datetime.now(_UTC)
    plist = profile_plist(
        chain,
        kind=kind,
        name=name,
        uuid=uuid,
        team_id=team_id,
        team_name=team_name,
        bundle_id=bundle_id,
        platforms=platforms,
        devices=devices,
        created_at=created,
        expires_at=expires_at,
    )
    plist.update(extra_keys or {})
    for key in drop_keys:
        plist.pop(key, None)
    return sign_content(
        chain,
        plist_bytes(plist),
        digest=digest,
        encoding=encoding,
        signing_time=signing_time or created,
        signed_attributes=signed_attributes,
    )


# --- BER re-encoding -------------------------------------------------------------------------


def _read_tlv(buf: bytes, offset: int) -> tuple[int, int, int]:
    """(tag byte, content start, content end) of the DER element at ``offset``."""
    tag = buf[offset]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags are not used in CMS SignedData")
    first = buf[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ValueError("input is already BER with indefinite lengths")
    else:
        count = first & 0x7F
        length = int.from_bytes(buf[start : start + count], "big")
        start += count
    return tag, start, start + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) for each element in ``buf[start:end]``."""
    out = []
    offset = start
    while offset < end:
        tag, c_start, c_end = _read_tlv(buf, offset)
        out.append((tag, offset, c_start, c_end))
        offset = c_end
    return out


def _indefinite(tag: int, body: bytes) -> bytes:
    return bytes([tag | 0x20, 0x80]) + body + b"\x00\x00"


def _chunked_octets(value: bytes, chunk: int) -> bytes:
    parts = b"".join(
        b"\x04" + _der_len(len(value[i : i + chunk])) + value[i : i + chunk]
        for i in range(0, len(value), chunk)
    )
    return _indefinite(0x04, parts)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def to_ber(der: bytes, *, chunk: int = BER_CHUNK) -> bytes:
    """Re-encode a DER ContentInfo(SignedData) the way BER producers write profiles.

    The outer SEQUENCE, its ``[0]``, the SignedData SEQUENCE, the EncapsulatedContentInfo
    SEQUENCE and its ``[0]`` get indefinite lengths, and the content OCTET STRING becomes a
    constructed, indefinite-length string of ``chunk``-byte primitive pieces. Certificates and
    signer infos are copied byte for byte, so the signature still verifies.
    """
    tag, start, end = _read_tlv(der, 0)
    oid, explicit = _children(der, start, end)
    _, _, sd_start, sd_end = _children(der, explicit[2], explicit[3])[0]
    parts = []
    # SignedData: version, digestAlgorithms, encapContentInfo (index 2), [0] certificates, ...
    for index, (_tag, c_offset, c_start, c_end) in enumerate(_children(der, sd_start, sd_end)):
        if index == 2:
            parts.append(_ber_encap(der, c_start, c_end, chunk))
        else:
            parts.append(der[c_offset:c_end])
    signed_data = _indefinite(0x30, b"".join(parts))
    return _indefinite(tag, der[oid[1] : oid[3]] + _indefinite(explicit[0], signed_data))


def _ber_encap(der: bytes, start: int, end: int, chunk: int) -> bytes:
    kids = _children(der, start, end)
    body = der[kids[0][1] : kids[0][3]]
    if len(kids) > 1:
        ctag, _, cstart, cend = kids[1]
        _, _, ostart, oend = _children(der, cstart, cend)[0]
        body += _indefinite(ctag, _chunked_octets(der[ostart:oend], chunk))
    return _indefinite(0x30, body)


# --- tampering -------------------------------------------------------------------------------


def tamper(data: bytes) -> bytes:
    """Change the signed content in place, keeping every length, so the signature breaks.

    Turns the first ``<string>iOS</string>`` into ``OSX`` (the change seen in a real tampered
    fixture); failing that, swaps the case of the first letter of the profile ``Name``.
    """
    marker = b"<string>iOS</string>"
    at = data.find(marker)
    if at >= 0:
        return data[:at] + b"<string>OSX</string>" + data[at + len(marker) :]
    key = data.find(b"<key>Name</key>")
    if key >= 0:
        value = data.find(b"<string>", key) + len(b"<string>")
        if value >= len(b"<string>") and chr(data[value]).isalpha():
            flipped = bytes([data[value] ^ 0x20])
            return data[:value] + flipped + data[value + 1 :]
    raise ValueError("no plist content found to tamper with")
