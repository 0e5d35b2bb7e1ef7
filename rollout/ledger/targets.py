"""Moving targets between states, with the rollout counters kept exact in the same transaction."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import any_, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from rollout.ledger.models import RolloutCountRow, TargetRow
from rollout.ledger.types import utcnow
from rollout.states import TargetState
from rollout.transitions import may_move

CHUNK = 5000  # ids per statement


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


def among(conn: Any, column: Any) -> Any:
    """``column`` is one of the values bound as ``ids``.

    PostgreSQL gets ``= ANY(:ids)`` with one array parameter, so the statement's text is the
    same whatever the batch size (cached by SQLAlchemy and prepared by psycopg once); other
    databases get an expanding ``IN``.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", type_=ARRAY(column.type)))
    return column.in_(bindparam("ids", expanding=True))


@dataclass
class MovePlan:
    """Target moves decided under lock: the updates to make, and the counter deltas."""

    groups: list[tuple[Move, list[int]]]
    deltas: Counter[tuple[int, int, str]]
    applied: list[Applied]
    now: dt.datetime


def plan_moves(conn: Any, moves: Sequence[Move]) -> MovePlan:
    """Lock the targets (id order) and keep the allowed moves (the last word on a target wins).

    A move not allowed by :mod:`rollout.transitions` (a duplicate, late or out-of-order result)
    is dropped. Targets that get the same values share one group, so a batch's
    acknowledgements become one ``UPDATE … WHERE id IN (…)`` (see :func:`apply_moves`).
    """
    now = utcnow()
    deltas: Counter[tuple[int, int, str]] = Counter()
    if not moves:
        return MovePlan([], deltas, [], now)
    wanted: dict[int, Move] = {}
    for m in moves:
        wanted[m.target_id] = m
    ids = sorted(wanted)
    current: dict[int, tuple[int, int, str]] = {}
    for start in range(0, len(ids), CHUNK):
        q = (
            select(TargetRow.id, TargetRow.rollout_id, TargetRow.stage, TargetRow.state)
            .where(among(conn, TargetRow.id))
            .order_by(TargetRow.id)
            .with_for_update()
        )
        for tid, rid, stage, state in conn.execute(q, {"ids": ids[start : start + CHUNK]}):
            current[tid] = (rid, stage, state)
    groups: dict[str, tuple[Move, list[int]]] = {}
    applied: list[Applied] = []
    for tid in ids:
        if tid not in current:
            continue
        rid, stage, state = current[tid]
        move = wanted[tid]
        if not may_move(state, move.to):
            continue
        key = json.dumps([move.to, move.fields], sort_keys=True, default=repr)
        groups.setdefault(key, (move, []))[1].append(tid)
        deltas[(rid, stage, state)] -= 1
        deltas[(rid, stage, move.to)] += 1
        applied.append(Applied(tid, rid, stage, state, move.to))
    return MovePlan(list(groups.values()), deltas, applied, now)


def apply_moves(session: Session, conn: Any, plan: MovePlan) -> None:
    """Write a plan: shared-value groups as one ``UPDATE … IN``, the targets whose values are
    their own (say, a CommandUUID each) as one executemany per column set; then the counters.
    No result is read, so on PostgreSQL it can run inside a pipeline."""
    columns = TargetRow.__table__.c
    singles: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for move, tids in plan.groups:
        if len(tids) == 1:
            row = {"b_id": tids[0], **{f"v_{k}": v for k, v in move.fields.items()}}
            row.update(v_state=move.to, v_updated_at=plan.now)
            singles[tuple(sorted(row))].append(row)
            continue
        values: dict[str, Any] = {
            k: bindparam(f"v_{k}", type_=columns[k].type) for k in sorted(move.fields)
        }
        stmt = (
            update(TargetRow)
            .where(among(conn, TargetRow.id))
            .values(state=bindparam("v_state"), updated_at=bindparam("v_updated_at"), **values)
        )
        params: dict[str, Any] = {f"v_{k}": v for k, v in move.fields.items()}
        params.update(v_state=move.to, v_updated_at=plan.now)
        for start in range(0, len(tids), CHUNK):
            conn.execute(stmt, {**params, "ids": tids[start : start + CHUNK]})
    for cols, rows in singles.items():
        one: dict[str, Any] = {
            c[2:]: bindparam(c, type_=columns[c[2:]].type) for c in cols if c != "b_id"
        }
        conn.execute(update(TargetRow).where(TargetRow.id == bindparam("b_id")).values(**one), rows)
    bump_counters(session, plan.deltas)


def move_targets(session: Session, moves: Sequence[Move]) -> list[Applied]:
    """Apply the allowed ``moves``; refuse the others (duplicate, late or out of order).

    The targets are locked (``FOR UPDATE`` on PostgreSQL; SQLite has one writer) so the states
    read are the states changed, and the counters move by exactly what happened.
    """
    conn = session.connection()
    plan = plan_moves(conn, moves)
    apply_moves(session, conn, plan)
    return plan.applied


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
