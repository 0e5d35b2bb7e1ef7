"""Alerts in the ledger: the rows, their state changes, and the outbox of their notifications.

What is an alert, when it escalates, when it is sent again and when it resolves are decided by
:mod:`rollout.alerts`; this module stores what it is told. One live alert per key is kept by
the unique ``open_key``: raising a key that is already live changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import AlertDeliveryRow, AlertRow
from rollout.ledger.records import AlertInfo, DeliveryInfo, NewAlert

LIVE = ("open", "acknowledged")


def _alert(r: AlertRow) -> AlertInfo:
    return AlertInfo(
        id=r.id,
        key=r.key,
        kind=r.kind,
        severity=r.severity,
        state=r.state,
        title=r.title,
        data=dict(r.data or {}),
        opened_at=r.opened_at,
        updated_at=r.updated_at,
        notified_at=r.notified_at,
        acknowledged_by=r.acknowledged_by,
        acknowledged_at=r.acknowledged_at,
        resolved_by=r.resolved_by,
        resolved_at=r.resolved_at,
    )


def _delivery(r: AlertDeliveryRow) -> DeliveryInfo:
    return DeliveryInfo(
        id=r.id,
        alert_id=r.alert_id,
        channel=r.channel,
        payload=dict(r.payload or {}),
        state=r.state,
        attempts=r.attempts,
        next_at=r.next_at,
        last_status=r.last_status,
        last_error=r.last_error,
        delivered_at=r.delivered_at,
    )


class AlertLedger(Journaled):
    """See :class:`rollout.ledger.AlertStore`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def live(self, kinds: Collection[str] | None = None) -> list[AlertInfo]:
        """Alerts not resolved (of ``kinds``, when given), oldest first, locked against a
        concurrent scan."""
        q = select(AlertRow).where(AlertRow.state.in_(LIVE)).order_by(AlertRow.id)
        if kinds is not None:
            q = q.where(AlertRow.kind.in_(list(kinds)))
        return [_alert(r) for r in self._session.scalars(q.with_for_update())]

    def raise_new(self, alerts: Sequence[NewAlert], now: dt.datetime) -> list[AlertInfo]:
        """Open an alert for each key not live yet; the alerts this opened (a key already
        live, or raised by a concurrent writer, is left alone)."""
        if not alerts:
            return []
        rows = [
            {
                "key": a.key,
                "open_key": a.key,
                "kind": a.kind,
                "severity": a.severity,
                "state": "open",
                "title": a.title,
                "data": dict(a.data),
                "opened_at": now,
                "updated_at": now,
            }
            for a in alerts
        ]
        ins: Any = (
            postgresql.insert(AlertRow)
            if self._session.get_bind().dialect.name == "postgresql"
            else sqlite.insert(AlertRow)
        )
        stmt = ins.on_conflict_do_nothing(index_elements=["open_key"]).returning(AlertRow.id)
        opened = [i for row in rows if (i := self._session.scalar(stmt, row)) is not None]
        if not opened:
            return []
        q = select(AlertRow).where(AlertRow.id.in_(opened)).order_by(AlertRow.id)
        return [_alert(r) for r in self._session.scalars(q)]

    def revise(
        self,
        alert_id: int,
        now: dt.datetime,
        *,
        severity: str | None = None,
        title: str | None = None,
        data: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> None:
        """Overwrite what is given of a live alert (severity, wording, figures, state)."""
        values: dict[str, Any] = {"updated_at": now}
        if severity is not None:
            values["severity"] = severity
        if title is not None:
            values["title"] = title
        if data is not None:
            values["data"] = dict(data)
        if state is not None:
            values["state"] = state
        self._session.execute(update(AlertRow).where(AlertRow.id == alert_id).values(**values))

    def live_counts(self) -> dict[tuple[str, str], int]:
        """Live alerts by (kind, severity)."""
        q = (
            select(AlertRow.kind, AlertRow.severity, func.count())
            .where(AlertRow.state.in_(LIVE))
            .group_by(AlertRow.kind, AlertRow.severity)
        )
        return {(kind, sev): int(n) for kind, sev, n in self._session.execute(q)}

    def mark_notified(self, alert_ids: Collection[int], now: dt.datetime) -> None:
        """Record that these alerts were just queued for notification."""
        if alert_ids:
            self._session.execute(
                update(AlertRow).where(AlertRow.id.in_(list(alert_ids))).values(notified_at=now)
            )

    def acknowledge(self, alert_id: int, by: str, now: dt.datetime) -> None:
        """An operator has seen the alert: it stays live but is not sent again unless it
        escalates."""
        self._session.execute(
            update(AlertRow)
            .where(AlertRow.id == alert_id)
            .values(state="acknowledged", acknowledged_by=by, acknowledged_at=now, updated_at=now)
        )

    def resolve(self, alert_ids: Collection[int], by: str, now: dt.datetime) -> None:
        """The alerts are over; their keys may be raised again as new alerts."""
        if alert_ids:
            self._session.execute(
                update(AlertRow)
                .where(AlertRow.id.in_(list(alert_ids)))
                .values(
                    state="resolved", open_key=None, resolved_by=by, resolved_at=now, updated_at=now
                )
            )

    def get(self, alert_id: int, *, lock: bool = False) -> AlertInfo | None:
        """One alert, or None."""
        row = self._session.get(AlertRow, alert_id, with_for_update=lock or None)
        return _alert(row) if row is not None else None

    def alerts(self, *, states: Collection[str] | None = None, limit: int = 200) -> list[AlertInfo]:
        """Alerts, newest first (of ``states``, when given)."""
        q = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if states is not None:
            q = q.where(AlertRow.state.in_(list(states)))
        return [_alert(r) for r in self._session.scalars(q)]

    # --- the outbox ---------------------------------------------------------------------------

    def queue(self, items: Sequence[tuple[int, str, dict[str, Any]]], now: dt.datetime) -> None:
        """``(alert id, channel, payload)`` notifications to deliver from ``now`` on."""
        self._session.add_all(
            AlertDeliveryRow(
                alert_id=alert_id,
                channel=channel,
                payload=dict(payload),
                state="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
            for alert_id, channel, payload in items
        )
        self._session.flush()

    def claim(self, now: dt.datetime, until: dt.datetime, limit: int = 50) -> list[DeliveryInfo]:
        """Pending notifications whose time has come, leased until ``until`` (a concurrent
        drainer skips them, and one that dies mid-way leaves them to be tried again then)."""
        q = (
            select(AlertDeliveryRow)
            .where(AlertDeliveryRow.state == "pending", AlertDeliveryRow.next_at <= now)
            .order_by(AlertDeliveryRow.next_at, AlertDeliveryRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        found = [_delivery(r) for r in self._session.scalars(q)]
        if found:
            self._session.execute(
                update(AlertDeliveryRow)
                .where(AlertDeliveryRow.id.in_([d.id for d in found]))
                .values(next_at=until)
            )
        return found

    def record_attempt(
        self,
        delivery_id: int,
        now: dt.datetime,
        *,
        state: str,
        next_at: dt.datetime,
        status: int | None,
        error: str | None,
    ) -> None:
        """One more attempt at a notification: its outcome and, if pending, when to try
        again."""
        self._session.execute(
            update(AlertDeliveryRow)
            .where(AlertDeliveryRow.id == delivery_id)
            .values(
                state=state,
                attempts=AlertDeliveryRow.attempts + 1,
                next_at=next_at,
                last_status=status,
                last_error=error,
                delivered_at=now if state == "delivered" else None,
            )
        )

    def deliveries(self, alert_id: int) -> list[DeliveryInfo]:
        """An alert's notifications, oldest first."""
        q = (
            select(AlertDeliveryRow)
            .where(AlertDeliveryRow.alert_id == alert_id)
            .order_by(AlertDeliveryRow.id)
        )
        return [_delivery(r) for r in self._session.scalars(q)]
