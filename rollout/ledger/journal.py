"""The append-only event journal: every result, anomaly, refusal and operator action."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import BigInteger, String, Text, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from rollout.ledger.models import EventRow
from rollout.ledger.records import Event, EventEntry

_EVENTS_UNNEST = text(
    "INSERT INTO events (at, kind, rollout_id, device_id, enrollment_id, command_uuid, data, "
    "part) SELECT :at, u.kind, u.rollout_id, u.device_id, u.enrollment_id, u.command_uuid, "
    "CAST(u.data AS JSONB), "
    "CASE WHEN u.device_id IS NULL THEN 0 ELSE COALESCE(u.rollout_id, 0) END "
    "FROM unnest(:kinds, :rollout_ids, :device_ids, :enrollment_ids, :command_uuids, :datas)"
    " AS u(kind, rollout_id, device_id, enrollment_id, command_uuid, data)"
).bindparams(
    bindparam("at", type_=EventRow.__table__.c.at.type),
    bindparam("kinds", type_=ARRAY(String)),
    bindparam("rollout_ids", type_=ARRAY(BigInteger)),
    bindparam("device_ids", type_=ARRAY(BigInteger)),
    bindparam("enrollment_ids", type_=ARRAY(String)),
    bindparam("command_uuids", type_=ARRAY(String)),
    bindparam("datas", type_=ARRAY(Text)),
)


def record_events(session: Session, events: Sequence[Event], at: dt.datetime) -> None:
    """Append ``events``, all stamped ``at``, in one statement (no read back).

    PostgreSQL gets one ``INSERT … SELECT FROM unnest`` with a fixed text (one prepared
    statement for any batch; an executemany costs a round of pipeline messages per row).
    """
    if not events:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(
            _EVENTS_UNNEST,
            {
                "at": at,
                "kinds": [e.kind for e in events],
                "rollout_ids": [e.rollout_id for e in events],
                "device_ids": [e.device_id for e in events],
                "enrollment_ids": [e.enrollment_id for e in events],
                "command_uuids": [e.command_uuid for e in events],
                "datas": [json.dumps(e.data) for e in events],
            },
        )
        return
    session.execute(
        insert(EventRow),
        [
            {
                "at": at,
                "kind": e.kind,
                "rollout_id": e.rollout_id,
                "device_id": e.device_id,
                "enrollment_id": e.enrollment_id,
                "command_uuid": e.command_uuid,
                "data": e.data,
            }
            for e in events
        ],
    )


def list_events(
    session: Session,
    *,
    kind: str | None = None,
    rollout_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[EventEntry]:
    """The newest events first (older than event ``before_id``, when given), optionally of one
    kind or one rollout."""
    q = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(EventRow.id < before_id)
    if kind is not None:
        q = q.where(EventRow.kind == kind)
    if rollout_id is not None:
        q = q.where(EventRow.rollout_id == rollout_id)
    return [
        EventEntry(
            e.id,
            e.at,
            e.kind,
            dict(e.data or {}),
            e.rollout_id,
            e.device_id,
            e.enrollment_id,
            e.command_uuid,
        )
        for e in session.scalars(q)
    ]


class Journaled:
    """The journal's two verbs, shared by every store (each store writes its own events)."""

    _session: Session

    def record(self, events: Sequence[Event], at: dt.datetime) -> None:
        """Append events, stamped ``at``."""
        record_events(self._session, events, at)

    def events(
        self,
        *,
        kind: str | None = None,
        rollout_id: int | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[EventEntry]:
        """The newest events first, optionally of one kind or one rollout, older than
        ``before_id`` (to page back)."""
        return list_events(
            self._session, kind=kind, rollout_id=rollout_id, limit=limit, before_id=before_id
        )
