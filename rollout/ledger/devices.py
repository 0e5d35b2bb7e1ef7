"""The device registry: inventory imports and reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.inventory import COLUMNS, DeviceRecord
from rollout.ledger.events import record_event
from rollout.ledger.models import DeviceRow, InstalledProfileRow
from rollout.ledger.types import utcnow
from rollout.ledger.upsert import upsert

# The record's fields that are device columns of the same name (profiles go to their own table).
_RECORD_COLUMNS = (
    "enrollment_type",
    *(c for c in COLUMNS if c not in ("enrollment_id", "profiles")),
)


@dataclass(frozen=True)
class ImportResult:
    """How many devices an import created and updated, and profile facts it stored."""

    created: int
    updated: int
    profiles: int


def import_devices(session: Session, records: Sequence[DeviceRecord]) -> ImportResult:
    """Upsert ``records`` by enrollment id, in batches, inside the caller's transaction.

    A field the record leaves empty keeps the device's current value. A push token makes the
    device pushable again (its token state becomes active).
    """
    if not records:
        return ImportResult(0, 0, 0)
    now = utcnow()
    keys = [r.enrollment_id for r in records]
    existing: set[str] = set()
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        existing.update(
            session.scalars(
                select(DeviceRow.enrollment_id).where(DeviceRow.enrollment_id.in_(chunk))
            )
        )

    # Rows with the same set of given fields share one statement.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        row: dict[str, Any] = {"enrollment_id": r.enrollment_id, "updated_at": now}
        for col in _RECORD_COLUMNS:
            value = getattr(r, col)
            if value is not None:
                row[col] = list(value) if col == "tags" else value
        if r.push_token is not None:
            row["token_state"] = "active"
            row["token_dead_at"] = None
        groups[tuple(sorted(row))].append(row)
    table = DeviceRow.__table__
    for cols, rows in groups.items():
        for row in rows:
            row.setdefault("created_at", now)
        update = [c for c in cols if c not in ("enrollment_id", "created_at")]
        upsert(session, table, rows, keys=["enrollment_id"], update=update)

    facts = [(r.enrollment_id, p) for r in records for p in r.profiles]
    if facts:
        ids = device_ids(session, sorted({k for k, _ in facts}))
        upsert(
            session,
            InstalledProfileRow.__table__,
            [
                {
                    "device_id": ids[key],
                    "profile_uuid": p.uuid,
                    "name": p.name,
                    "expires_at": p.expires_at,
                    "source": "import",
                    "seen_at": now,
                }
                for key, p in facts
            ],
            keys=["device_id", "profile_uuid"],
            update=["name", "expires_at", "source", "seen_at"],
        )
    created = len({k for k in keys if k not in existing})
    result = ImportResult(created=created, updated=len(keys) - created, profiles=len(facts))
    record_event(
        session,
        "devices.imported",
        data={"created": result.created, "updated": result.updated, "profiles": len(facts)},
    )
    return result


def device_ids(session: Session, enrollment_ids: Sequence[str]) -> dict[str, int]:
    """Map enrollment ids to device row ids (missing ones are left out)."""
    found: dict[str, int] = {}
    for start in range(0, len(enrollment_ids), 5000):
        chunk = list(enrollment_ids[start : start + 5000])
        for key, ident in session.execute(
            select(DeviceRow.enrollment_id, DeviceRow.id).where(DeviceRow.enrollment_id.in_(chunk))
        ):
            found[key] = ident
    return found


def get_device(session: Session, enrollment_id: str) -> DeviceRow | None:
    """The device with this UDID or EnrollmentID, or None."""
    return session.scalar(select(DeviceRow).where(DeviceRow.enrollment_id == enrollment_id))


def list_devices(session: Session, *, after_id: int = 0, limit: int = 100) -> Sequence[DeviceRow]:
    """A page of devices in id order (keyset pagination from ``after_id``)."""
    q = select(DeviceRow).where(DeviceRow.id > after_id).order_by(DeviceRow.id).limit(limit)
    return session.scalars(q).all()


def count_devices(session: Session) -> int:
    """How many devices the registry holds."""
    return int(session.scalar(select(func.count()).select_from(DeviceRow)) or 0)


def installed_profiles(session: Session, device_id: int) -> Sequence[InstalledProfileRow]:
    """The profiles known to be on one device."""
    return session.scalars(
        select(InstalledProfileRow)
        .where(InstalledProfileRow.device_id == device_id)
        .order_by(InstalledProfileRow.profile_uuid)
    ).all()
