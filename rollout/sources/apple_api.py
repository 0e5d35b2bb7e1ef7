"""Renewed provisioning profiles from Apple: the App Store Connect API or the Enterprise Program
API (in-house accounts), which offer the same provisioning resources under different hosts and
token audiences.

:meth:`AppleProfileSource.renewals` asks for "a newer profile like this one":

1. ``GET /v1/bundleIds?filter[identifier]=…`` ("List Bundle Ids"): the bundle ID resource whose
   ``identifier`` is exactly the old profile's (``com.example.app``, ``com.example.*``, ``*``)
   and whose ``seedId`` (the App ID prefix) is the team's. The filter may match more than the
   exact value, so the answer is compared again here.
2. ``GET /v1/bundleIds/{id}/profiles`` ("List All Profiles for a BundleId"), page after page:
   the ``ACTIVE`` ones of the same ``profileType`` that expire after the old one. Each one's
   ``profileContent`` (base64 of the signed file) is decoded and parsed; one whose team or
   bundle ID is not the old one's is never returned.
3. When there is none, ``POST /v1/profiles`` ("Create a Profile", a ``ProfileCreateRequest``:
   ``data.type`` ``profiles``, ``attributes`` ``name`` and ``profileType``, ``relationships``
   ``bundleId``, ``certificates`` and, for development and ad hoc kinds, ``devices``), with:

   * ``GET /v1/certificates?filter[serialNumber]=…`` ("List and Download Certificates"): the old
     profile's developer certificates that have not expired (``expirationDate``);
   * ``GET /v1/devices?filter[udid]=…`` ("List Devices"): its devices whose ``status`` is
     ``ENABLED``.

   The new profile keeps the old name. A team cannot hold two profiles of one name (an
   inference from how the developer website behaves; Apple's pages do not say), so when Apple
   answers 409 the name gets today's date and time appended, once.

Profile types (``profileType``, from Apple's OpenAPI enumeration): ``IOS_APP_DEVELOPMENT``,
``IOS_APP_ADHOC``, ``IOS_APP_INHOUSE``, ``IOS_APP_STORE``, the ``TVOS_APP_…`` equivalents,
``MAC_APP_DEVELOPMENT``, ``MAC_APP_STORE`` and ``MAC_APP_DIRECT``; states (``profileState``)
``ACTIVE`` and ``INVALID``. List filters take comma-separated values. Hosts:
``https://api.appstoreconnect.apple.com`` and ``https://api.enterprise.developer.apple.com``.

Retries, errors and the token: :mod:`rollout.sources.apple_http`, :mod:`rollout.sources.apple_jwt`.
A create that failed in a way worth retrying (429, 5xx, a dropped connection) is retried only
after listing the bundle's profiles again, so a create Apple did carry out is not made twice.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import httpx

from rollout.clock import Clock
from rollout.profiles import Profile, ProfileError, parse_profile
from rollout.sources.apple_http import (
    AppleApiError,
    AppleAuthError,
    AppleHttp,
    RetryableFailure,
)
from rollout.sources.apple_jwt import ApiName, AppleApiKey, TokenMinter

__all__ = [
    "BASE_URLS",
    "AppleApiError",
    "AppleAuthError",
    "AppleProfileSource",
    "FetchedProfile",
    "WantedRenewal",
    "profile_type_for",
]

log = logging.getLogger(__name__)

BASE_URLS: dict[str, str] = {
    "app-store-connect": "https://api.appstoreconnect.apple.com",
    "enterprise": "https://api.enterprise.developer.apple.com",
}

RenewableKind = Literal[
    "enterprise", "ad-hoc", "development", "app-store", "mac-app-store", "developer-id"
]

_RENEWABLE_KINDS = frozenset(get_args(RenewableKind))

DEVICE_KINDS = frozenset({"development", "ad-hoc"})
"""Kinds whose profiles list devices (Apple asks for ``devices`` when creating them)."""

_PROFILE_TYPES: dict[tuple[str, str], str] = {
    ("IOS", "development"): "IOS_APP_DEVELOPMENT",
    ("IOS", "ad-hoc"): "IOS_APP_ADHOC",
    ("IOS", "enterprise"): "IOS_APP_INHOUSE",
    ("IOS", "app-store"): "IOS_APP_STORE",
    ("TVOS", "development"): "TVOS_APP_DEVELOPMENT",
    ("TVOS", "ad-hoc"): "TVOS_APP_ADHOC",
    ("TVOS", "enterprise"): "TVOS_APP_INHOUSE",
    ("TVOS", "app-store"): "TVOS_APP_STORE",
    ("MAC", "development"): "MAC_APP_DEVELOPMENT",
    ("MAC", "app-store"): "MAC_APP_STORE",
    ("MAC", "mac-app-store"): "MAC_APP_STORE",
    ("MAC", "developer-id"): "MAC_APP_DIRECT",
}
_MAC_PLATFORMS = frozenset({"osx", "macos"})
_PAGE = "200"  # the largest page Apple's list endpoints serve
_UDIDS_PER_REQUEST = 100  # keeps the query string short


def profile_type_for(kind: str, platforms: Iterable[str]) -> str:
    """Apple's ``profileType`` for one of rollout's kinds and a profile's ``Platform`` list.

    A macOS-only profile is a ``MAC_APP_…`` one, a tvOS-only one ``TVOS_APP_…``; everything
    else (iOS, with or without visionOS) is ``IOS_APP_…``. Raises ``ValueError`` for a pair
    Apple has no type for (an in-house macOS profile, for instance).
    """
    names = {p.lower() for p in platforms}
    if names and names <= _MAC_PLATFORMS:
        family = "MAC"
    elif names == {"tvos"}:
        family = "TVOS"
    else:
        family = "IOS"
    try:
        return _PROFILE_TYPES[(family, kind)]
    except KeyError:
        raise ValueError(f"Apple has no profile type for a {kind} {family} profile") from None


@dataclass(frozen=True)
class WantedRenewal:
    """What the old profile says, and so what its renewal must match.

    ``bundle_id`` is the App ID without the team prefix (``com.example.app``, ``com.example.*``
    or ``*``); ``certificate_serials`` are the old profile's developer certificates' serial
    numbers in hex (any case, leading zeros or not); ``devices`` its UDIDs (development and ad
    hoc kinds); ``expires_at`` its expiry (timezone-aware).
    """

    bundle_id: str
    team_id: str
    name: str
    uuid: str
    platforms: tuple[str, ...]
    kind: RenewableKind
    certificate_serials: tuple[str, ...]
    expires_at: dt.datetime
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        if not self.bundle_id or not self.team_id:
            raise ValueError("a renewal needs the bundle ID and the team ID")
        profile_type_for(self.kind, self.platforms)  # refuses kinds Apple cannot renew

    @property
    def profile_type(self) -> str:
        """Apple's ``profileType`` for this profile."""
        return profile_type_for(self.kind, self.platforms)

    @classmethod
    def from_profile(cls, profile: Profile) -> WantedRenewal:
        """What a parsed profile asks of its renewal."""
        kind = profile.kind.value
        if kind not in _RENEWABLE_KINDS:
            raise ValueError(f"profile {profile.uuid} is of kind {kind}: nothing to renew")
        return cls(
            bundle_id=profile.bundle_id,
            team_id=profile.team_id,
            name=profile.name,
            uuid=profile.uuid,
            platforms=profile.platforms,
            kind=cast(RenewableKind, kind),
            certificate_serials=tuple(c.serial for c in profile.developer_certificates),
            expires_at=profile.expires_at,
            devices=profile.provisioned_devices if kind in DEVICE_KINDS else (),
        )


