"""Applying target moves, with the rollout counters kept exact in the same transaction.

A :class:`~rollout.ledger.records.Move` is a compare-and-set: the ledger locks the targets,
reads their states and applies each move whose ``allowed_from`` holds the state the target is
in at that point. Moves of one target are composed in the order given (the second sees the
state the first left); the counters move by exactly what happened.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from rollout.ledger.models import RolloutCountRow, RolloutReasonCountRow, TargetRow
from rollout.ledger.records import AppliedMove, Move
from rollout.states import TargetState

CHUNK = 5000
"""Ids per statement: below SQLite's bound-parameter limit, and a sane IN list elsewhere."""

SIDE_EXITS = frozenset(
    s.value
    for s in (
        TargetState.FAILED,
        TargetState.UNREACHABLE,
        TargetState.TIMED_OUT,
        TargetState.INELIGIBLE,
        TargetState.CANCELLED,
    )
)
"""States whose targets are also counted by reason (:func:`bump_reasons`)."""

ReasonKey = tuple[int, str, str]
"""``(rollout, state, reason)`` of a reason counter; a target without a reason counts as ``""``."""


def reason_key(rollout_id: int, state: str, reason: str | None) -> ReasonKey | None:
    """The reason counter a target in ``state`` with ``reason`` counts in (None: not counted)."""
    return (rollout_id, state, reason or "") if state in SIDE_EXITS else None


def reason_deltas(
    changes: Iterable[tuple[int, str, str | None, str, str | None]],
) -> Counter[ReasonKey]:
    """Reason-counter deltas of ``(rollout, state before, reason before, state after, reason
    after)`` changes."""
    out: Counter[ReasonKey] = Counter()
    for rid, before, why_before, after, why_after in changes:
        old, new = reason_key(rid, before, why_before), reason_key(rid, after, why_after)
        if old == new:
            continue
        if old is not None:
            out[old] -= 1
        if new is not None:
            out[new] += 1
    return out


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


def bump_reasons(session: Session, deltas: Counter[ReasonKey]) -> None:
    """Add ``deltas[(rollout, state, reason)]`` to the reason counters (rows made on first use),
    in a stable order."""
    rows = [
        {"rollout_id": r, "state": st, "reason": why, "n": d}
        for (r, st, why), d in sorted(deltas.items())
        if d != 0
    ]
    if not rows:
        return
    table: Any = RolloutReasonCountRow.__table__
    ins: Any = (
        postgresql.insert(table)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(table)
    )
    stmt = ins.on_conflict_do_update(
        index_elements=["rollout_id", "state", "reason"],
        set_={"n": table.c.n + ins.excluded.n},
    )
    session.connection().execute(stmt, rows)


