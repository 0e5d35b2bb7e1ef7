"""Heartbeats in the ledger: when each periodic task last completed (it stores, never judges)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.ledger.models import HeartbeatRow
from rollout.ledger.upsert import upsert


class HeartbeatLedger:
    """See :class:`rollout.ledger.HeartbeatStore`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def beat(self, name: str, at: dt.datetime) -> None:
        """Record that the task ``name`` completed at ``at`` (replacing its previous time)."""
        row = {"name": name, "at": at}
        upsert(self._session, HeartbeatRow.__table__, [row], keys=["name"], update=["at"])

    def heartbeats(self) -> dict[str, dt.datetime]:
        """Every task's last completion, by name."""
        rows = self._session.execute(select(HeartbeatRow.name, HeartbeatRow.at)).all()
        return {name: at for name, at in rows}
