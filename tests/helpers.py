"""Small helpers shared by the test folders."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.ledger.models import ProfileRow, TargetRow
from rollout.ledger.targets import counts

PROFILE_UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def seed_profile(session: Session, uuid: str = PROFILE_UUID) -> ProfileRow:
    """A library row standing for a profile (for tests that never render its command)."""
    existing = session.get(ProfileRow, uuid)
    if existing is not None:
        return existing
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    row = ProfileRow(
        uuid=uuid,
        sha256="0" * 64,
        name="p",
        kind="enterprise",
        created_at=now,
        expires_at=now + dt.timedelta(days=365),
        signature_valid=True,
        chain_trusted=True,
        size=1,
        content=b"0",
    )
    session.add(row)
    session.flush()
    return row


def target_states(session: Session, rollout_id: int) -> dict[str, int]:
    """A rollout's kept counters, after checking them against a GROUP BY of its targets."""
    kept = counts(session, rollout_id).get(0, {})
    actual = dict(
        session.execute(
            select(TargetRow.state, func.count())
            .where(TargetRow.rollout_id == rollout_id)
            .group_by(TargetRow.state)
        ).all()
    )
    assert kept == actual, (kept, actual)
    return kept
