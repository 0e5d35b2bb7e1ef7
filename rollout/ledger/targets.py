"""Moving targets between states, with the rollout counters kept exact in the same transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from rollout.ledger.models import RolloutCountRow, TargetRow
from rollout.ledger.types import utcnow
from rollout.states import TargetState
from rollout.transitions import may_move


@dataclass(frozen=True)
class Move:
    """Ask for one target to move to ``to``, setting ``fields`` on the way."""

    target_id: int
    to: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """A move that happened: the target, its rollout and stage, and the two states."""

    target_id: int
    rollout_id: int
    stage: int
    before: str
    after: str


def init_counters(session: Session, rollout_id: int, stages: Iterable[int]) -> None:
    """Create the zeroed counter rows for a rollout's stages (every state, so updates hit)."""
    rows = [
        {"rollout_id": rollout_id, "stage": s, "state": st.value, "n": 0}
        for s in stages
        for st in TargetState
    ]
    session.execute(insert(RolloutCountRow), rows)


def bump_counters(session: Session, deltas: Counter[tuple[int, int, str]]) -> None:
    """Add ``deltas[(rollout, stage, state)]`` to the kept counters, in a stable order."""
    params = [
        {"r": r, "s": s, "st": st, "d": d} for (r, s, st), d in sorted(deltas.items()) if d != 0
    ]
    if not params:
        return
    stmt = (
        update(RolloutCountRow)
        .where(
            RolloutCountRow.rollout_id == bindparam("r"),
            RolloutCountRow.stage == bindparam("s"),
            RolloutCountRow.state == bindparam("st"),
        )
        .values(n=RolloutCountRow.n + bindparam("d"))
    )
    session.connection().execute(stmt, params)


def move_targets(session: Session, moves: Sequence[Move]) -> list[Applied]:
    """Apply the allowed ``moves``; refuse the others (duplicate, late or out of order).

    The targets are locked (``FOR UPDATE`` on PostgreSQL; SQLite has one writer) so the states
    read here are the states changed, and the counters move by exactly what happened.
    """
    if not moves:
        return []
    wanted: dict[int, Move] = {}
    for m in moves:
        wanted[m.target_id] = m  # the last word on a target wins within one batch
    ids = sorted(wanted)
    current: dict[int, tuple[int, int, str]] = {}
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        q = (
            select(TargetRow.id, TargetRow.rollout_id, TargetRow.stage, TargetRow.state)
            .where(TargetRow.id.in_(chunk))
            .order_by(TargetRow.id)
            .with_for_update()
        )
        for tid, rid, stage, state in session.execute(q):
            current[tid] = (rid, stage, state)

    now = utcnow()
    applied: list[Applied] = []
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    deltas: Counter[tuple[int, int, str]] = Counter()
    for tid in ids:
        if tid not in current:
            continue
        rid, stage, state = current[tid]
        move = wanted[tid]
        if not may_move(state, move.to):
            continue
        row = {"b_id": tid, **{f"v_{k}": v for k, v in move.fields.items()}}
        row["v_state"] = move.to
        row["v_updated_at"] = now
        groups[tuple(sorted(row))].append(row)
        deltas[(rid, stage, state)] -= 1
        deltas[(rid, stage, move.to)] += 1
        applied.append(Applied(tid, rid, stage, state, move.to))
    conn = session.connection()
    for cols, rows in groups.items():
        values: dict[str, Any] = {c[2:]: bindparam(c) for c in cols if c != "b_id"}
        stmt = update(TargetRow).where(TargetRow.id == bindparam("b_id")).values(**values)
        conn.execute(stmt, rows)
    bump_counters(session, deltas)
    return applied


def counts(session: Session, rollout_id: int) -> dict[int, dict[str, int]]:
    """The kept counters of a rollout: stage → state → number of targets (zeros left out)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    q = select(RolloutCountRow.stage, RolloutCountRow.state, RolloutCountRow.n).where(
        RolloutCountRow.rollout_id == rollout_id
    )
    for stage, state, n in session.execute(q):
        if n:
            out[stage][state] = int(n)
    return dict(out)
