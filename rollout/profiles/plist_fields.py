"""The signed content: XML plist bytes → checked, typed profile fields.

Required keys (present in every real profile seen, and needed by rollout): ``UUID``, ``Name``,
``CreationDate``, ``ExpirationDate``, ``TeamIdentifier`` (non-empty array of strings) and
``Entitlements`` (a dict holding ``application-identifier``, or ``com.apple.application-identifier``
on macOS). Every other key used is optional but, when present, must have the documented type.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import plistlib
import re
import warnings
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from rollout.profiles.errors import (
    BadDataError,
    BinaryPlistError,
    ContentNotPlistError,
    InvalidDatesError,
    InvalidUUIDError,
    MissingKeyError,
    WrongTypeError,
)
from rollout.profiles.model import DeveloperCertificate
from rollout.profiles.reasons import plain_reason

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_T = TypeVar("_T")

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    bytes: "data",
    dict: "a dict",
    list: "an array",
    dt.datetime: "a date",
}


@dataclass(frozen=True, slots=True)
class Fields:
    """Typed values read from the plist, before kind and signature are decided."""

    uuid: str
    name: str
    app_id_name: str
    app_id: str
    app_id_prefix: str | None
    bundle_id: str
    team_id: str
    team_name: str
    platforms: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    provisions_all_devices: bool
    has_device_list: bool
    provisioned_devices: tuple[str, ...]
    get_task_allow: bool
    developer_certificates: tuple[DeveloperCertificate, ...]


def _describe(value: object) -> str:
    for kind, label in _TYPE_NAMES.items():
        if type(value) is kind:
            return label
    return type(value).__name__


def _locate_bad_data(content: bytes) -> str:
    """Walk the XML to name the first ``<data>`` element whose base64 does not decode."""
    path: list[str | int] = []
    stack: list[list[Any]] = []  # [container kind, pending key or next index]
    found: list[str] = []
    text: list[str] = []

    def where() -> str:
        out = ""
        for part in path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                name = part if part.isprintable() else part.encode("unicode_escape").decode()
                out += f".{name[:60]}" if out else name[:60]
        return out or "<root>"

    def enter_value() -> None:
        if stack and stack[-1][0] == "array":
            path.append(stack[-1][1])
            stack[-1][1] += 1
        elif stack and stack[-1][0] == "dict":
            path.append(stack[-1][1] or "?")

    def leave_value() -> None:
        if stack and path:
            path.pop()

    def start(tag: str, _attrs: dict[str, str]) -> None:
        text.clear()
        if tag in ("plist", "key"):
            return
        enter_value()
        if tag in ("dict", "array"):
            stack.append([tag, None if tag == "dict" else 0])

    def end(tag: str) -> None:
        if tag == "key":
            if stack and stack[-1][0] == "dict":
                stack[-1][1] = "".join(text)
            return
        if tag in ("dict", "array"):
            stack.pop()
        elif tag == "data" and not found:
            try:
                binascii.a2b_base64("".join(text).encode("utf-8"))  # as plistlib decodes it
            except (binascii.Error, ValueError):
                found.append(where())
        if tag != "plist":
            leave_value()

    def entity(*_args: object) -> None:
        raise ValueError("entity declarations are not allowed")

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.EntityDeclHandler = entity
    # best effort: this only names the key for a message, it must never fail itself
    with contextlib.suppress(Exception):
        parser.Parse(content, True)
    return found[0] if found else "a <data> element"


def _plist_problem(exc: Exception) -> str:
    """What plistlib tripped over, in words (its own messages name Python internals)."""
    message = str(exc).strip()
    if isinstance(exc, AttributeError):
        # plistlib matches <date> text with a regex and calls .groupdict() on no match
        return "a <date> is not an ISO 8601 date"
    if isinstance(exc, TypeError) and "required argument" in message:
        # a <date> holding only a year reaches datetime() without a month
        return "a <date> is not a complete date"
    if isinstance(exc, IndexError):
        # plistlib looks for the enclosing <dict> of a <key> on an empty stack
        return "an element stands where a property list does not allow it"
    if isinstance(exc, ValueError) and re.search(r"must be in|out of range", message):
        return f"a <date> is not a valid date ({message.splitlines()[0]})"
    if "integer string conversion" in message:
        return "an <integer> has too many digits"
    if message.startswith("invalid literal for int()"):
        return "an <integer> is not a whole number"
    if message.startswith("could not convert string to float"):
        return "a <real> is not a number"
    # expat's and plistlib's own messages are plain ("mismatched tag: line 3, column 7")
    return plain_reason(exc)


def read_plist(content: bytes) -> dict[str, Any]:
    """Decode the signed content as an XML property list whose top level is a dict."""
    if content.startswith(b"bplist"):
        raise BinaryPlistError(
            "signed content is a binary property list; Apple profiles carry an XML plist"
        )
    if not content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise ContentNotPlistError("signed content is not an XML property list")
    try:
        value = plistlib.loads(content, fmt=plistlib.FMT_XML)
    except binascii.Error as exc:
        key = _locate_bad_data(content)
        raise BadDataError(key, f"{key}: <data> is not valid base64") from exc
    except Exception as exc:  # expat, plistlib and int/date conversions raise many types
        raise ContentNotPlistError(
            f"signed content is not a valid XML property list ({_plist_problem(exc)})"
        ) from exc
    if not isinstance(value, dict):
        raise ContentNotPlistError(
            f"signed content plist top level is {_describe(value)}, expected a dict"
        )
    return value


def _get(
    plist: dict[str, Any], key: str, kind: type[_T], *, prefix: str = "", required: bool = False
) -> _T | None:
    full = f"{prefix}{key}"
    if key not in plist:
        if required:
            raise MissingKeyError(full, f"required key {full} is missing")
        return None
    value = plist[key]
    # bool is an int subclass: keep them apart so <true/> is not accepted as an integer
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WrongTypeError(full, f"{full} must be {_TYPE_NAMES[kind]}, got {_describe(value)}")
    return value


def _string_list(
    plist: dict[str, Any], key: str, *, required: bool = False, non_empty: bool = False
) -> tuple[str, ...] | None:
    items = _get(plist, key, list, required=required)
    if items is None:
        return None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise WrongTypeError(key, f"{key}[{index}] must be a string, got {_describe(item)}")
    if non_empty and not items:
        raise WrongTypeError(key, f"{key} must not be empty")
    return tuple(items)


def _utc(value: dt.datetime) -> dt.datetime:
    # plistlib returns naive datetimes that denote UTC (the XML form ends in Z)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _developer_certificate(index: int, der: object) -> DeveloperCertificate:
    key = f"DeveloperCertificates[{index}]"
    if not isinstance(der, bytes):
        raise WrongTypeError("DeveloperCertificates", f"{key} must be data, got {_describe(der)}")
    with warnings.catch_warnings():
        # real Apple certificates carry common names longer than X.520's 64 characters, and
        # cryptography warns on stderr about a serial that is not positive (refused below)
        warnings.simplefilter("ignore", UserWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion) as exc:
            raise BadDataError(key, f"{key} is not a DER X.509 certificate") from exc
        try:
            names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            subject = cert.subject.rfc4514_string()
            not_after = cert.not_valid_after_utc
            serial = cert.serial_number
        except (ValueError, TypeError) as exc:
            raise BadDataError(key, f"{key} has an unreadable subject or validity") from exc
    if serial <= 0:
        raise BadDataError(key, f"{key} has a serial number that is not positive")
    common_name = None
    if names:
        raw = names[0].value
        common_name = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    digest = cert.fingerprint(hashes.SHA256()).hex()
    return DeveloperCertificate(
        subject=subject,
        common_name=common_name,
        serial=format(serial, "x"),
        not_after=not_after,
        sha256=digest,
    )


def _app_id(entitlements: dict[str, Any]) -> str:
    for key in ("application-identifier", "com.apple.application-identifier"):
        if key in entitlements:
            value = _get(entitlements, key, str, prefix="Entitlements.")
            assert value is not None
            if not value:
                raise WrongTypeError(f"Entitlements.{key}", f"Entitlements.{key} is empty")
            return value
    raise MissingKeyError(
        "Entitlements.application-identifier",
        "required key Entitlements.application-identifier "
        "(or com.apple.application-identifier) is missing",
    )


def _get_task_allow(entitlements: dict[str, Any]) -> bool:
    # iOS profiles use get-task-allow; some macOS tools write com.apple.security.get-task-allow
    for key in ("get-task-allow", "com.apple.security.get-task-allow"):
        value = _get(entitlements, key, bool, prefix="Entitlements.")
        if value is not None:
            return value
    return False


def _bundle_id(app_id: str, prefix: str | None) -> str:
    """``app_id`` without its prefix; without a known prefix, drop the first dotted component."""
    if prefix and app_id.startswith(prefix + "."):
        return app_id[len(prefix) + 1 :]
    _head, dot, tail = app_id.partition(".")
    return tail if dot else app_id


def extract_fields(plist: dict[str, Any]) -> Fields:
    """Check types and required keys; raise a FieldError naming the key on the first problem."""
    raw_uuid = _get(plist, "UUID", str, required=True)
    assert raw_uuid is not None
    if not _UUID_RE.match(raw_uuid):
        raise InvalidUUIDError("UUID", f"UUID {raw_uuid[:60]!r} is not a UUID")
    name = _get(plist, "Name", str, required=True)
    created = _get(plist, "CreationDate", dt.datetime, required=True)
    expires = _get(plist, "ExpirationDate", dt.datetime, required=True)
    teams = _string_list(plist, "TeamIdentifier", required=True, non_empty=True)
    entitlements = _get(plist, "Entitlements", dict, required=True)
    assert name is not None and created is not None and expires is not None
    assert teams is not None and entitlements is not None
    created_at, expires_at = _utc(created), _utc(expires)
    if expires_at < created_at:
        raise InvalidDatesError(
            "ExpirationDate",
            f"ExpirationDate {expires_at:%Y-%m-%dT%H:%M:%SZ} is before "
            f"CreationDate {created_at:%Y-%m-%dT%H:%M:%SZ}",
        )
    prefixes = _string_list(plist, "ApplicationIdentifierPrefix") or ()
    app_id = _app_id(entitlements)
    devices = _string_list(plist, "ProvisionedDevices")
    certs = _get(plist, "DeveloperCertificates", list) or []
    for key in ("DER-Encoded-Profile",):
        _get(plist, key, bytes)
    for key in ("TimeToLive", "Version"):
        _get(plist, key, int)
    _get(plist, "IsXcodeManaged", bool)
    prefix = prefixes[0] if prefixes else None
    return Fields(
        uuid=raw_uuid.lower(),
        name=name,
        app_id_name=_get(plist, "AppIDName", str) or "",
        app_id=app_id,
        app_id_prefix=prefix,
        bundle_id=_bundle_id(app_id, prefix),
        team_id=teams[0],
        team_name=_get(plist, "TeamName", str) or "",
        platforms=_string_list(plist, "Platform") or (),
        created_at=created_at,
        expires_at=expires_at,
        provisions_all_devices=bool(_get(plist, "ProvisionsAllDevices", bool)),
        has_device_list=devices is not None,
        provisioned_devices=devices or (),
        get_task_allow=_get_task_allow(entitlements),
        developer_certificates=tuple(_developer_certificate(i, der) for i, der in enumerate(certs)),
    )
