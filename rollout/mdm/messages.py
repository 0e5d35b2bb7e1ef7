"""Typed device-to-server MDM messages: check-ins and command reports.

Parsing rules (all failures raise :class:`~rollout.mdm.errors.MDMProtocolError`):

* The body size is checked *before* parsing (``max_bytes``, default :data:`MAX_BODY_BYTES`).
* Only **XML** property lists are accepted. Apple devices always send XML; binary plists
  (``bplist00``) are refused with ``not_plist`` because no device sends them and accepting them
  would only widen what an attacker can feed the parser. XML entity declarations are refused by
  :mod:`plistlib` itself, so entity-expansion tricks do not work.
* Every key this module knows must have Apple's type when present (``wrong_type`` otherwise);
  required keys must be present and non-empty (``missing_key``). Unknown keys are kept in ``raw``.
  One leniency: an ``ErrorChain`` item without ``LocalizedDescription`` gets ``""``, because that
  text is diagnostic only and refusing the report would make the device resend it forever.
* Nothing unbounded gets through, so one device's message can never fail a batch of others'
  writes (bounds in :mod:`rollout.bounds`): a field rollout stores that is over its bound is
  refused with ``too_long`` (an ``ErrorChain`` with too many items with ``too_many``, a report's
  command-specific keys over their JSON budget with ``too_large``); anywhere in the message, a
  NaN or infinite real gives ``not_finite``, an integer outside 64 bits ``out_of_range`` and
  nesting deeper than the bound ``too_deep`` (see :mod:`rollout.mdm.bounded`).
* The channel identity comes from ``UDID`` or, for user enrollment, ``EnrollmentID`` (``UDID``
  wins if both are present); neither gives ``no_identity``. UDIDs are case-insensitive and come
  out in their canonical upper-case form (:func:`rollout.identifiers.normalize_udid`), so a
  device that reports its UDID in lower case matches its record; EnrollmentIDs are kept exactly
  as sent. ``raw`` and the body bytes (what a signature covers) are never changed.

``raw`` holds the whole decoded dictionary (read-only) and is left out of ``repr`` because it can
hold secrets (``UnlockToken``, ``BootstrapToken``).
"""

from __future__ import annotations

import datetime as dt
import enum
import plistlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

from rollout import bounds
from rollout.identifiers import normalize_udid
from rollout.mdm.bounded import JSONValue, check_length, json_size, json_view, shown
from rollout.mdm.errors import MDMProtocolError

MAX_BODY_BYTES = 1024 * 1024
"""Largest MDM request body accepted by the parsers (1 MiB)."""

SHARED_IPAD_USER_ID = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"
"""The ``UserID`` every Shared iPad user channel reports; the user is told by ``UserShortName``."""

CHECKIN_CONTENT_TYPE = "application/x-apple-aspen-mdm-checkin"
"""Content type of check-in requests (a report has ``application/x-apple-aspen-mdm``)."""


