"""A simulated Apple device that enrolls, checks in and runs provisioning-profile commands.

The protocol logic is pure and separate from I/O:

* :meth:`SimDevice.authenticate_body`, :meth:`~SimDevice.token_update_body`,
  :meth:`~SimDevice.checkout_body` and :meth:`~SimDevice.idle_body` build request bodies;
* :meth:`SimDevice.handle_command` takes a command plist from the server and returns the result
  plist to send back, after really running the command against the device's own store of
  installed profiles;
* :meth:`SimDevice.headers` gives the request headers, with a real ``Mdm-Signature``.

The async drivers :meth:`SimDevice.enroll` and :meth:`SimDevice.run_session` do the HTTP part
through any :class:`Transport` (one ``put`` method), so the httpx-based and the lean HTTP/1.1
transports of :mod:`rollout.sim.http11` both fit, and a test can pass a plain object.

What the device checks on ``InstallProvisioningProfile`` (first failure wins; domain
MCProvisioningProfileErrorDomain throughout):

* the profile does not parse, or its signature is bad: ``Error`` 25000 "The profile is invalid."
  with a cause item;
* it has expired: ``Error`` 25001 "The profile could not be installed.", cause "has expired";
* this UDID is not provisioned (and not all devices are): ``Error`` 25001, cause "not included";
* no ``Platform`` entry fits the device: ``Error`` 25001, cause "not valid for this platform";
* otherwise the profile is stored (one with the same UUID is replaced): ``Acknowledged``.

The codes come from Apple's legacy error table (25000 bad profile, 25001 cannot install, 25002
cannot remove; MCMDMErrorDomain 12014 not managed, 12021 invalid request type). The texts and
the exact split between top item and cause are this simulator's, not captured from devices.
Platform rule: an iOS or iPadOS device wants ``iOS`` in ``Platform``; on macOS these commands
handle iOS-style profiles only (DOMAIN §3), so macOS wants ``iOS`` too. A profile without a
``Platform`` key is accepted.

A :class:`DeviceBehavior` can override the answer to ``InstallProvisioningProfile`` (NotNow a
few times, always Error, always CommandFormatError) or make the device go silent after
enrollment (``offline``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import plistlib
import random
import re
import secrets
import time
import uuid as uuid_mod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography import x509

from rollout.mdm.commands import (
    INSTALL_PROVISIONING_PROFILE,
    PROVISIONING_PROFILE_LIST,
    REMOVE_PROVISIONING_PROFILE,
    parse_command,
)
from rollout.mdm.errors import MDMProtocolError
from rollout.mdm.messages import Status
from rollout.profiles import Profile, ProfileError, parse_profile
from rollout.sim.identity import issue_device_identity, sign_body
from rollout.sim.pki import Issued

__all__ = [
    "BAD_PROFILE",
    "CANNOT_INSTALL",
    "CANNOT_REMOVE",
    "CHECKIN_CONTENT_TYPE",
    "CHECKIN_PATH",
    "CONNECT_CONTENT_TYPE",
    "CONNECT_PATH",
    "DEFAULT_TOPIC",
    "INVALID_REQUEST_TYPE",
    "MAX_COMMANDS_PER_SESSION",
    "MDM_DOMAIN",
    "NOT_MANAGED",
    "PROFILE_DOMAIN",
    "CommandOutcome",
    "DeviceBehavior",
    "DeviceCounters",
    "EnrollResult",
    "InstalledProfile",
    "SessionResult",
    "SimDevice",
    "Transport",
    "TransportError",
    "make_udid",
]

CHECKIN_PATH = "/mdm/checkin"
CONNECT_PATH = "/mdm/connect"
CHECKIN_CONTENT_TYPE = "application/x-apple-aspen-mdm-checkin"
CONNECT_CONTENT_TYPE = "application/x-apple-aspen-mdm; charset=UTF-8"
SIGNATURE_HEADER = "Mdm-Signature"
DEFAULT_TOPIC = "com.apple.mgmt.External.7b1e3f4a-2c5d-4e6f-8a9b-0c1d2e3f4a5b"
MAX_COMMANDS_PER_SESSION = 50
"""A session stops after this many commands even if the server keeps sending more."""

PROFILE_DOMAIN = "MCProvisioningProfileErrorDomain"
MDM_DOMAIN = "MCMDMErrorDomain"
BAD_PROFILE = 25000
CANNOT_INSTALL = 25001
CANNOT_REMOVE = 25002
NOT_MANAGED = 12014
INVALID_REQUEST_TYPE = 12021

Mode = Literal["ok", "notnow_then_ok", "error", "format_error", "offline"]
ErrorKind = Literal["install_failed", "not_managed"]
SessionEnd = Literal["empty", "http_error", "transport_error", "cap", "offline"]

_MODES = ("ok", "notnow_then_ok", "error", "format_error", "offline")
_ACCEPTED_PLATFORMS: dict[str, frozenset[str]] = {
    "iOS": frozenset({"iOS"}),
    "iPadOS": frozenset({"iOS"}),
    "macOS": frozenset({"iOS"}),
    "tvOS": frozenset({"tvOS"}),
    "visionOS": frozenset({"xrOS", "visionOS", "iOS"}),
    "watchOS": frozenset({"watchOS", "iOS"}),
}
# Chip ids as they appear at the front of new-style UDIDs, per platform.
_CHIP_IDS: dict[str, tuple[str, ...]] = {
    "iOS": ("00008030", "00008101", "00008110", "00008120", "00008130"),
    "iPadOS": ("00008027", "00008103", "00008112", "00008122"),
    "macOS": ("00008103", "00008112", "00008122"),
}
_PRODUCTS = {
    "iOS": "iPhone15,2",
    "iPadOS": "iPad13,18",
    "macOS": "Mac14,2",
    "tvOS": "AppleTV14,1",
    "visionOS": "RealityDevice14,1",
    "watchOS": "Watch7,1",
}
_SERIAL_ALPHABET = "BCDFGHJKLMNPQRTVWXY0123456789"
_COMMAND_UUID_RE = re.compile(rb"<key>CommandUUID</key>\s*<string>([^<]{1,128})</string>")


# --- transport seam -------------------------------------------------------------------------


class TransportError(Exception):
    """The request did not get an HTTP answer (connection refused or reset, time-out, ...)."""


class Transport(Protocol):
    """What a device needs from HTTP: one PUT relative to the server's base URL."""

    async def put(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send ``body`` to ``path``; return the status code and the whole response body.

        Raises :class:`TransportError` (or ``OSError`` / ``TimeoutError``) when no answer came.
        """
        ...


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceBehavior:
    """How a device answers ``InstallProvisioningProfile`` and whether it connects at all.

    ``mode``:

    * ``ok``: run the command for real (Acknowledged, or Error when the profile is unfit);
    * ``notnow_then_ok``: answer NotNow the first ``notnow_times`` times a given install command
      (by CommandUUID) arrives, then run it; a server that offers NotNow'd commands again only
      in a later session sees it succeed there;
    * ``error``: always ``Error`` with a realistic ErrorChain (``error`` picks which);
    * ``format_error``: always ``CommandFormatError``;
    * ``offline``: enrolls, then never connects again (pushes are ignored).

    ``delay_s`` sleeps before answering each command (a slow device). ``dead_token`` is only a
    flag for whoever runs the APNs side (tell the stand-in to answer 410 for this token).
    ``notnow_repoll_s``: when set, a device whose session ended on NotNow polls again on its own
    after that many seconds (as iOS does once it is unlocked); :class:`~rollout.sim.fleet.SimFleet`
    schedules it.
    """

    mode: Mode = "ok"
    notnow_times: int = 1
    delay_s: float = 0.0
    dead_token: bool = False
    error: ErrorKind = "install_failed"
    notnow_repoll_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {_MODES}")
        if self.notnow_times < 0:
            raise ValueError("notnow_times must be >= 0")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if self.error not in ("install_failed", "not_managed"):
            raise ValueError(f"unknown error kind {self.error!r}")


@dataclass
class DeviceCounters:
    """What one device has done so far (plain counters, read them any time)."""

    enrollments: int = 0
    sessions: int = 0
    requests: int = 0
    commands_seen: int = 0
    installs: int = 0
    removals: int = 0
    notnows: int = 0
    acknowledged: int = 0
    errors: int = 0
    format_errors: int = 0
    http_errors: int = 0
    transport_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class InstalledProfile:
    """A profile on the device: parsed, raw bytes, and whether MDM installed it."""

    profile: Profile
    data: bytes = field(repr=False)
    managed: bool
    installed_at: dt.datetime


@dataclass(frozen=True)
class CommandOutcome:
    """One command the device ran: what it was, the status, and the result body sent back."""

    command_uuid: str | None
    request_type: str | None
    status: Status
    body: bytes = field(repr=False)
    error_codes: tuple[tuple[str, int], ...] = ()


@dataclass
class SessionResult:
    """One connect session: Idle, then command → result until the empty body (or a stop).

    ``ended``: ``empty`` (the server had nothing more: the normal end), ``http_error`` (a
    non-200 answer, in ``http_status``), ``transport_error`` (no answer, ``error`` says why),
    ``cap`` (more than :data:`MAX_COMMANDS_PER_SESSION` commands), ``offline`` (the device did
    not connect at all).
    """

    udid: str
    ended: SessionEnd
    requests: int = 0
    http_status: int | None = None
    error: str | None = None
    outcomes: list[CommandOutcome] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the session ended normally, on the server's empty body."""
        return self.ended == "empty"

    @property
    def last_status(self) -> Status | None:
        """The status of the last command result sent in this session (None if none)."""
        return self.outcomes[-1].status if self.outcomes else None


@dataclass(frozen=True)
class EnrollResult:
    """Authenticate then TokenUpdate: the HTTP status of each (None when not sent)."""

    udid: str
    authenticate_status: int | None
    token_update_status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when both check-ins were answered 200."""
        return self.authenticate_status == 200 and self.token_update_status == 200


# --- helpers --------------------------------------------------------------------------------


def make_udid(rng: random.Random, platform: str = "iOS") -> str:
    """A new-style UDID (``00008xxx-XXXXXXXXXXXXXXXX``: chip id, dash, 16 upper-case hex)."""
    chip = rng.choice(_CHIP_IDS.get(platform, _CHIP_IDS["iOS"]))
    # Real ECIDs have leading zero nibbles; keep 14 random nibbles under a "00" prefix.
    return f"{chip}-00{rng.getrandbits(56):014X}"


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """plistlib writes naive datetimes as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _error_item(domain: str, code: int, text: str) -> dict[str, Any]:
    return {
        "ErrorCode": code,
        "ErrorDomain": domain,
        "LocalizedDescription": text,
        "USEnglishDescription": text,
    }


def _install_refused(cause: str) -> list[dict[str, Any]]:
    return [
        _error_item(PROFILE_DOMAIN, CANNOT_INSTALL, "The profile could not be installed."),
        _error_item(PROFILE_DOMAIN, BAD_PROFILE, cause),
    ]


def _invalid_profile(cause: str) -> list[dict[str, Any]]:
    return [
        _error_item(PROFILE_DOMAIN, BAD_PROFILE, "The profile is invalid."),
        _error_item(PROFILE_DOMAIN, BAD_PROFILE, cause),
    ]


def _behavior_error_chain(kind: ErrorKind) -> list[dict[str, Any]]:
    if kind == "not_managed":
        return [_error_item(MDM_DOMAIN, NOT_MANAGED, "The provisioning profile is not managed.")]
    # A cause a real install can fail on: the device is out of storage (ENOSPC).
    return [
        _error_item(PROFILE_DOMAIN, CANNOT_INSTALL, "The profile could not be installed."),
        _error_item("NSPOSIXErrorDomain", 28, "No space left on device"),
    ]


@functools.lru_cache(maxsize=32)
def _parse_profile_cached(data: bytes, anchors: tuple[x509.Certificate, ...]) -> Profile:
    """parse_profile is pure; a fleet installs the same bytes thousands of times."""
    return parse_profile(data, trust_anchors=anchors)


# --- the device -----------------------------------------------------------------------------


class SimDevice:
    """One simulated device: identifiers, identity, push data, behaviour and installed profiles.

    ``identity`` is either an issued identity certificate or a factory ``udid -> Issued`` called
    on first use (a fleet of 10,000 devices only pays for the identities it uses). One device
    runs one session at a time; :class:`~rollout.sim.fleet.SimFleet` makes sure of that.
    """

    def __init__(
        self,
        udid: str,
        identity: Issued | Callable[[str], Issued],
        *,
        platform: str = "iOS",
        os_version: str = "17.5.1",
        build_version: str | None = "21F90",
        product_name: str | None = None,
        serial: str | None = None,
        push_token: bytes | None = None,
        push_magic: str | None = None,
        topic: str = DEFAULT_TOPIC,
        behavior: DeviceBehavior | None = None,
        trust_anchors: Sequence[x509.Certificate] = (),
        sign_messages: bool = True,
    ) -> None:
        self.udid = udid
        self.platform = platform
        self.os_version = os_version
        self.build_version = build_version
        self.product_name = product_name or _PRODUCTS.get(platform, "iPhone15,2")
        self.serial = serial
        self.push_token = push_token if push_token is not None else secrets.token_bytes(32)
        self.push_magic = push_magic or str(uuid_mod.uuid4()).upper()
        self.topic = topic
        self.behavior = behavior or DeviceBehavior()
        self.trust_anchors = tuple(trust_anchors)
        self.sign_messages = sign_messages
        self.installed: dict[str, InstalledProfile] = {}
        self.counters = DeviceCounters()
        self.enrolled = False
        if isinstance(identity, Issued):
            self._identity: Issued | None = identity
            self._identity_factory: Callable[[str], Issued] | None = None
        else:
            self._identity = None
            self._identity_factory = identity
        self._notnow_by_command: dict[str, int] = {}
        self._idle: tuple[bytes, dict[str, str]] | None = None

    @classmethod
    def generate(
        cls,
        index: int,
        *,
        seed: int = 0,
        ca: Issued | None = None,
        identity: Issued | Callable[[str], Issued] | None = None,
        platform: str = "iOS",
        **kwargs: Any,
    ) -> SimDevice:
        """A device whose UDID, serial, push token and PushMagic follow from ``(seed, index)``.

        Give either ``ca`` (an identity is issued from it on first use) or ``identity``. Other
        keyword arguments go to the constructor.
        """
        rng = random.Random(f"rollout-sim-device:{seed}:{index}")
        udid = make_udid(rng, platform)
        serial = "".join(rng.choice(_SERIAL_ALPHABET) for _ in range(10))
        token = rng.randbytes(32)
        magic = str(uuid_mod.UUID(int=rng.getrandbits(128), version=4)).upper()
        if identity is None:
            if ca is None:
                raise ValueError("give ca or identity")
            identity = functools.partial(issue_device_identity, ca)
        kwargs.setdefault("serial", serial)
        kwargs.setdefault("push_token", token)
        kwargs.setdefault("push_magic", magic)
        return cls(udid, identity, platform=platform, **kwargs)

    def __repr__(self) -> str:
        mode = self.behavior.mode
        return f"SimDevice(udid={self.udid!r}, platform={self.platform!r}, mode={mode!r})"

    # --- identifiers ----------------------------------------------------------------------

    @property
    def identity(self) -> Issued:
        """The identity certificate and key (issued on first use when given a factory)."""
        if self._identity is None:
            assert self._identity_factory is not None
            self._identity = self._identity_factory(self.udid)
        return self._identity

    @property
    def push_token_hex(self) -> str:
        """The APNs device token as lowercase hex."""
        return self.push_token.hex()

    @property
    def is_offline(self) -> bool:
        """True when the device never connects after enrolling."""
        return self.behavior.mode == "offline"

    def inventory_row(self) -> dict[str, str]:
        """This device as a row of ``rollout devices import`` (column names of
        :data:`rollout.inventory.COLUMNS`)."""
        return {
            "udid": self.udid,
            "platform": self.platform,
            "os_version": self.os_version,
            "serial_number": self.serial or "",
            "model": self.product_name,
            "topic": self.topic,
            "push_token": self.push_token_hex,
            "push_magic": self.push_magic,
        }

    # --- request bodies (pure) -------------------------------------------------------------

    @staticmethod
    def _dump(d: Mapping[str, Any]) -> bytes:
        return plistlib.dumps(dict(d), fmt=plistlib.FMT_XML)

    def authenticate_body(self) -> bytes:
        """The ``Authenticate`` check-in."""
        d: dict[str, Any] = {
            "MessageType": "Authenticate",
            "Topic": self.topic,
            "UDID": self.udid,
            "OSVersion": self.os_version,
            "ProductName": self.product_name,
        }
        if self.build_version:
            d["BuildVersion"] = self.build_version
        if self.serial:
            d["SerialNumber"] = self.serial
        if self.platform == "macOS":
            d["DeviceName"] = f"Mac {self.serial or self.udid[-4:]}"
            d["Model"] = self.product_name
        return self._dump(d)

    def token_update_body(self) -> bytes:
        """The ``TokenUpdate`` check-in (``Token`` as data)."""
        return self._dump(
            {
                "MessageType": "TokenUpdate",
                "Topic": self.topic,
                "UDID": self.udid,
                "Token": self.push_token,
                "PushMagic": self.push_magic,
            }
        )

    def checkout_body(self) -> bytes:
        """The ``CheckOut`` check-in."""
        return self._dump({"MessageType": "CheckOut", "Topic": self.topic, "UDID": self.udid})

    def idle_body(self) -> bytes:
        """The first report of a session: ``Status`` Idle."""
        return self._dump({"UDID": self.udid, "Status": Status.IDLE.value})

    def headers(self, body: bytes, content_type: str) -> dict[str, str]:
        """Request headers for ``body``: content type and (unless disabled) ``Mdm-Signature``."""
        headers = {"Content-Type": content_type}
        if self.sign_messages:
            headers[SIGNATURE_HEADER] = sign_body(self.identity, body)
        return headers

    def _idle_request(self) -> tuple[bytes, dict[str, str]]:
        # The Idle body never changes, so neither does its signature.
        if self._idle is None:
            body = self.idle_body()
            self._idle = (body, self.headers(body, CONNECT_CONTENT_TYPE))
        return self._idle

    # --- commands (pure apart from the device's own state) ---------------------------------

    def handle_command(self, command_bytes: bytes, now: dt.datetime | None = None) -> bytes:
        """Run the command in ``command_bytes``; return the result plist to send back."""
        return self.execute(command_bytes, now).body

    def execute(self, command_bytes: bytes, now: dt.datetime | None = None) -> CommandOutcome:
        """Like :meth:`handle_command`, with the status and error codes alongside the body."""
        at = now or dt.datetime.now(dt.UTC)
        self.counters.commands_seen += 1
        try:
            command = parse_command(command_bytes)
        except MDMProtocolError:
            match = _COMMAND_UUID_RE.search(bytes(command_bytes))
            command_uuid = match.group(1).decode("utf-8", "replace") if match else None
            return self._result(command_uuid, None, Status.COMMAND_FORMAT_ERROR)
        cid, kind, keys = command.command_uuid, command.request_type, command.command
        if kind == INSTALL_PROVISIONING_PROFILE:
            return self._install(cid, keys, at)
        if kind == PROVISIONING_PROFILE_LIST:
            return self._list(cid, keys)
        if kind == REMOVE_PROVISIONING_PROFILE:
            return self._remove(cid, keys)
        chain = [_error_item(MDM_DOMAIN, INVALID_REQUEST_TYPE, "Invalid request type.")]
        return self._result(cid, kind, Status.COMMAND_FORMAT_ERROR, chain)

    def _result(
        self,
        command_uuid: str | None,
        request_type: str | None,
        status: Status,
        error_chain: list[dict[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CommandOutcome:
        d: dict[str, Any] = {"UDID": self.udid, "Status": status.value}
        if command_uuid is not None:
            d["CommandUUID"] = command_uuid
        if error_chain:
            d["ErrorChain"] = error_chain
        if extra:
            d.update(extra)
        counters = self.counters
        if status is Status.ACKNOWLEDGED:
            counters.acknowledged += 1
        elif status is Status.ERROR:
            counters.errors += 1
        elif status is Status.COMMAND_FORMAT_ERROR:
            counters.format_errors += 1
        elif status is Status.NOT_NOW:
            counters.notnows += 1
        codes = tuple((e["ErrorDomain"], e["ErrorCode"]) for e in error_chain or ())
        return CommandOutcome(command_uuid, request_type, status, self._dump(d), codes)

    def _install(self, cid: str, keys: Mapping[str, Any], at: dt.datetime) -> CommandOutcome:
        kind = INSTALL_PROVISIONING_PROFILE
        data = keys.get("ProvisioningProfile")
        if not isinstance(data, bytes) or not data:
            return self._result(cid, kind, Status.COMMAND_FORMAT_ERROR)
        mode = self.behavior.mode
        if mode == "format_error":
            return self._result(cid, kind, Status.COMMAND_FORMAT_ERROR)
        if mode == "error":
            return self._result(cid, kind, Status.ERROR, _behavior_error_chain(self.behavior.error))
        if mode == "notnow_then_ok":
            seen = self._notnow_by_command.get(cid, 0)
            if seen < self.behavior.notnow_times:
                self._notnow_by_command[cid] = seen + 1
                return self._result(cid, kind, Status.NOT_NOW)
        try:
            profile = _parse_profile_cached(data, self.trust_anchors)
        except ProfileError as exc:
            return self._result(cid, kind, Status.ERROR, _invalid_profile(str(exc)))
        chain = self._refusal(profile, at)
        if chain is not None:
            return self._result(cid, kind, Status.ERROR, chain)
        self.installed[profile.uuid.upper()] = InstalledProfile(
            profile=profile, data=data, managed=True, installed_at=at
        )
        self.counters.installs += 1
        return self._result(cid, kind, Status.ACKNOWLEDGED)

    def _refusal(self, profile: Profile, at: dt.datetime) -> list[dict[str, Any]] | None:
        """The ErrorChain refusing ``profile`` on this device, or None when it is fit."""
        verdict = profile.signature
        if not verdict.valid:
            return _invalid_profile("The profile's signature is not valid.")
        if self.trust_anchors and not verdict.chain_trusted:
            return _invalid_profile("The profile is not signed by a trusted authority.")
        if profile.is_expired(at):
            return _install_refused("The profile has expired.")
        if not profile.allows_device(self.udid):
            return _install_refused("This device is not included in the profile.")
        if not self.accepts_platforms(profile.platforms):
            return _install_refused("The profile is not valid for this platform.")
        return None

    def accepts_platforms(self, platforms: Sequence[str]) -> bool:
        """Whether a profile for ``platforms`` can go on this device (empty: no restriction)."""
        if not platforms:
            return True
        wanted = _ACCEPTED_PLATFORMS.get(self.platform, frozenset({self.platform}))
        return any(p in wanted for p in platforms)

    def _list(self, cid: str, keys: Mapping[str, Any]) -> CommandOutcome:
        # ManagedOnly is read loosely: anything but a true boolean means "all".
        managed_only = keys.get("ManagedOnly") is True
        items = [
            {
                "UUID": entry.profile.uuid,
                "Name": entry.profile.name,
                "ExpiryDate": _naive_utc(entry.profile.expires_at),
            }
            for entry in self.installed.values()
            if entry.managed or not managed_only
        ]
        return self._result(
            cid,
            PROVISIONING_PROFILE_LIST,
            Status.ACKNOWLEDGED,
            extra={"ProvisioningProfileList": items},
        )

    def _remove(self, cid: str, keys: Mapping[str, Any]) -> CommandOutcome:
        kind = REMOVE_PROVISIONING_PROFILE
        wanted = keys.get("UUID")
        if not isinstance(wanted, str) or not wanted:
            return self._result(cid, kind, Status.COMMAND_FORMAT_ERROR)
        entry = self.installed.get(wanted.upper())
        if entry is None:
            chain = [
                _error_item(
                    PROFILE_DOMAIN, CANNOT_REMOVE, "The provisioning profile could not be removed."
                ),
                _error_item(PROFILE_DOMAIN, BAD_PROFILE, f"No profile with UUID {wanted}."),
            ]
            return self._result(cid, kind, Status.ERROR, chain)
        if not entry.managed:
            chain = [
                _error_item(MDM_DOMAIN, NOT_MANAGED, "The provisioning profile is not managed.")
            ]
            return self._result(cid, kind, Status.ERROR, chain)
        del self.installed[wanted.upper()]
        self.counters.removals += 1
        return self._result(cid, kind, Status.ACKNOWLEDGED)

    def preinstall(
        self, data: bytes, *, managed: bool = False, now: dt.datetime | None = None
    ) -> Profile:
        """Put a profile on the device outside MDM (by hand or Xcode): unmanaged by default."""
        profile = _parse_profile_cached(bytes(data), self.trust_anchors)
        self.installed[profile.uuid.upper()] = InstalledProfile(
            profile=profile,
            data=bytes(data),
            managed=managed,
            installed_at=now or dt.datetime.now(dt.UTC),
        )
        return profile

    # --- I/O drivers -----------------------------------------------------------------------

    async def _put(
        self, transport: Transport, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        self.counters.requests += 1
        return await transport.put(path, body, headers)

    async def _checkin(self, transport: Transport, path: str, body: bytes) -> int:
        status, _ = await self._put(transport, path, body, self.headers(body, CHECKIN_CONTENT_TYPE))
        if status != 200:
            self.counters.http_errors += 1
        return status

    async def enroll(self, transport: Transport, *, path: str = CHECKIN_PATH) -> EnrollResult:
        """Authenticate, then (if answered 200) TokenUpdate. Never raises for I/O failures."""
        auth: int | None = None
        token: int | None = None
        try:
            auth = await self._checkin(transport, path, self.authenticate_body())
            if auth == 200:
                token = await self._checkin(transport, path, self.token_update_body())
        except (TransportError, OSError, TimeoutError) as exc:
            self.counters.transport_errors += 1
            return EnrollResult(self.udid, auth, token, f"{type(exc).__name__}: {exc}")
        result = EnrollResult(self.udid, auth, token)
        if result.ok:
            self.enrolled = True
            self.counters.enrollments += 1
        return result

    async def check_out(self, transport: Transport, *, path: str = CHECKIN_PATH) -> int:
        """Send ``CheckOut`` (the MDM profile was removed); return the HTTP status."""
        self.enrolled = False
        return await self._checkin(transport, path, self.checkout_body())

    async def run_session(
        self,
        transport: Transport,
        *,
        path: str = CONNECT_PATH,
        max_commands: int = MAX_COMMANDS_PER_SESSION,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> SessionResult:
        """One connect session: Idle, then run each command and report, until the empty body.

        Stops on a non-200 answer (recorded in ``http_status``), on a transport failure, or
        after ``max_commands`` commands. An ``offline`` device does not connect. Never raises
        for I/O failures.
        """
        if self.is_offline:
            return SessionResult(self.udid, "offline")
        started = time.perf_counter()
        self.counters.sessions += 1
        result = SessionResult(self.udid, "empty")
        body, headers = self._idle_request()
        delay = self.behavior.delay_s
        try:
            while True:
                status, reply = await self._put(transport, path, body, headers)
                result.requests += 1
                if status != 200:
                    self.counters.http_errors += 1
                    result.ended, result.http_status = "http_error", status
                    break
                if not reply:
                    break
                if len(result.outcomes) >= max_commands:
                    result.ended = "cap"
                    break
                if delay:
                    await asyncio.sleep(delay)
                outcome = self.execute(reply, clock() if clock else None)
                result.outcomes.append(outcome)
                body = outcome.body
                headers = self.headers(body, CONNECT_CONTENT_TYPE)
        except (TransportError, OSError, TimeoutError) as exc:
            self.counters.transport_errors += 1
            result.ended, result.error = "transport_error", f"{type(exc).__name__}: {exc}"
        result.elapsed_s = time.perf_counter() - started
        return result
