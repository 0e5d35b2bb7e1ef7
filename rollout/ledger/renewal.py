"""Ledger queries behind the expiry scan: expiring holdings and their replacements."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.ledger.models import EventRow, InstalledProfileRow, ProfileRow


@dataclass(frozen=True)
class Holding:
    """A profile on devices that expires before the horizon."""

    profile_uuid: str
    name: str | None
    app_id: str | None
    team_id: str | None
    expires_at: dt.datetime
    devices: int


def expiring_holdings(session: Session, horizon: dt.datetime) -> list[Holding]:
    """Profiles held by devices whose expiry (from the library, else the inventory) is near."""
    expiry = func.coalesce(ProfileRow.expires_at, InstalledProfileRow.expires_at)
    rows = session.execute(
        select(
            InstalledProfileRow.profile_uuid,
            func.max(func.coalesce(ProfileRow.name, InstalledProfileRow.name)),
            func.max(ProfileRow.app_id),
            func.max(ProfileRow.team_id),
            func.min(expiry),
            func.count(),
        )
        .outerjoin(ProfileRow, ProfileRow.uuid == InstalledProfileRow.profile_uuid)
        .where(expiry.is_not(None), expiry <= horizon)
        .group_by(InstalledProfileRow.profile_uuid)
        .order_by(func.min(expiry))
    ).all()
    return [Holding(u, n, a, t, e, c) for u, n, a, t, e, c in rows]


def find_replacement(session: Session, holding: Holding) -> ProfileRow | None:
    """The library's newest valid profile for the same app and team that outlives ``holding``."""
    if holding.app_id is None or holding.team_id is None:
        return None
    return session.scalar(
        select(ProfileRow)
        .where(
            ProfileRow.app_id == holding.app_id,
            ProfileRow.team_id == holding.team_id,
            ProfileRow.expires_at > holding.expires_at,
            ProfileRow.signature_valid.is_(True),
            ProfileRow.uuid != holding.profile_uuid,
        )
        .order_by(ProfileRow.expires_at.desc())
        .limit(1)
    )


def noted_since(session: Session, kind: str, profile_uuid: str, since: dt.datetime) -> bool:
    """Whether an event of ``kind`` about ``profile_uuid`` was recorded since ``since``."""
    rows = session.scalars(
        select(EventRow.data).where(EventRow.kind == kind, EventRow.at >= since)
    ).all()
    return any(d.get("profile") == profile_uuid for d in rows)
