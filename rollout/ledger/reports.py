"""Read models: a rollout's summary from the kept counters (no scan of the targets)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rollout.ledger.models import RolloutRow, TargetRow
from rollout.ledger.targets import counts
from rollout.states import TargetState


def rollout_summary(session: Session, rollout_id: int) -> dict[str, Any] | None:
    """``{"rollout", "states", "stages", "ineligible", "unreachable"}`` for one rollout."""
    rollout = session.get(RolloutRow, rollout_id)
    if rollout is None:
        return None
    per_stage = counts(session, rollout_id)
    total: dict[str, int] = {}
    for states in per_stage.values():
        for state, n in states.items():
            total[state] = total.get(state, 0) + n

    def reasons(state: TargetState) -> dict[str, int]:
        if not total.get(state.value):
            return {}
        rows = session.execute(
            select(TargetRow.reason, func.count())
            .where(TargetRow.rollout_id == rollout_id, TargetRow.state == state.value)
            .group_by(TargetRow.reason)
        ).all()
        return {str(reason): int(n) for reason, n in rows}

    return {
        "rollout": {
            "id": rollout.id,
            "name": rollout.name,
            "state": rollout.state,
            "profile": rollout.profile_uuid,
            "started_at": rollout.started_at.isoformat() if rollout.started_at else None,
            "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
        },
        "states": dict(sorted(total.items())),
        "stages": [
            {"stage": k, "states": dict(sorted(v.items()))} for k, v in sorted(per_stage.items())
        ],
        "ineligible": reasons(TargetState.INELIGIBLE),
        "unreachable": reasons(TargetState.UNREACHABLE),
        "timed_out": reasons(TargetState.TIMED_OUT),
    }