def load_plist(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode an XML plist body whose top level must be a dictionary."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MDMProtocolError("wrong_type", "the body must be bytes")
    if len(body) > max_bytes:
        raise MDMProtocolError(
            "too_large", f"the body is {len(body)} bytes, over the {max_bytes}-byte limit"
        )
    data = bytes(body)
    if data.startswith(b"bplist"):
        raise MDMProtocolError(
            "not_plist", "binary plists are not accepted: Apple devices send XML plists"
        )
    try:
        top = plistlib.loads(data, fmt=plistlib.FMT_XML)
    except Exception as exc:  # plistlib raises many types on bad input (ExpatError, ...)
        raise MDMProtocolError(
            "not_plist", f"the body is not an XML plist ({type(exc).__name__})"
        ) from exc
    if top is None:
        raise MDMProtocolError("not_plist", "the body holds no plist value")
    if not isinstance(top, dict):
        raise MDMProtocolError(
            "wrong_type", f"the plist must be a dictionary, not {type(top).__name__}"
        )
    return top


# --- typed access to plist values -----------------------------------------------------------


def _str(
    d: Mapping[str, Any], key: str, *, where: str = "", limit: int | None = None
) -> str | None:
    """An optional string, at most ``limit`` characters; ``""`` counts as absent."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MDMProtocolError(
            "wrong_type", f"{where}{key} must be a string, not {type(value).__name__}"
        )
    if limit is not None:
        check_length(value, limit, f"{where}{key}")
    return value or None


def _req_str(d: Mapping[str, Any], key: str, *, where: str = "", limit: int | None = None) -> str:
    value = _str(d, key, where=where, limit=limit)
    if value is None:
        raise MDMProtocolError("missing_key", f"{where}{key} is required")
    return value


def _bool(d: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MDMProtocolError("wrong_type", f"{key} must be a boolean")
    return value


def _data(d: Mapping[str, Any], key: str, *, limit: int | None = None) -> bytes | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise MDMProtocolError("wrong_type", f"{key} must be data, not {type(value).__name__}")
    if limit is not None:
        check_length(value, limit, key)
    return value or None


def _check_values(top: Mapping[str, Any]) -> None:
    """Refuse a message holding a value no JSON can store (NaN, a 100-digit integer) or
    nesting too deep, wherever it is (see :mod:`rollout.mdm.bounded`)."""
    for key, value in top.items():
        if not isinstance(value, str):  # strings, the usual value, need no walk
            json_view(value, where=key)


# --- channel identity -----------------------------------------------------------------------


@dataclass(frozen=True)
class Enrollment:
    """Who sent a message: the device channel (``UDID`` / ``EnrollmentID``) plus user keys.

    ``enrollment_key`` is the channel's stable id (nanomdm's scheme): the device channel is the
    ``UDID``, or the ``EnrollmentID`` for user enrollment; a user channel is
    ``<device>:<UserID>``, ``<device>:<UserShortName>`` on Shared iPad, or
    ``<EnrollmentID>:<EnrollmentUserID>`` for a user-enrollment user channel.

    ``udid`` is canonical (upper case, see :func:`rollout.identifiers.normalize_udid`) however
    the device or the caller spelt it; every id is within its bound in :mod:`rollout.bounds`
    (``too_long`` otherwise), the channel id included.
    """

    udid: str | None = None
    enrollment_id: str | None = None
    user_id: str | None = None
    user_short_name: str | None = None
    user_long_name: str | None = None
    enrollment_user_id: str | None = None

    def __post_init__(self) -> None:
        if self.udid is not None:
            # Checked in the stored form: upper-casing can lengthen non-ASCII text ("ß" -> "SS").
            udid = normalize_udid(self.udid) or None
            if udid is not None:
                check_length(udid, bounds.UDID, "UDID")
            if udid != self.udid:
                object.__setattr__(self, "udid", udid)
        if self.enrollment_id is not None:
            check_length(self.enrollment_id, bounds.ENROLLMENT_ID, "EnrollmentID")
        if not self.udid and not self.enrollment_id:
            raise MDMProtocolError("no_identity", "neither UDID nor EnrollmentID is present")
        if self.is_shared_ipad_user and not self.user_short_name:
            raise MDMProtocolError(
                "missing_key", "a Shared iPad user channel (UserID FFFF...) needs UserShortName"
            )
        # A device channel's id is its UDID or EnrollmentID, both bounded above; a user
        # channel's adds the user part.
        if self.user_id or self.enrollment_user_id:
            check_length(
                self.enrollment_key, bounds.ENROLLMENT_KEY, "the channel id <device>:<user>"
            )

    @classmethod
    def from_plist(cls, d: Mapping[str, Any]) -> Enrollment:
        """The identity keys of a check-in or report dictionary."""
        return cls(
            udid=_str(d, "UDID"),
            enrollment_id=_str(d, "EnrollmentID"),
            user_id=_str(d, "UserID"),
            user_short_name=_str(d, "UserShortName"),
            user_long_name=_str(d, "UserLongName"),
            enrollment_user_id=_str(d, "EnrollmentUserID"),
        )

    @property
    def device_key(self) -> str:
        """The device channel id: ``UDID``, or ``EnrollmentID`` for user enrollment."""
        key = self.udid or self.enrollment_id
        assert key is not None  # guaranteed by __post_init__
        return key

    @property
    def is_user_enrollment(self) -> bool:
        """True for a user enrollment (identified by ``EnrollmentID``, no ``UDID``)."""
        return not self.udid

    @property
    def is_shared_ipad_user(self) -> bool:
        """True for a Shared iPad user channel."""
        return (self.user_id or "").upper() == SHARED_IPAD_USER_ID

    @property
    def is_user_channel(self) -> bool:
        """True when the message comes from a user channel, not the device channel."""
        return bool(self.user_id or self.enrollment_user_id)

    @property
    def enrollment_key(self) -> str:
        """The channel id (see the class docs)."""
        device = self.device_key
        if self.user_id:
            if self.is_shared_ipad_user:
                return f"{device}:{self.user_short_name}"
            return f"{device}:{self.user_id}"
        if self.enrollment_user_id:
            return f"{device}:{self.enrollment_user_id}"
        return device


# --- check-ins ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authenticate:
    """``Authenticate``: the device starts (or restarts) enrollment."""

    message_type: ClassVar[str] = "Authenticate"

    enrollment: Enrollment
    topic: str
    os_version: str | None = None
    build_version: str | None = None
    product_name: str | None = None
    serial_number: str | None = None
    imei: str | None = None
    meid: str | None = None
    device_name: str | None = None
    model: str | None = None
    model_name: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def udid(self) -> str | None:
        """``UDID`` (None for user enrollment)."""
        return self.enrollment.udid

    @property
    def enrollment_id(self) -> str | None:
        """``EnrollmentID`` (user enrollment)."""
        return self.enrollment.enrollment_id

    @property
    def enrollment_key(self) -> str:
        """The channel id (see :class:`Enrollment`)."""
        return self.enrollment.enrollment_key


@dataclass(frozen=True)
class TokenUpdate:
    """``TokenUpdate``: new push data; the first one completes enrollment.

    ``unlock_token`` is kept (out of ``repr``) for servers that need it; check
    ``has_unlock_token`` for its presence.
    """

    message_type: ClassVar[str] = "TokenUpdate"

    enrollment: Enrollment
    topic: str
    token: bytes
    push_magic: str
    unlock_token: bytes | None = field(default=None, repr=False)
    awaiting_configuration: bool = False
    not_on_console: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def token_hex(self) -> str:
        """The APNs device token as lowercase hex (what APNs wants in the request path)."""
        return self.token.hex()

    @property
    def has_unlock_token(self) -> bool:
        """True when the device sent an ``UnlockToken``."""
        return self.unlock_token is not None

    @property
    def enrollment_key(self) -> str:
        """The channel id (see :class:`Enrollment`)."""
        return self.enrollment.enrollment_key


@dataclass(frozen=True)
class CheckOut:
    """``CheckOut``: the MDM profile was removed (best effort, sent once)."""

    message_type: ClassVar[str] = "CheckOut"

    enrollment: Enrollment
    topic: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def enrollment_key(self) -> str:
        """The channel id (see :class:`Enrollment`)."""
        return self.enrollment.enrollment_key


@dataclass(frozen=True)
class OtherCheckin:
    """Any other check-in (``UserAuthenticate``, ``SetBootstrapToken``, ``GetBootstrapToken``,
    ``DeclarativeManagement``, ``GetToken``, ...), kept with its whole dictionary."""

    message_type: str
    enrollment: Enrollment
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def enrollment_key(self) -> str:
        """The channel id (see :class:`Enrollment`)."""
        return self.enrollment.enrollment_key


CheckinMessage = Authenticate | TokenUpdate | CheckOut | OtherCheckin


def parse_checkin(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> CheckinMessage:
    """Parse a check-in request body (``Content-Type: application/x-apple-aspen-mdm-checkin``)."""
    top = load_plist(body, max_bytes=max_bytes)
    if "MessageType" not in top:
        if "Command" in top:
            raise MDMProtocolError("wrong_kind", "this is a server-to-device command")
        if "Status" in top:
            raise MDMProtocolError(
                "wrong_kind", "this is a command report (it has Status), not a check-in"
            )
    message_type = _req_str(top, "MessageType", limit=bounds.MESSAGE_TYPE)
    raw = MappingProxyType(top)
    enrollment = Enrollment.from_plist(top)
    msg: CheckinMessage
    if message_type == "Authenticate":
        msg = Authenticate(
            enrollment=enrollment,
            topic=_req_str(top, "Topic", limit=bounds.TOPIC),
            os_version=_str(top, "OSVersion", limit=bounds.OS_VERSION),
            build_version=_str(top, "BuildVersion", limit=bounds.BUILD_VERSION),
            product_name=_str(top, "ProductName", limit=bounds.PRODUCT_NAME),
            serial_number=_str(top, "SerialNumber", limit=bounds.SERIAL_NUMBER),
            imei=_str(top, "IMEI"),
            meid=_str(top, "MEID"),
            device_name=_str(top, "DeviceName", limit=bounds.DEVICE_NAME),
            model=_str(top, "Model", limit=bounds.MODEL),
            model_name=_str(top, "ModelName"),
            raw=raw,
        )
    elif message_type == "TokenUpdate":
        token = _data(top, "Token", limit=bounds.PUSH_TOKEN_BYTES)
        if token is None:
            raise MDMProtocolError("missing_key", "Token is required")
        msg = TokenUpdate(
            enrollment=enrollment,
            topic=_req_str(top, "Topic", limit=bounds.TOPIC),
            token=token,
            push_magic=_req_str(top, "PushMagic", limit=bounds.PUSH_MAGIC),
            unlock_token=_data(top, "UnlockToken"),
            awaiting_configuration=_bool(top, "AwaitingConfiguration"),
            not_on_console=_bool(top, "NotOnConsole"),
            raw=raw,
        )
    elif message_type == "CheckOut":
        msg = CheckOut(
            enrollment=enrollment, topic=_req_str(top, "Topic", limit=bounds.TOPIC), raw=raw
        )
    else:
        msg = OtherCheckin(message_type=message_type, enrollment=enrollment, raw=raw)
    _check_values(top)
    return msg


class CheckinReply(NamedTuple):
    """What to answer a check-in: HTTP status, body, and why (None when accepted)."""

    status_code: int
    body: bytes
    reason: str | None = None


NOT_SERVED_CHECKINS = frozenset(
    {
        "SetBootstrapToken",
        "GetBootstrapToken",
        "DeclarativeManagement",
        "GetToken",
        "ReturnToService",
    }
)
"""Check-in types Apple defines that rollout does not serve (see :func:`checkin_reply`)."""


def checkin_reply(msg: CheckinMessage) -> CheckinReply:
    """The HTTP answer for a parsed check-in (after identity checks and persistence succeeded).

    * ``Authenticate``, ``TokenUpdate``, ``CheckOut``: 200 with an empty body.
    * ``UserAuthenticate``: 410 (``user_channel_declined``), which declines the user channel
      (nanomdm's default).
    * The other types Apple defines (:data:`NOT_SERVED_CHECKINS`): 501 (``not_served``) with an
      empty body. Devices send these only when the server advertises the matching capability,
      which this product does not; a 200 with an empty body would wrongly claim, e.g., that a
      bootstrap token was escrowed or would hand the device an empty reply where it expects a
      plist. nanomdm answers these with a 5xx too when it has no handler.
    * Any other type: 400 (``unknown_message_type``). It is the device's input that is wrong,
      not the server, so it must not count as a server failure.

    Never 401: that would make the device remove its MDM profile.
    """
    if isinstance(msg, Authenticate | TokenUpdate | CheckOut):
        return CheckinReply(200, b"")
    if msg.message_type == "UserAuthenticate":
        return CheckinReply(410, b"", "user_channel_declined")
    if msg.message_type in NOT_SERVED_CHECKINS:
        return CheckinReply(501, b"", "not_served")
    return CheckinReply(400, b"", "unknown_message_type")


# --- command reports ------------------------------------------------------------------------


class Status(enum.StrEnum):
    """``Status`` of a command report."""

    IDLE = "Idle"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    NOT_NOW = "NotNow"

    @property
    def is_final(self) -> bool:
        """True when the command is done (no resend): Acknowledged, Error, CommandFormatError."""
        return self in (Status.ACKNOWLEDGED, Status.ERROR, Status.COMMAND_FORMAT_ERROR)


@dataclass(frozen=True)
class ErrorChainItem:
    """One ``ErrorChain`` entry; the first is the top-level error, later ones its causes.

    Texts are kept exactly as the device sent them.
    """

    code: int
    domain: str
    localized_description: str
    us_english_description: str | None = None

    def as_json(self) -> dict[str, JSONValue]:
        """The item under Apple's keys, ready for JSON (every field is already bounded);
        ``USEnglishDescription`` only when the device sent it."""
        item: dict[str, JSONValue] = {
            "ErrorCode": self.code,
            "ErrorDomain": self.domain,
            "LocalizedDescription": self.localized_description,
        }
        if self.us_english_description is not None:
            item["USEnglishDescription"] = self.us_english_description
        return item


@dataclass(frozen=True)
class CommandResult:
    """A command report (``Content-Type: application/x-apple-aspen-mdm``).

    ``command_uuid`` is None for ``Idle``. ``raw`` has the command-specific keys (and all
    others) exactly as decoded, for the typed accessors such as
    :func:`parse_provisioning_profile_list`.

    ``extra_json`` is the JSON-ready view of the command-specific keys (every key but
    :data:`REPORT_KEYS`), made by the parser: dates as ISO 8601 UTC text, data as lower-case
    hex, only finite reals and 64-bit integers, nesting and size within :mod:`rollout.bounds`,
    so ``json.dumps(result.extra_json, allow_nan=False)`` cannot fail. It is a plain ``dict``
    made for this result (so any JSON encoder takes it); treat it as read-only.
    """

    status: Status
    command_uuid: str | None
    enrollment: Enrollment
    error_chain: tuple[ErrorChainItem, ...] = ()
    not_on_console: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)
    extra_json: dict[str, JSONValue] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    @property
    def enrollment_key(self) -> str:
        """The channel id (see :class:`Enrollment`)."""
        return self.enrollment.enrollment_key


REPORT_KEYS = frozenset(
    {
        "UDID",
        "EnrollmentID",
        "UserID",
        "UserShortName",
        "UserLongName",
        "EnrollmentUserID",
        "CommandUUID",
        "Status",
        "ErrorChain",
        "NotOnConsole",
    }
)
"""The keys every report may carry; all others are command-specific (``extra_json``)."""


def _error_chain(value: Any) -> tuple[ErrorChainItem, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MDMProtocolError("wrong_type", "ErrorChain must be an array")
    if len(value) > bounds.ERROR_CHAIN_ITEMS:
        raise MDMProtocolError(
            "too_many",
            f"ErrorChain has {len(value)} items, over the {bounds.ERROR_CHAIN_ITEMS}-item limit",
        )
    items: list[ErrorChainItem] = []
    for i, entry in enumerate(value):
        where = f"ErrorChain[{i}]."
        if not isinstance(entry, dict):
            raise MDMProtocolError("wrong_type", f"ErrorChain[{i}] must be a dictionary")
        code = entry.get("ErrorCode")
        if code is None:
            raise MDMProtocolError("missing_key", f"{where}ErrorCode is required")
        if not isinstance(code, int) or isinstance(code, bool):
            raise MDMProtocolError("wrong_type", f"{where}ErrorCode must be an integer")
        localized = entry.get("LocalizedDescription", "")
        if not isinstance(localized, str):
            raise MDMProtocolError("wrong_type", f"{where}LocalizedDescription must be a string")
        check_length(localized, bounds.ERROR_TEXT, f"{where}LocalizedDescription")
        english = entry.get("USEnglishDescription")
        if english is not None:
            if not isinstance(english, str):
                raise MDMProtocolError(
                    "wrong_type", f"{where}USEnglishDescription must be a string"
                )
            check_length(english, bounds.ERROR_TEXT, f"{where}USEnglishDescription")
        items.append(
            ErrorChainItem(
                code=code,
                domain=_req_str(entry, "ErrorDomain", where=where, limit=bounds.ERROR_DOMAIN),
                localized_description=localized,
                us_english_description=english,
            )
        )
    return tuple(items)


def parse_result(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> CommandResult:
    """Parse a command report body (``Idle`` or the result of the previous command)."""
    top = load_plist(body, max_bytes=max_bytes)
    if "Status" not in top:
        if "Command" in top:
            raise MDMProtocolError(
                "wrong_kind", "this is a server-to-device command, not a command report"
            )
        if "MessageType" in top:
            raise MDMProtocolError("wrong_kind", "this is a check-in, not a command report")
    status_text = _req_str(top, "Status")
    try:
        status = Status(status_text)
    except ValueError:
        raise MDMProtocolError("bad_status", f"unknown Status {shown(status_text)!r}") from None
    enrollment = Enrollment.from_plist(top)
    # Idle reports no command; a CommandUUID sent along with it is ignored (and not stored).
    command_uuid = (
        None if status is Status.IDLE else _req_str(top, "CommandUUID", limit=bounds.COMMAND_UUID)
    )
    error_chain = _error_chain(top.get("ErrorChain"))
    not_on_console = _bool(top, "NotOnConsole")
    if status is Status.ACKNOWLEDGED and "ProvisioningProfileList" in top:
        # Its items become installed-profile rows: refuse a malformed or over-long one now,
        # before the report joins a batch, rather than when the ledger stores it.
        _profile_items(top["ProvisioningProfileList"])
    return CommandResult(
        status=status,
        command_uuid=command_uuid,
        enrollment=enrollment,
        error_chain=error_chain,
        not_on_console=not_on_console,
        raw=MappingProxyType(top),
        extra_json=_extra_json(top),
    )


def _extra_json(top: Mapping[str, Any]) -> dict[str, JSONValue]:
    """The JSON view of a report's command-specific keys; the other keys are checked too."""
    view: dict[str, JSONValue] = {}
    for key, value in top.items():
        if key not in REPORT_KEYS:
            view[key] = json_view(value, where=shown(key))
        elif not isinstance(value, str):  # already typed; an ErrorChain can still nest
            json_view(value, where=key)
    if view:
        size = json_size(view)
        if size > bounds.EXTRA_JSON_BYTES:
            raise MDMProtocolError(
                "too_large",
                f"the command-specific keys take {size} bytes as JSON, over the "
                f"{bounds.EXTRA_JSON_BYTES}-byte limit",
            )
    return view


# --- command-specific results ---------------------------------------------------------------


@dataclass(frozen=True)
class InstalledProfileItem:
    """One entry of a ``ProvisioningProfileList`` result."""

    uuid: str
    name: str
    expiry_date: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def is_expired(self, at: dt.datetime | None = None) -> bool:
        """True if the profile's expiry date is at or before ``at`` (default: now)."""
        if self.expiry_date is None:
            return False
        return self.expiry_date <= (at or dt.datetime.now(dt.UTC))


def parse_provisioning_profile_list(result: CommandResult) -> tuple[InstalledProfileItem, ...]:
    """The items of an ``Acknowledged`` ``ProvisioningProfileList`` result.

    ``ExpiryDate`` (a plist ``<date>``, always UTC) becomes a timezone-aware UTC datetime.
    ``UUID`` and ``Name`` are kept as sent and are within :data:`rollout.bounds.PROFILE_UUID`
    (in lower case, the form the library keys profiles by) and
    :data:`rollout.bounds.PROFILE_NAME`.
    """
    if result.status is not Status.ACKNOWLEDGED:
        raise MDMProtocolError(
            "bad_status", f"a profile list needs an Acknowledged result, not {result.status}"
        )
    return _profile_items(result.raw.get("ProvisioningProfileList"))


def _profile_items(value: Any) -> tuple[InstalledProfileItem, ...]:
    if value is None:
        raise MDMProtocolError("missing_key", "ProvisioningProfileList is required")
    if not isinstance(value, list):
        raise MDMProtocolError("wrong_type", "ProvisioningProfileList must be an array")
    items: list[InstalledProfileItem] = []
    for i, entry in enumerate(value):
        where = f"ProvisioningProfileList[{i}]."
        if not isinstance(entry, dict):
            raise MDMProtocolError("wrong_type", f"ProvisioningProfileList[{i}] must be a dict")
        expiry = entry.get("ExpiryDate")
        if expiry is not None:
            if not isinstance(expiry, dt.datetime):
                raise MDMProtocolError("wrong_type", f"{where}ExpiryDate must be a date")
            expiry = (
                expiry.replace(tzinfo=dt.UTC)
                if expiry.tzinfo is None
                else expiry.astimezone(dt.UTC)
            )
        name = entry.get("Name")
        if name is None:
            raise MDMProtocolError("missing_key", f"{where}Name is required")
        if not isinstance(name, str):
            raise MDMProtocolError("wrong_type", f"{where}Name must be a string")
        check_length(name, bounds.PROFILE_NAME, f"{where}Name")
        uuid = _req_str(entry, "UUID", where=where)
        check_length(uuid.lower(), bounds.PROFILE_UUID, f"{where}UUID")
        items.append(
            InstalledProfileItem(
                uuid=uuid,
                name=name,
                expiry_date=expiry,
                raw=MappingProxyType(entry),
            )
        )
    return tuple(items)
