"""What the Apple API stand-in holds (bundle IDs, certificates, devices, profiles), written as
Apple's JSON:API documents, and its error documents.

Attribute names and values follow Apple's object pages (``BundleId.Attributes``,
``Certificate.Attributes``, ``Device.Attributes``, ``Profile.Attributes``); errors are
``{"errors": [{"id", "status", "code", "title", "detail", "source"?}]}`` ("ErrorResponse").
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid as uuid_mod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rollout.sim.profiles import Kind

PROFILE_TYPES = (
    "IOS_APP_DEVELOPMENT",
    "IOS_APP_STORE",
    "IOS_APP_ADHOC",
    "IOS_APP_INHOUSE",
    "MAC_APP_DEVELOPMENT",
    "MAC_APP_STORE",
    "MAC_APP_DIRECT",
    "TVOS_APP_DEVELOPMENT",
    "TVOS_APP_STORE",
    "TVOS_APP_ADHOC",
    "TVOS_APP_INHOUSE",
    "MAC_CATALYST_APP_DEVELOPMENT",
    "MAC_CATALYST_APP_STORE",
    "MAC_CATALYST_APP_DIRECT",
)
"""``profileType`` values (Apple's OpenAPI enumeration)."""

_KIND_BY_SUFFIX: dict[str, Kind] = {
    "DEVELOPMENT": "development",
    "ADHOC": "ad-hoc",
    "INHOUSE": "enterprise",
    "STORE": "app-store",
    "DIRECT": "developer-id",
}


def profile_shape(profile_type: str) -> tuple[Kind, tuple[str, ...], str]:
    """(the test profile's kind, its ``Platform`` list, the API's ``platform``) for a type."""
    kind = _KIND_BY_SUFFIX[profile_type.rsplit("_", 1)[1]]
    if profile_type.startswith("MAC_"):
        return kind, ("OSX",), "MAC_OS"
    if profile_type.startswith("TVOS_"):
        return kind, ("tvOS",), "IOS"
    return kind, ("iOS",), "IOS"


def device_scoped(profile_type: str) -> bool:
    """Development and ad hoc profiles list devices."""
    return profile_type.endswith(("_DEVELOPMENT", "_ADHOC"))


def api_date(value: dt.datetime) -> str:
    """A ``date-time`` as the API writes it: ``2026-01-05T09:00:00.000+00:00``."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+00:00"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class SimBundleId:
    """A registered bundle ID (``seed_id`` is its App ID prefix)."""

    kind: ClassVar[str] = "bundleIds"
    id: str
    identifier: str
    name: str
    platform: str
    seed_id: str

    def attributes(self) -> dict[str, Any]:
        """``BundleId.Attributes``."""
        return {
            "identifier": self.identifier,
            "name": self.name,
            "platform": self.platform,
            "seedId": self.seed_id,
        }


@dataclass
class SimCertificate:
    """A signing certificate; ``content`` is its DER, ``serial_number`` upper-case hex."""

    kind: ClassVar[str] = "certificates"
    id: str
    serial_number: str
    certificate_type: str
    name: str
    display_name: str
    expires_at: dt.datetime
    content: bytes
    platform: str = "IOS"

    def attributes(self) -> dict[str, Any]:
        """``Certificate.Attributes``."""
        return {
            "certificateContent": _b64(self.content),
            "certificateType": self.certificate_type,
            "displayName": self.display_name,
            "expirationDate": api_date(self.expires_at),
            "name": self.name,
            "platform": self.platform,
            "serialNumber": self.serial_number,
        }


@dataclass
class SimDevice:
    """A registered device (``status`` ``ENABLED`` or ``DISABLED``)."""

    kind: ClassVar[str] = "devices"
    id: str
    udid: str
    name: str
    platform: str
    status: str
    added_at: dt.datetime

    def attributes(self) -> dict[str, Any]:
        """``Device.Attributes``."""
        return {
            "addedDate": api_date(self.added_at),
            "deviceClass": "MAC" if self.platform == "MAC_OS" else "IPHONE",
            "model": "Mac" if self.platform == "MAC_OS" else "iPhone",
            "name": self.name,
            "platform": self.platform,
            "status": self.status,
            "udid": self.udid,
        }


@dataclass
class SimProfile:
    """A provisioning profile and its signed file (``state`` ``ACTIVE`` or ``INVALID``)."""

    kind: ClassVar[str] = "profiles"
    id: str
    name: str
    profile_type: str
    state: str
    bundle: str
    uuid: str
    created_at: dt.datetime
    expires_at: dt.datetime
    content: bytes
    platform: str
    certificates: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)

    def attributes(self) -> dict[str, Any]:
        """``Profile.Attributes``."""
        return {
            "createdDate": api_date(self.created_at),
            "expirationDate": api_date(self.expires_at),
            "name": self.name,
            "platform": self.platform,
            "profileContent": _b64(self.content),
            "profileState": self.state,
            "profileType": self.profile_type,
            "uuid": self.uuid,
        }


Resource = SimBundleId | SimCertificate | SimDevice | SimProfile

_RELATED = {"bundleIds": ("profiles",), "profiles": ("bundleId", "certificates", "devices")}


def resource_document(origin: str, resource: Resource, fields: str | None) -> dict[str, Any]:
    """One resource object: type, id, attributes (only ``fields`` when given), links."""
    attributes = resource.attributes()
    if fields:
        names = set(fields.split(","))
        attributes = {k: v for k, v in attributes.items() if k in names}
    own = f"{origin}/v1/{resource.kind}/{resource.id}"
    document: dict[str, Any] = {
        "type": resource.kind,
        "id": resource.id,
        "attributes": attributes,
        "links": {"self": own},
    }
    related = _RELATED.get(resource.kind)
    if related:
        document["relationships"] = {
            name: {"links": {"related": f"{own}/{name}"}} for name in related
        }
    return document


# --- errors -----------------------------------------------------------------------------------


class ApiRefusal(Exception):
    """An error answer: the HTTP status and its ErrorResponse document."""

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {
            "errors": [
                {
                    "id": str(uuid_mod.uuid4()),
                    "status": str(status),
                    "code": code,
                    "title": title,
                    "detail": detail,
                    **extra,
                }
            ]
        }


def conflict(detail: str, pointer: str) -> ApiRefusal:
    """409: the request's data breaks a rule the API enforces."""
    return ApiRefusal(
        409,
        "ENTITY_ERROR.ATTRIBUTE.INVALID",
        "An attribute value is invalid.",
        detail,
        source={"pointer": pointer},
    )


def not_found(kind: str, resource_id: str) -> ApiRefusal:
    """404 for a resource ID that does not exist."""
    return ApiRefusal(
        404,
        "NOT_FOUND",
        "The specified resource does not exist",
        f"There is no resource of type '{kind}' with id '{resource_id}'",
    )


def bad_parameter(name: str, detail: str, *, illegal: bool) -> ApiRefusal:
    """400 for a query parameter the endpoint does not take, or a bad value."""
    return ApiRefusal(
        400,
        "PARAMETER_ERROR.ILLEGAL" if illegal else "PARAMETER_ERROR.INVALID",
        "A parameter provided is not allowed for this request"
        if illegal
        else "A parameter has an invalid value",
        detail,
        source={"parameter": name},
    )


def not_authorized() -> ApiRefusal:
    """401: the bearer token is missing or refused."""
    return ApiRefusal(
        401,
        "NOT_AUTHORIZED",
        "Authentication credentials are missing or invalid.",
        "Provide a properly configured and signed bearer token, and make sure that it has"
        " not expired.",
    )


def scripted_failure(status: int) -> ApiRefusal:
    """429 (rate limit) or a server fault."""
    if status == 429:
        return ApiRefusal(
            429,
            "RATE_LIMIT_EXCEEDED",
            "The request rate limit has been reached.",
            "Too many requests for this API key in the last hour. Wait and try again.",
        )
    return ApiRefusal(
        status,
        "UNEXPECTED_ERROR",
        "An unexpected error occurred.",
        "An unexpected error occurred on the server side.",
    )


# --- query filters ----------------------------------------------------------------------------


def matches(wanted: str | None, value: str, *, partial: bool = False) -> bool:
    """A filter's comma-separated values against one attribute (``partial``: a substring)."""
    if wanted is None:
        return True
    values = [w for w in wanted.split(",") if w]
    if partial:
        return any(w.lower() in value.lower() for w in values)
    return value in values
