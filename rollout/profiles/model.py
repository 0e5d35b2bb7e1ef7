"""The parsed profile: plain frozen values, JSON form and a short human rendering."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

_DAY = dt.timedelta(days=1)


class ProfileKind(enum.StrEnum):
    """Distribution kind, derived from the plist (rules in :mod:`rollout.profiles.kind`)."""

    DEVELOPMENT = "development"
    AD_HOC = "ad-hoc"
    ENTERPRISE = "enterprise"
    APP_STORE = "app-store"
    MAC_APP_STORE = "mac-app-store"
    DEVELOPER_ID = "developer-id"
    UNKNOWN = "unknown"


def iso_z(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a trailing ``Z`` (``2024-06-28T15:21:31Z``)."""
    text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def _require_aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required, got a naive one")
    return at


@dataclass(frozen=True, slots=True)
class DeveloperCertificate:
    """One entry of ``DeveloperCertificates``: the certificates allowed to sign covered code."""

    subject: str
    common_name: str | None
    serial: str
    not_after: dt.datetime
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with the keys ``subject, common_name, serial, not_after, sha256``."""
        return {
            "subject": self.subject,
            "common_name": self.common_name,
            "serial": self.serial,
            "not_after": iso_z(self.not_after),
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class SignatureVerdict:
    """What the CMS signature and the certificate chain say.

    ``valid`` is the cryptographic check of the signature over the content (message digest and
    signature); ``chain_trusted`` is only ever true when ``valid`` is. ``reason`` is ``None`` when
    both hold; otherwise it says why not (a signature failure, or why the chain is not trusted).
    """

    valid: bool
    chain_trusted: bool
    signer: str | None
    signed_at: dt.datetime | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with the keys ``valid, chain_trusted, signer, signed_at, reason``."""
        return {
            "valid": self.valid,
            "chain_trusted": self.chain_trusted,
            "signer": self.signer,
            "signed_at": iso_z(self.signed_at) if self.signed_at else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """A parsed ``.mobileprovision`` / ``.provisionprofile``. Build it with ``parse_profile``."""

    uuid: str
    name: str
    app_id_name: str
    app_id: str
    app_id_prefix: str | None
    bundle_id: str
    team_id: str
    team_name: str
    platforms: tuple[str, ...]
    kind: ProfileKind
    created_at: dt.datetime
    expires_at: dt.datetime
    provisions_all_devices: bool
    provisioned_devices: tuple[str, ...]
    developer_certificates: tuple[DeveloperCertificate, ...]
    signature: SignatureVerdict
    sha256: str
    size: int

    def is_expired(self, at: dt.datetime) -> bool:
        """True once ``at`` (timezone-aware) has reached ``expires_at``."""
        return _require_aware(at) >= self.expires_at

    def days_left(self, at: dt.datetime) -> int:
        """Whole days from ``at`` to ``expires_at``, rounded down; negative once expired."""
        return (self.expires_at - _require_aware(at)) // _DAY

    def allows_device(self, udid: str) -> bool:
        """Whether the profile covers the device: all devices, or the UDID is listed.

        UDIDs are compared case-insensitively (old 40-hex UDIDs are lower case, newer
        ``00008020-…`` ones upper case, and tools disagree on case).
        """
        if self.provisions_all_devices:
            return True
        wanted = udid.strip().lower()
        return any(device.lower() == wanted for device in self.provisioned_devices)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys (see the module docs of ``rollout.profiles``)."""
        return {
            "uuid": self.uuid,
            "name": self.name,
            "app_id_name": self.app_id_name,
            "app_id": self.app_id,
            "team_id": self.team_id,
            "team_name": self.team_name,
            "platforms": list(self.platforms),
            "kind": self.kind.value,
            "created_at": iso_z(self.created_at),
            "expires_at": iso_z(self.expires_at),
            "provisions_all_devices": self.provisions_all_devices,
            "provisioned_devices": list(self.provisioned_devices),
            "developer_certificates": [c.to_json() for c in self.developer_certificates],
            "signature": self.signature.to_json(),
            "sha256": self.sha256,
        }