def among(conn: Any, column: Any, name: str = "ids") -> Any:
    """``column`` is one of the values bound as ``name`` (``ids`` by default).

    PostgreSQL gets ``= ANY(:ids)`` with one array parameter, so the statement's text is the
    same whatever the batch size (cached by SQLAlchemy and prepared by psycopg once); other
    databases get an expanding ``IN``.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most ``size``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class MovePlan:
    """Moves checked under lock: the updates to make, and the counter deltas."""

    groups: list[tuple[str, dict[str, Any], list[int]]]  # (state, fields, target ids)
    deltas: Counter[tuple[int, int, str]]
    applied: list[AppliedMove]
    now: dt.datetime
    reasons: Counter[ReasonKey]


def lock_states(
    conn: Any, target_ids: Sequence[int]
) -> dict[int, tuple[int, int, str, str | None]]:
    """Lock the targets (in id order) and read ``id -> (rollout, stage, state, reason)``."""
    ids = sorted(set(target_ids))
    current: dict[int, tuple[int, int, str, str | None]] = {}
    q = (
        select(
            TargetRow.id, TargetRow.rollout_id, TargetRow.stage, TargetRow.state, TargetRow.reason
        )
        .where(among(conn, TargetRow.id))
        .order_by(TargetRow.id)
        .with_for_update()
    )
    for chunk in chunks(ids):
        for tid, rid, stage, state, reason in conn.execute(q, {"ids": list(chunk)}):
            current[tid] = (rid, stage, state, reason)
    return current


def plan_moves(conn: Any, moves: Sequence[Move], now: dt.datetime) -> MovePlan:
    """Lock the targets and keep the moves their states allow, composed in order.

    Targets that end with the same state and values share one group, so a batch's
    acknowledgements become one ``UPDATE … WHERE id IN (…)`` (see :func:`apply_moves`).
    """
    deltas: Counter[tuple[int, int, str]] = Counter()
    if not moves:
        return MovePlan([], deltas, [], now, Counter())
    locked = lock_states(conn, [m.target_id for m in moves])
    state_now = {tid: state for tid, (_, _, state, _) in locked.items()}
    final: dict[int, dict[str, Any]] = {}  # target -> fields set by its accepted moves
    for m in moves:
        state = state_now.get(m.target_id)
        if state is None or state not in m.allowed_from:
            continue
        final[m.target_id] = {**final.get(m.target_id, {}), **m.fields}
        state_now[m.target_id] = m.to
    groups: dict[str, tuple[str, dict[str, Any], list[int]]] = {}
    applied: list[AppliedMove] = []
    changes: list[tuple[int, str, str | None, str, str | None]] = []
    for tid in sorted(final):
        rid, stage, before, why = locked[tid]
        to, fields = state_now[tid], final[tid]
        key = json.dumps([to, fields], sort_keys=True, default=repr)
        groups.setdefault(key, (to, fields, []))[2].append(tid)
        deltas[(rid, stage, before)] -= 1
        deltas[(rid, stage, to)] += 1
        applied.append(AppliedMove(tid, rid, stage, before, to))
        changes.append((rid, before, why, to, fields.get("reason", why)))
    return MovePlan(list(groups.values()), deltas, applied, now, reason_deltas(changes))


def apply_moves(session: Session, conn: Any, plan: MovePlan) -> None:
    """Write a plan: shared-value groups as one ``UPDATE … IN``, the targets whose values are
    their own (say, a CommandUUID each) as one executemany per column set; then the counters.
    No result is read, so on PostgreSQL it can run inside a pipeline."""
    columns = TargetRow.__table__.c
    singles: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for to, fields, tids in plan.groups:
        if len(tids) == 1:
            row = {"b_id": tids[0], **{f"v_{k}": v for k, v in fields.items()}}
            row.update(v_state=to, v_updated_at=plan.now)
            singles[tuple(sorted(row))].append(row)
            continue
        values: dict[str, Any] = {
            k: bindparam(f"v_{k}", type_=columns[k].type) for k in sorted(fields)
        }
        stmt = (
            update(TargetRow)
            .where(among(conn, TargetRow.id))
            .values(state=bindparam("v_state"), updated_at=bindparam("v_updated_at"), **values)
        )
        params: dict[str, Any] = {f"v_{k}": v for k, v in fields.items()}
        params.update(v_state=to, v_updated_at=plan.now)
        for chunk in chunks(tids):
            conn.execute(stmt, {**params, "ids": list(chunk)})
    for cols, rows in singles.items():
        one: dict[str, Any] = {
            c[2:]: bindparam(c, type_=columns[c[2:]].type) for c in cols if c != "b_id"
        }
        conn.execute(update(TargetRow).where(TargetRow.id == bindparam("b_id")).values(**one), rows)
    bump_counters(session, plan.deltas)
    bump_reasons(session, plan.reasons)


def move_targets(session: Session, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]:
    """Apply the moves the targets' states allow (see the module's docs); the applied ones."""
    conn = session.connection()
    plan = plan_moves(conn, moves, now)
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
