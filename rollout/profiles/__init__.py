"""Provisioning profiles (``.mobileprovision`` / ``.provisionprofile``): parse, verify, describe.

Pure functions over bytes the caller passes in (``load_trust_anchors`` reads the files it is
given). Public API::

    parse_profile(data, *, trust_anchors=()) -> Profile
    ensure_installable(profile, *, require_trusted_chain=False) -> Profile   # raises
    load_trust_anchors(paths) -> list[x509.Certificate]
    render_text(profile, *, now=None) -> str

``Profile.to_json()`` keys: uuid, name, app_id_name, app_id, team_id, team_name, platforms, kind
(development, ad-hoc, enterprise, app-store, mac-app-store, developer-id, unknown), created_at,
expires_at, provisions_all_devices, provisioned_devices, developer_certificates (subject,
common_name, serial, not_after, sha256), signature (valid, chain_trusted, signer, signed_at,
reason), sha256. Dates are ISO 8601 UTC ending in ``Z``.

Design of the signature check: ``parse_profile`` never refuses a file for its signature; it
reports the verdict in ``Profile.signature``. Paths that install a profile call
``ensure_installable``, which raises ``ProfileSignatureError`` for an invalid signature.
"""

from rollout.profiles.errors import (
    BadDataError,
    BinaryPlistError,
    ContentNotPlistError,
    DetachedContentError,
    FieldError,
    InvalidDatesError,
    InvalidUUIDError,
    MalformedCMSError,
    MissingKeyError,
    NotCMSError,
    NotSignedDataError,
    ProfileError,
    ProfileSignatureError,
    ProfileTooLargeError,
    UnsignedPlistError,
    WrongTypeError,
)
from rollout.profiles.kind import classify
from rollout.profiles.model import DeveloperCertificate, Profile, ProfileKind, SignatureVerdict
from rollout.profiles.parse import (
    MAX_PROFILE_BYTES,
    ensure_installable,
    load_trust_anchors,
    parse_profile,
)
from rollout.profiles.render import render_text

__all__ = [
    "MAX_PROFILE_BYTES",
    "BadDataError",
    "BinaryPlistError",
    "ContentNotPlistError",
    "DetachedContentError",
    "DeveloperCertificate",
    "FieldError",
    "InvalidDatesError",
    "InvalidUUIDError",
    "MalformedCMSError",
    "MissingKeyError",
    "NotCMSError",
    "NotSignedDataError",
    "Profile",
    "ProfileError",
    "ProfileKind",
    "ProfileSignatureError",
    "ProfileTooLargeError",
    "SignatureVerdict",
    "UnsignedPlistError",
    "WrongTypeError",
    "classify",
    "ensure_installable",
    "load_trust_anchors",
    "parse_profile",
    "render_text",
]