@dataclass(frozen=True)
class FetchedProfile:
    """A profile downloaded from Apple: the signed file and what the API says of it."""

    content: bytes = field(repr=False)
    api_id: str
    name: str
    uuid: str
    profile_type: str
    expires_at: dt.datetime
    created: bool = False
    """True when rollout asked Apple to create it (none existed)."""


class AppleProfileSource:
    """Renewed profiles for one team from one of Apple's provisioning APIs."""

    def __init__(
        self,
        key: AppleApiKey,
        *,
        api: ApiName,
        clock: Clock,
        base_url: str | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self._clock = clock
        self._http = AppleHttp(
            TokenMinter(key, api, clock),
            base_url or BASE_URLS[api],
            clock=clock,
            client=client,
            sleep=sleep,
            max_attempts=max_attempts,
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"AppleProfileSource(api={self.api!r}, base_url={self._http.base_url!r})"

    def close(self) -> None:
        """Close the HTTP client the source made (not one it was given)."""
        self._http.close()

    def __enter__(self) -> AppleProfileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the question -------------------------------------------------------------------------

    def renewals(self, wanted: WantedRenewal) -> list[FetchedProfile]:
        """Active profiles like ``wanted`` that expire later, newest expiry first; when Apple
        has none, one made now (see the module docs). Raises :class:`AppleApiError`."""
        profile_type = wanted.profile_type
        bundle = self._bundle_resource(wanted)
        found = self._existing(bundle, wanted, profile_type)
        if found:
            log.info(
                "apple_api.renewals_found bundle_id=%s type=%s count=%d",
                wanted.bundle_id,
                profile_type,
                len(found),
            )
            return found
        return [self._create(bundle, wanted, profile_type)]

    # --- bundle IDs and profiles --------------------------------------------------------------

    def _bundle_resource(self, wanted: WantedRenewal) -> str:
        items = self._http.get_all(
            "/v1/bundleIds", {"filter[identifier]": wanted.bundle_id, "limit": _PAGE}
        )
        matches = []
        for item in items:
            attributes = _attributes(item)
            seed = attributes.get("seedId")
            if attributes.get("identifier") != wanted.bundle_id:
                continue
            if isinstance(seed, str) and seed and seed != wanted.team_id:
                continue
            if isinstance(item.get("id"), str):
                matches.append(item)
        if not matches:
            raise AppleApiError(
                f"{self._http.label} has no bundle ID {wanted.bundle_id} for team {wanted.team_id}"
            )
        # one identifier is one bundle ID within a team; prefer the one for the platform
        mac = profile_type_for(wanted.kind, wanted.platforms).startswith("MAC_")
        matches.sort(
            key=lambda item: _attributes(item).get("platform") != ("MAC_OS" if mac else "IOS")
        )
        bundle_id: str = matches[0]["id"]
        return bundle_id

    def _existing(
        self, bundle: str, wanted: WantedRenewal, profile_type: str
    ) -> list[FetchedProfile]:
        now = self._clock.now()
        items = self._http.get_all(f"/v1/bundleIds/{bundle}/profiles", {"limit": _PAGE})
        found: list[FetchedProfile] = []
        for item in items:
            attributes = _attributes(item)
            if attributes.get("profileType") != profile_type:
                continue
            if attributes.get("profileState") != "ACTIVE":
                continue
            if attributes.get("uuid") == wanted.uuid:
                continue
            expires = _date(attributes.get("expirationDate"))
            if expires is None or expires <= wanted.expires_at or expires <= now:
                continue
            fetched = self._fetched(item, profile_type, created=False)
            reason = _mismatch(fetched, wanted)
            if reason is not None:
                log.warning(
                    "apple_api.profile_skipped id=%s uuid=%s reason=%s",
                    fetched.api_id,
                    fetched.uuid,
                    reason,
                )
                continue
            found.append(fetched)
        found.sort(key=lambda p: (p.expires_at, p.uuid), reverse=True)
        return found

    def _fetched(self, item: dict[str, Any], profile_type: str, *, created: bool) -> FetchedProfile:
        attributes = _attributes(item)
        resource_id = item.get("id")
        content_b64 = attributes.get("profileContent")
        expires = _date(attributes.get("expirationDate"))
        if not isinstance(resource_id, str) or not isinstance(content_b64, str) or not expires:
            raise AppleApiError(
                f"{self._http.label} described a profile without id, content or expiry"
            )
        try:
            content = base64.b64decode(content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise AppleApiError(
                f"{self._http.label} sent profile {resource_id} with bad base64 content"
            ) from None
        return FetchedProfile(
            content=content,
            api_id=resource_id,
            name=str(attributes.get("name") or ""),
            uuid=str(attributes.get("uuid") or ""),
            profile_type=profile_type,
            expires_at=expires,
            created=created,
        )

    # --- creating one -------------------------------------------------------------------------

    def _create(self, bundle: str, wanted: WantedRenewal, profile_type: str) -> FetchedProfile:
        certificates = self._certificates(wanted)
        devices = self._devices(wanted) if wanted.kind in DEVICE_KINDS else []
        name = wanted.name
        renamed = False
        attempt = 0
        while True:
            attempt += 1
            body = _create_request(name, profile_type, bundle, certificates, devices)
            try:
                document = self._http.attempt("POST", "/v1/profiles", body=body)
            except RetryableFailure as failure:
                self._http.pause(failure, attempt, "POST /v1/profiles")
                # Apple may have made it before the answer was lost: look before asking again
                made = self._existing(bundle, wanted, profile_type)
                if made:
                    return made[0]
                continue
            except AppleApiError as exc:
                if exc.status == 409 and not renamed:
                    renamed = True
                    name = f"{wanted.name} {self._clock.now():%Y-%m-%d %H%M}"
                    log.info("apple_api.profile_name_taken name=%s retry_as=%s", wanted.name, name)
                    continue
                raise
            break
        data = document.get("data")
        if not isinstance(data, dict):
            raise AppleApiError(f"{self._http.label} answered the profile creation without data")
        fetched = self._fetched(data, profile_type, created=True)
        reason = _mismatch(fetched, wanted)
        if reason is not None:
            raise AppleApiError(f"the profile {self._http.label} made is not usable: {reason}")
        log.info(
            "apple_api.profile_created id=%s uuid=%s type=%s expires=%s",
            fetched.api_id,
            fetched.uuid,
            profile_type,
            fetched.expires_at.isoformat(),
        )
        return fetched

    def _certificates(self, wanted: WantedRenewal) -> list[str]:
        serials = {_serial(s) for s in wanted.certificate_serials if _serial(s)}
        if not serials:
            raise AppleApiError(f"profile {wanted.uuid} names no developer certificate")
        # Apple writes serials in upper-case hex; ask for both the bare and the padded form
        asked = sorted({s.upper() for s in serials} | {_even(s).upper() for s in serials})
        items = self._http.get_all(
            "/v1/certificates", {"filter[serialNumber]": ",".join(asked), "limit": _PAGE}
        )
        now = self._clock.now()
        valid = []
        for item in items:
            attributes = _attributes(item)
            serial = attributes.get("serialNumber")
            expires = _date(attributes.get("expirationDate"))
            if not isinstance(serial, str) or _serial(serial) not in serials:
                continue
            if expires is None or expires <= now or not isinstance(item.get("id"), str):
                continue
            valid.append(item["id"])
        if not valid:
            raise AppleApiError(
                f"none of the certificates of profile {wanted.uuid} is still valid at"
                f" {self._http.label} (serials {', '.join(sorted(serials))})"
            )
        return sorted(set(valid))

    def _devices(self, wanted: WantedRenewal) -> list[str]:
        udids = sorted({u.strip() for u in wanted.devices if u.strip()})
        wanted_upper = {u.upper() for u in udids}
        found: dict[str, str] = {}
        for start in range(0, len(udids), _UDIDS_PER_REQUEST):
            chunk = udids[start : start + _UDIDS_PER_REQUEST]
            items = self._http.get_all(
                "/v1/devices", {"filter[udid]": ",".join(chunk), "limit": _PAGE}
            )
            for item in items:
                attributes = _attributes(item)
                udid = attributes.get("udid")
                if not isinstance(udid, str) or udid.upper() not in wanted_upper:
                    continue
                if attributes.get("status") != "ENABLED" or not isinstance(item.get("id"), str):
                    continue
                found[udid.upper()] = item["id"]
        missing = len(wanted_upper) - len(found)
        if not found:
            raise AppleApiError(
                f"none of the {len(wanted_upper)} devices of profile {wanted.uuid} is registered"
                f" and enabled at {self._http.label}"
            )
        if missing:
            log.warning(
                "apple_api.devices_left_out profile=%s missing=%d of=%d",
                wanted.uuid,
                missing,
                len(wanted_upper),
            )
        return sorted(found.values())


# --- JSON:API values ------------------------------------------------------------------------


def _attributes(item: dict[str, Any]) -> dict[str, Any]:
    attributes = item.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _date(value: object) -> dt.datetime | None:
    """An API ``date-time`` (``2026-01-05T09:00:00.000+00:00``) as an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _serial(value: str) -> str:
    """A serial number in one form: lower-case hex, no separators, no leading zeros."""
    digits = value.strip().lower().replace(":", "").replace(" ", "")
    return digits.lstrip("0") or ("0" if digits else "")


def _even(serial: str) -> str:
    return serial if len(serial) % 2 == 0 else "0" + serial


def _create_request(
    name: str, profile_type: str, bundle: str, certificates: Sequence[str], devices: Sequence[str]
) -> dict[str, Any]:
    """A ``ProfileCreateRequest`` document."""
    relationships: dict[str, Any] = {
        "bundleId": {"data": {"type": "bundleIds", "id": bundle}},
        "certificates": {"data": [{"type": "certificates", "id": c} for c in certificates]},
    }
    if devices:
        relationships["devices"] = {"data": [{"type": "devices", "id": d} for d in devices]}
    return {
        "data": {
            "type": "profiles",
            "attributes": {"name": name, "profileType": profile_type},
            "relationships": relationships,
        }
    }


def _mismatch(fetched: FetchedProfile, wanted: WantedRenewal) -> str | None:
    """Why the downloaded file cannot renew ``wanted`` (one line), or None when it can."""
    try:
        profile = parse_profile(fetched.content)
    except ProfileError as exc:
        return f"its content is not a profile ({exc})"
    if profile.team_id != wanted.team_id:
        return f"it is team {profile.team_id}'s, not {wanted.team_id}'s"
    if profile.bundle_id != wanted.bundle_id:
        return f"it is for {profile.bundle_id}, not {wanted.bundle_id}"
    if profile.expires_at <= wanted.expires_at:
        return "it does not outlive the old one"
    if fetched.uuid and profile.uuid.upper() != fetched.uuid.upper():
        return f"its file says UUID {profile.uuid}, the API {fetched.uuid}"
    return None
