"""The entry points: bytes → :class:`Profile`, trust anchors from files, the install gate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

from cryptography import x509

from rollout.files import read_capped
from rollout.profiles.chain import describe, evaluate_chain
from rollout.profiles.cms import open_envelope, verify_signature
from rollout.profiles.errors import ProfileSignatureError, ProfileTooLargeError
from rollout.profiles.kind import classify
from rollout.profiles.model import Profile, SignatureVerdict
from rollout.profiles.plist_fields import Fields, extract_fields, read_plist
from rollout.profiles.reasons import plain_reason

MAX_PROFILE_BYTES = 1024 * 1024
MAX_ANCHOR_FILE_BYTES = 1024 * 1024
"""Largest trust-anchor file: room for a bundle of hundreds of PEM roots."""


def parse_profile(data: bytes, *, trust_anchors: Sequence[x509.Certificate] = ()) -> Profile:
    """Parse a signed profile and judge its signature; raise a ``ProfileError`` if unusable.

    A profile whose signature does not verify (e.g. tampered content) is still returned, with
    ``signature.valid`` false: ``inspect`` shows that verdict, install paths call
    :func:`ensure_installable`, which refuses it.
    """
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileTooLargeError(
            f"profile is {len(data)} bytes, over the {MAX_PROFILE_BYTES}-byte limit"
        )
    data = bytes(data)
    envelope = open_envelope(data)
    fields = extract_fields(read_plist(envelope.content))
    check = verify_signature(envelope)
    signer = describe(check.signer_cert) if check.signer_cert is not None else None
    trusted, reason = False, check.reason
    if check.valid and check.signer_cert is not None:
        at = check.signed_at or fields.created_at
        result = evaluate_chain(check.signer_cert, envelope.certificates, trust_anchors, at)
        trusted, reason = result.trusted, result.reason
    verdict = SignatureVerdict(
        valid=check.valid,
        chain_trusted=trusted,
        signer=signer,
        signed_at=check.signed_at,
        reason=reason,
    )
    return _build(fields, verdict, data)


def _build(fields: Fields, verdict: SignatureVerdict, data: bytes) -> Profile:
    kind = classify(
        platforms=fields.platforms,
        provisions_all_devices=fields.provisions_all_devices,
        has_device_list=fields.has_device_list,
        get_task_allow=fields.get_task_allow,
    )
    return Profile(
        uuid=fields.uuid,
        name=fields.name,
        app_id_name=fields.app_id_name,
        app_id=fields.app_id,
        app_id_prefix=fields.app_id_prefix,
        bundle_id=fields.bundle_id,
        team_id=fields.team_id,
        team_name=fields.team_name,
        platforms=fields.platforms,
        kind=kind,
        created_at=fields.created_at,
        expires_at=fields.expires_at,
        provisions_all_devices=fields.provisions_all_devices,
        provisioned_devices=fields.provisioned_devices,
        developer_certificates=fields.developer_certificates,
        signature=verdict,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def ensure_installable(profile: Profile, *, require_trusted_chain: bool = False) -> Profile:
    """The gate for ``profiles add`` and install paths: return ``profile`` or raise.

    Raises :class:`ProfileSignatureError` when the CMS signature is not valid (a tampered file is
    refused), and, with ``require_trusted_chain``, when the chain does not reach a configured
    anchor. Expiry is not judged here; callers decide what an expired profile means for them.
    """
    verdict = profile.signature
    if not verdict.valid:
        raise ProfileSignatureError(
            f"profile {profile.uuid} refused: signature is not valid ({verdict.reason})"
        )
    if require_trusted_chain and not verdict.chain_trusted:
        raise ProfileSignatureError(
            f"profile {profile.uuid} refused: signing chain not trusted ({verdict.reason})"
        )
    return profile


def _certs_from_file(path: Path) -> list[x509.Certificate]:
    blob = read_capped(path, MAX_ANCHOR_FILE_BYTES)
    if b"-----BEGIN" in blob:
        certs = x509.load_pem_x509_certificates(blob)
    else:
        certs = [x509.load_der_x509_certificate(blob)]
    return certs


def load_trust_anchors(paths: Iterable[str | PathLike[str]]) -> list[x509.Certificate]:
    """Certificates from DER or PEM files (a PEM file may hold several), in order.

    Raises ``ValueError`` naming the file when one holds no readable certificate, and
    ``OSError`` (:class:`rollout.files.FileReadError`, one line naming the file) when one
    cannot be read or is over :data:`MAX_ANCHOR_FILE_BYTES`.
    """
    anchors: list[x509.Certificate] = []
    for raw in paths:
        path = Path(raw)
        try:
            anchors.extend(_certs_from_file(path))
        except ValueError as exc:
            raise ValueError(
                f"{path}: not a DER or PEM certificate file ({plain_reason(exc)})"
            ) from exc
    return anchors
