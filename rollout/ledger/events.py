"""The append-only event journal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from rollout.ledger.models import EventRow
from rollout.ledger.types import utcnow


def record_event(
    session: Session,
    kind: str,
    *,
    rollout_id: int | None = None,
    device_id: int | None = None,
    enrollment_id: str | None = None,
    command_uuid: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append one event (no read back; part of the caller's transaction)."""
    record_events(
        session,
        [
            {
                "kind": kind,
                "rollout_id": rollout_id,
                "device_id": device_id,
                "enrollment_id": enrollment_id,
                "command_uuid": command_uuid,
                "data": data or {},
            }
        ],
    )


def record_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append many events in one statement; each dict holds EventRow's columns."""
    if not events:
        return
    now = utcnow()
    rows = [
        {
            "at": e.get("at", now),
            "kind": e["kind"],
            "rollout_id": e.get("rollout_id"),
            "device_id": e.get("device_id"),
            "enrollment_id": e.get("enrollment_id"),
            "command_uuid": e.get("command_uuid"),
            "data": e.get("data") or {},
        }
        for e in events
    ]
    session.execute(insert(EventRow), rows)


def list_events(
    session: Session, *, kind: str | None = None, limit: int = 100
) -> Sequence[EventRow]:
    """The newest events first, optionally of one kind."""
    q = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
    if kind is not None:
        q = q.where(EventRow.kind == kind)
    return session.scalars(q).all()
