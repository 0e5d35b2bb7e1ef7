"""Reading a device inventory file (CSV or JSON lines) into validated device records.

Pure parsing: no database. ``rollout devices import`` feeds the records to the ledger. Each bad
row is reported with its line number and reason; good rows come back as :class:`DeviceRecord`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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

_UDID = re.compile(
    r"^(?:[0-9A-Fa-f]{40}"  # before iPhone XS: 40 hex digits
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{16}"  # since 2018: 8-16 hex digits
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"  # Macs
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_TAG = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,64}$")
MAX_ACCESS_RIGHTS = 8191  # every bit Apple defines for AccessRights


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
    """Parse an inventory file; ``fmt`` is ``csv`` or ``jsonl`` (guessed from name or content)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InventoryFormatError(f"not UTF-8 text (byte {exc.start})") from exc
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


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise InventoryFormatError(
                    f"line {line}: unknown column(s) {', '.join(unknown)}; "
                    f"known: {', '.join(COLUMNS)}"
                )
            if "udid" not in header and "enrollment_id" not in header:
                raise InventoryFormatError(f"line {line}: the header needs udid or enrollment_id")
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


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield number, f"expected a JSON object, got {type(value).__name__}"
            continue
        unknown = sorted(k for k in value if k not in COLUMNS)
        if unknown:
            yield number, f"unknown key(s) {', '.join(unknown)}"
            continue
        yield number, {k: v for k, v in value.items() if v is not None and v != ""}


def _text(raw: dict[str, Any], key: str, limit: int) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} must be text, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > limit:
        raise ValueError(f"{key} is longer than {limit} characters")
    return text or None


def _record(line: int, raw: dict[str, Any]) -> DeviceRecord:
    udid = _text(raw, "udid", 64)
    enrollment_id = _text(raw, "enrollment_id", 128)
    if udid is None and enrollment_id is None:
        raise ValueError("needs udid (device enrollment) or enrollment_id (User Enrollment)")
    if udid is not None and not _UDID.match(udid):
        raise ValueError(f"udid {udid!r} is not a UDID")
    if enrollment_id is not None and any(c.isspace() for c in enrollment_id):
        raise ValueError("enrollment_id must not contain spaces")
    if udid is not None and enrollment_id is not None and udid != enrollment_id:
        raise ValueError("give udid or enrollment_id, not both")
    key = udid or enrollment_id
    assert key is not None

    platform = _text(raw, "platform", 16)
    if platform is not None:
        canonical = PLATFORMS.get(platform.lower())
        if canonical is None:
            raise ValueError(f"platform {platform!r} is not one of {', '.join(PLATFORMS.values())}")
        platform = canonical

    topic = _text(raw, "topic", 255)
    if topic is not None and not topic.startswith("com.apple.mgmt."):
        raise ValueError(f"topic {topic!r} does not start with com.apple.mgmt.")

    token = _text(raw, "push_token", 200)
    if token is not None:
        if not _HEX.match(token) or len(token) < 32:
            raise ValueError("push_token must be hex (at least 16 bytes)")
        token = token.lower()
    magic = _text(raw, "push_magic", 128)
    if token is not None and magic is None:
        raise ValueError("push_token given without push_magic")

    rights_raw = raw.get("access_rights")
    rights: int | None = None
    if rights_raw is not None:
        try:
            if isinstance(rights_raw, bool | float):
                raise ValueError
            rights = int(rights_raw)
        except ValueError:
            raise ValueError(f"access_rights {rights_raw!r} is not a whole number") from None
        if not 0 <= rights <= MAX_ACCESS_RIGHTS:
            raise ValueError(f"access_rights {rights} is outside 0..{MAX_ACCESS_RIGHTS}")

    tags = _tags(raw.get("tags"))
    profiles = tuple(_profiles(raw.get("profiles")))
    return DeviceRecord(
        line=line,
        enrollment_id=key,
        udid=udid,
        enrollment_type="device" if udid is not None else "user",
        platform=platform,
        os_version=_text(raw, "os_version", 32),
        serial_number=_text(raw, "serial_number", 64),
        model=_text(raw, "model", 64),
        device_name=_text(raw, "device_name", 255),
        topic=topic,
        push_token=token,
        push_magic=magic,
        access_rights=rights,
        tags=tags,
        profiles=profiles,
    )


def _tags(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ValueError("tags must be a list")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not _TAG.match(tag.strip()):
            raise ValueError(f"tag {tag!r} is not a short word (letters, digits, _.:/@+-)")
        if tag.strip() not in tags:
            tags.append(tag.strip())
    return tuple(tags)


def _profiles(value: Any) -> Iterable[InstalledProfileFact]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ValueError("profiles must be a list")
    facts = []
    for item in value:
        if isinstance(item, str):
            item = {"uuid": item}
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
            raise ValueError(f"profiles item {item!r} needs a uuid")
        uuid = item["uuid"].strip()
        if not _UUID.match(uuid):
            raise ValueError(f"profile {uuid!r} is not a UUID")
        expires = item.get("expires_at")
        expires_at = None
        if expires is not None:
            try:
                expires_at = dt.datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"profile {uuid} expires_at {expires!r} is not ISO 8601") from None
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=dt.UTC)
        name = item.get("name")
        facts.append(
            InstalledProfileFact(
                uuid=uuid.lower(), name=str(name) if name else None, expires_at=expires_at
            )
        )
    return facts
