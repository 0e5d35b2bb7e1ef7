"""Reading a device inventory file (CSV or JSON lines) into validated device records.

Pure parsing: no database. ``rollout devices import`` feeds the records to the ledger. Each bad
row is reported with its line number and reason; good rows come back as :class:`DeviceRecord`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout.identifiers import is_udid, normalize_udid

PLATFORMS = {
    "ios": "iOS",
    "ipados": "iPadOS",
    "macos": "macOS",
    "tvos": "tvOS",
    "watchos": "watchOS",
    "visionos": "visionOS",
}

COLUMNS = (
    "udid",
    "enrollment_id",
    "platform",
    "os_version",
    "serial_number",
    "model",
    "device_name",
    "topic",
    "push_token",
    "push_magic",
    "access_rights",
    "tags",
    "profiles",
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_WHOLE = re.compile(r"[+-]?[0-9]+")
_TAG = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")
# C0/C1 controls (NUL cannot be stored in PostgreSQL text) and lone surrogates (which JSON's
# \ud800 escapes can produce and no database driver can encode): one such value would fail the
# whole import's statement, so the row is refused here instead
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_ACCESS_RIGHTS = 8191  # every bit Apple defines for AccessRights

FIELD_LIMITS: dict[str, int] = {
    "udid": 64,
    "enrollment_id": 128,
    "platform": 16,
    "os_version": 32,
    "serial_number": 64,
    "model": 64,
    "device_name": 255,
    "topic": 255,
    "push_token": 200,
    "push_magic": 128,
}
"""Longest accepted value of each text column, in characters (the ledger's column sizes)."""
MAX_TAGS = 64
"""Tags per device."""
MAX_PROFILES = 256
"""Installed-profile facts per device."""
MAX_PROFILE_NAME = 255
"""Longest installed-profile name (the ledger's column size)."""
MAX_JSON_LINE = 1024 * 1024
"""Longest JSON line, in characters; far above any valid row, it bounds the work per line."""
_MAX_DIGITS = 20
"""Longest JSON integer: no field needs more, and Python's int() is quadratic in the digits."""


@dataclass(frozen=True, slots=True)
class InstalledProfileFact:
    """A profile the inventory says a device holds."""

    uuid: str
    name: str | None = None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One valid inventory row. Fields left None are not changed on an existing device."""

    line: int
    enrollment_id: str
    udid: str | None
    enrollment_type: str
    platform: str | None = None
    os_version: str | None = None
    serial_number: str | None = None
    model: str | None = None
    device_name: str | None = None
    topic: str | None = None
    push_token: str | None = None
    push_magic: str | None = None
    access_rights: int | None = None
    tags: tuple[str, ...] | None = None
    profiles: tuple[InstalledProfileFact, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that was refused, with the reason."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class InventoryReport:
    """What a file held: the good records and the refused rows."""

    records: tuple[DeviceRecord, ...]
    errors: tuple[RowError, ...]


class InventoryFormatError(ValueError):
    """The file as a whole cannot be read (unknown format, bad header, not UTF-8)."""


def read_inventory(data: bytes, *, fmt: str | None = None, name: str = "") -> InventoryReport:
    """Parse an inventory file; ``fmt`` is ``csv`` or ``jsonl`` (guessed from name or content).

    Never raises anything but :class:`InventoryFormatError` (for the file as a whole); every
    problem with one row is a :class:`RowError` with its line number. UDIDs come out in their
    canonical upper-case form, and a device given twice (in any case) is refused on its second
    line, naming the first.
    """
    if fmt not in (None, "csv", "jsonl"):
        raise InventoryFormatError(f"unknown format {_shown(fmt)}: use csv or jsonl")
    text = _decode(data)
    fmt = fmt or _guess_format(text, name)
    rows = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    records: list[DeviceRecord] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, raw in rows:
        if isinstance(raw, str):
            errors.append(RowError(line, raw))
            continue
        try:
            record = _record(line, raw)
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        first = seen.get(record.enrollment_id)
        if first is not None:
            errors.append(RowError(line, f"{record.enrollment_id} already given on line {first}"))
            continue
        seen[record.enrollment_id] = line
        records.append(record)
    return InventoryReport(tuple(records), tuple(errors))


def _shown(value: object, width: int = 40) -> str:
    """``repr(value)``, cut short: a message quotes a bad value, never a whole megabyte of it."""
    if isinstance(value, str) and len(value) > width:
        return repr(value[:width]) + f"... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _names(names: list[str]) -> str:
    """Unknown column or key names for a message: a few, quoted only when they look odd."""
    # three at most: with the known names after them, a message stays one short line
    shown = ", ".join(n if n.isidentifier() and len(n) <= 40 else _shown(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InventoryFormatError(
            f"not UTF-8 text: line {line}, column {column} (byte offset {exc.start}, "
            f"0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _guess_format(text: str, name: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    first = text.lstrip()[:1]
    if first == "{":
        return "jsonl"
    if first:
        return "csv"
    raise InventoryFormatError("the file is empty")


def _csv_problem(exc: csv.Error) -> str:
    message = str(exc)
    if "field larger than field limit" in message:
        return f"a field is longer than {csv.field_size_limit()} characters"
    return f"not valid CSV ({message})"


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # newline="" hands the csv module every line ending as written (\r\n, \n, or a lone \r)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    while True:
        # a record may span lines (a quoted newline): report it at the line it starts on
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # the reader starts afresh on the next line, so one bad row does not end the file
            if header is None:
                raise InventoryFormatError(f"line {line}: {_csv_problem(exc)}") from None
            yield line, _csv_problem(exc)
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise InventoryFormatError(
                    f"line {line}: unknown column(s) {_names(unknown)}; known: {', '.join(COLUMNS)}"
                )
            if "udid" not in header and "enrollment_id" not in header:
                raise InventoryFormatError(f"line {line}: the header needs udid or enrollment_id")
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:
                raise InventoryFormatError(
                    f"line {line}: column(s) {', '.join(repeated)} given more than once"
                )
            continue
        if len(row) != len(header):
            yield line, f"{len(row)} fields, the header has {len(header)}"
            continue
        values: dict[str, Any] = {}
        for key, value in zip(header, row, strict=True):
            value = value.strip()
            if value == "":
                continue
            if key in ("tags", "profiles"):
                values[key] = [v.strip() for v in value.split(";") if v.strip()]
            else:
                values[key] = value
        yield line, values
    if header is None:
        raise InventoryFormatError("the file is empty")


def _json_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        raise ValueError(
            f"a number with {len(digits)} digits; no field takes more than {_MAX_DIGITS}"
        )
    return int(digits)


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # split on \n alone: str.splitlines() also breaks at \x1c, \x85, U+2028..., which JSON
    # strings may hold raw, and would make the line numbers disagree with every editor
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_JSON_LINE:
            yield number, f"line is longer than {MAX_JSON_LINE} characters"
            continue
        try:
            value = json.loads(line, parse_int=_json_int, parse_constant=_json_constant)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        except RecursionError:
            yield number, "JSON nested too deeply to read"
            continue
        except ValueError as exc:  # from the number hooks above
            yield number, str(exc)
            continue
        if not isinstance(value, dict):
            yield number, f"expected a JSON object, got {type(value).__name__}"
            continue
        unknown = sorted(k for k in value if k not in COLUMNS)
        if unknown:
            yield number, f"unknown key(s) {_names(unknown)}"
            continue
        yield number, {k: v for k, v in value.items() if v is not None and v != ""}


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} must be text, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be text, got {value}")
    text = str(value).strip()
    limit = FIELD_LIMITS[key]
    if len(text) > limit:
        raise ValueError(f"{key} is longer than {limit} characters")
    if _UNSTORABLE.search(text):
        raise ValueError(f"{key} {_shown(text)} holds a control character")
    return text or None


def _record(line: int, raw: dict[str, Any]) -> DeviceRecord:
    udid = _text(raw, "udid")
    enrollment_id = _text(raw, "enrollment_id")
    if udid is None and enrollment_id is None:
        raise ValueError("needs udid (device enrollment) or enrollment_id (User Enrollment)")
    if udid is not None:
        if not is_udid(udid):
            raise ValueError(f"udid {_shown(udid)} is not a UDID")
        # one device, one key: a UDID in lower case from one tool is the same device as the
        # upper-case one from another
        udid = normalize_udid(udid)
    if enrollment_id is not None and any(c.isspace() for c in enrollment_id):
        raise ValueError("enrollment_id must not contain spaces")
    if udid is not None and enrollment_id is not None and udid != normalize_udid(enrollment_id):
        raise ValueError("give udid or enrollment_id, not both")
    # an EnrollmentID is opaque and kept as given; a UDID is the key in its canonical form
    key = udid or enrollment_id
    assert key is not None

    platform = _text(raw, "platform")
    if platform is not None:
        canonical = PLATFORMS.get(platform.lower())
        if canonical is None:
            raise ValueError(
                f"platform {_shown(platform)} is not one of {', '.join(PLATFORMS.values())}"
            )
        platform = canonical

    topic = _text(raw, "topic")
    if topic is not None and not topic.startswith("com.apple.mgmt."):
        raise ValueError(f"topic {_shown(topic)} does not start with com.apple.mgmt.")

    token = _text(raw, "push_token")
    if token is not None:
        if not _HEX.fullmatch(token) or len(token) < 32:
            raise ValueError("push_token must be hex (at least 16 bytes)")
        token = token.lower()
    magic = _text(raw, "push_magic")
    if token is not None and magic is None:
        raise ValueError("push_token given without push_magic")

    return DeviceRecord(
        line=line,
        enrollment_id=key,
        udid=udid,
        enrollment_type="device" if udid is not None else "user",
        platform=platform,
        os_version=_text(raw, "os_version"),
        serial_number=_text(raw, "serial_number"),
        model=_text(raw, "model"),
        device_name=_text(raw, "device_name"),
        topic=topic,
        push_token=token,
        push_magic=magic,
        access_rights=_access_rights(raw.get("access_rights")),
        tags=_tags(raw.get("tags")),
        profiles=_profiles(raw.get("profiles")),
    )


def _access_rights(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only (int() also takes "1_0" and other scripts' digits), and no more of
        # them than a range check needs (int() of a long string is slow, then refused)
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"access_rights {_shown(value)} is not a whole number")
        if len(text) > _MAX_DIGITS:
            raise ValueError(f"access_rights {_shown(value)} is outside 0..{MAX_ACCESS_RIGHTS}")
        rights = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        rights = value
    else:
        raise ValueError(f"access_rights {_shown(value)} is not a whole number")
    if not 0 <= rights <= MAX_ACCESS_RIGHTS:
        raise ValueError(f"access_rights {_shown(rights)} is outside 0..{MAX_ACCESS_RIGHTS}")
    return rights


def _tags(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ValueError("tags must be a list")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag.strip()):
            raise ValueError(f"tag {_shown(tag)} is not a short word (letters, digits, _.:/@+-)")
        if tag.strip() not in tags:
            tags.append(tag.strip())
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{len(tags)} tags, more than {MAX_TAGS}")
    return tuple(tags)


def _profiles(value: Any) -> tuple[InstalledProfileFact, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ValueError("profiles must be a list")
    if len(value) > MAX_PROFILES:
        raise ValueError(f"{len(value)} profiles, more than {MAX_PROFILES}")
    facts: dict[str, InstalledProfileFact] = {}
    for item in value:
        fact = _profile(item)
        if fact.uuid in facts:
            raise ValueError(f"profile {fact.uuid} is listed twice")
        facts[fact.uuid] = fact
    return tuple(facts.values())


def _profile(item: Any) -> InstalledProfileFact:
    if isinstance(item, str):
        item = {"uuid": item}
    if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
        raise ValueError(f"profiles item {_shown(item)} needs a uuid")
    uuid = item["uuid"].strip()
    if not _UUID.fullmatch(uuid):
        raise ValueError(f"profile {_shown(uuid)} is not a UUID")
    uuid = uuid.lower()
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"profile {uuid} name must be text, got {type(name).__name__}")
    if name is not None:
        name = name.strip()
        if len(name) > MAX_PROFILE_NAME:
            raise ValueError(f"profile {uuid} name is longer than {MAX_PROFILE_NAME} characters")
        if _UNSTORABLE.search(name):
            raise ValueError(f"profile {uuid} name {_shown(name)} holds a control character")
    return InstalledProfileFact(
        uuid=uuid, name=name or None, expires_at=_expiry(uuid, item.get("expires_at"))
    )


def _expiry(uuid: str, value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"profile {uuid} expires_at must be text, got {type(value).__name__}")
    try:
        expires_at = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"profile {uuid} expires_at {_shown(value)} is not ISO 8601") from None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    return expires_at
