"""Rollouts in the ledger: writing a planned rollout, its state, and reading it back.

Reads come from kept counters, whatever the rollout's size: targets by stage and state, and
side exits by state and reason. A rollout's devices are read a page at a time by keyset.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, union_all, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import (
    CommandRow,
    DeviceRow,
    ProfileRow,
    RolloutCountRow,
    RolloutReasonCountRow,
    RolloutRow,
    StageRow,
    TargetRow,
)
from rollout.ledger.moves import (
    SIDE_EXITS,
    bump_counters,
    bump_reasons,
    chunks,
    counts,
    init_counters,
    move_targets,
)
from rollout.ledger.records import (
    AppliedMove,
    Move,
    NewRollout,
    RolloutInfo,
    RolloutSummary,
    StageInfo,
    TargetInfo,
)
from rollout.states import CommandStatus, RolloutState, StageState, TargetState

UNSPECIFIED = "unspecified"
"""How a side exit without a recorded reason is counted."""
#: Side exits whose reasons a summary breaks down.
REASONED_STATES = (TargetState.INELIGIBLE, TargetState.UNREACHABLE, TargetState.TIMED_OUT)


class RolloutError(ValueError):
    """A rollout cannot be written as asked (its profile is missing, say)."""


def _info(r: RolloutRow) -> RolloutInfo:
    return RolloutInfo(
        id=r.id,
        name=r.name,
        state=r.state,
        profile_uuid=r.profile_uuid,
        current_stage=r.current_stage,
        salt=r.salt,
        created_by=r.created_by,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        options=dict(r.options or {}),
        reason=r.reason,
        replaces_uuid=r.replaces_uuid,
    )


def _target(t: TargetRow) -> TargetInfo:
    return TargetInfo(
        id=t.id,
        device_id=t.device_id,
        stage=t.stage,
        state=t.state,
        reason=t.reason,
        command_uuid=t.command_uuid,
        push_count=t.push_count,
        notnow_count=t.notnow_count,
        next_push_at=t.next_push_at,
        requeue_after_token_update=t.requeue_after_token_update,
        error_chain=t.error_chain,
    )


_PAGE_COLUMNS = (
    TargetRow.id,
    TargetRow.device_id,
    TargetRow.stage,
    TargetRow.state,
    TargetRow.reason,
    TargetRow.command_uuid,
    TargetRow.push_count,
    TargetRow.notnow_count,
    TargetRow.next_push_at,
    TargetRow.requeue_after_token_update,
    TargetRow.error_chain,
)  # TargetInfo's fields, in order
_page_statements: dict[tuple[int, bool], Any] = {}


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching text that starts with ``prefix`` (``\\`` escapes)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _page_statement(n_states: int, by_reason: bool) -> Any:
    """The devices-page statement for ``n_states`` states (bound as ``s0``, ``s1``, …), built
    once per shape: a keyset piece per state, merged, joined to the targets and devices."""
    key = (n_states, by_reason)
    if key not in _page_statements:
        pieces = []
        for k in range(n_states):
            q = (
                select(TargetRow.id)
                .where(
                    TargetRow.rollout_id == bindparam("rid"),
                    TargetRow.state == bindparam(f"s{k}"),
                    TargetRow.id > bindparam("after"),
                )
                .order_by(TargetRow.id)
                .limit(bindparam("lim"))
            )
            if by_reason:
                q = q.where(TargetRow.reason.like(bindparam("why"), escape="\\"))
            piece = q.subquery()
            pieces.append(select(piece.c.id))
        merged = union_all(*pieces).subquery()
        page = select(merged.c.id).order_by(merged.c.id).limit(bindparam("lim")).subquery()
        _page_statements[key] = (
            select(*_PAGE_COLUMNS, DeviceRow.enrollment_id)
            .join(page, page.c.id == TargetRow.id)
            .join(DeviceRow, DeviceRow.id == TargetRow.device_id)
            .order_by(TargetRow.id)
        )
    return _page_statements[key]


def profile_content_of(session: Session, rollout_id: int) -> bytes | None:
    """The signed profile file a rollout installs."""
    return session.scalar(
        select(ProfileRow.content)
        .join(RolloutRow, RolloutRow.profile_uuid == ProfileRow.uuid)
        .where(RolloutRow.id == rollout_id)
    )


class RolloutLedger(Journaled):
    """Rollout reads and controls, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, new: NewRollout, now: dt.datetime) -> int:
        """Write a draft rollout, its stages and its targets (planned, or ineligible with the
        reason they were excluded for); its id."""
        s = self._session
        if new.profile_uuid is not None and s.get(ProfileRow, new.profile_uuid) is None:
            raise RolloutError(f"no profile {new.profile_uuid} in the library")
        rollout = RolloutRow(
            name=new.name,
            profile_uuid=new.profile_uuid,
            salt=new.salt,
            options=dict(new.options),
            created_by=new.created_by,
            replaces_uuid=new.replaces_uuid,
            state=RolloutState.DRAFT.value,
            current_stage=0,
            created_at=now,
            updated_at=now,
        )
        s.add(rollout)
        s.flush()
        s.add_all(
            StageRow(
                rollout_id=rollout.id,
                number=k,
                label=stage.label,
                gate=dict(stage.gate),
                state=StageState.PENDING.value,
            )
            for k, stage in enumerate(new.stages)
        )
        init_counters(s, rollout.id, range(len(new.stages)))
        planned, ineligible = TargetState.PLANNED.value, TargetState.INELIGIBLE.value
        rows = [
            {
                "rollout_id": rollout.id,
                "device_id": t.device_id,
                "stage": t.stage,
                "priority": t.priority,
                "state": ineligible if t.excluded else planned,
                "reason": t.excluded,
                "updated_at": now,
            }
            for t in new.targets
        ]
        for chunk in chunks(rows):
            s.execute(insert(TargetRow), list(chunk))
        bump_counters(
            s,
            Counter(
                (rollout.id, t.stage, ineligible if t.excluded else planned) for t in new.targets
            ),
        )
        bump_reasons(
            s, Counter((rollout.id, ineligible, t.excluded) for t in new.targets if t.excluded)
        )
        return rollout.id

    def stages(self, rollout_id: int) -> list[StageInfo]:
        """The rollout's stages in order, with their gates and how far each has got."""
        rows = self._session.scalars(
            select(StageRow).where(StageRow.rollout_id == rollout_id).order_by(StageRow.number)
        )
        return [
            StageInfo(
                r.number, r.label or "", dict(r.gate or {}), r.state, r.started_at, r.finished_at
            )
            for r in rows
        ]

    def current_stages(self, rollout_ids: Collection[int]) -> dict[int, StageInfo]:
        """The stage each of ``rollout_ids`` is at (one read for them all)."""
        if not rollout_ids:
            return {}
        rows = self._session.scalars(
            select(StageRow)
            .join(RolloutRow, RolloutRow.id == StageRow.rollout_id)
            .where(
                StageRow.rollout_id.in_(list(rollout_ids)),
                StageRow.number == RolloutRow.current_stage,
            )
        )
        return {
            r.rollout_id: StageInfo(
                r.number, r.label or "", dict(r.gate or {}), r.state, r.started_at, r.finished_at
            )
            for r in rows
        }

    def set_stage(
        self,
        rollout_id: int,
        number: int,
        state: str,
        now: dt.datetime,
        *,
        current: bool = False,
    ) -> None:
        """Record a stage's new state (its start or end time with it); ``current`` makes it
        the rollout's open stage, which fan-out may reach."""
        s = self._session
        values: dict[str, object] = {"state": state}
        if state == StageState.RUNNING:
            values["started_at"] = func.coalesce(StageRow.started_at, now)
        if state in (StageState.PASSED, StageState.FAILED):
            values["finished_at"] = now
        s.execute(
            update(StageRow)
            .where(StageRow.rollout_id == rollout_id, StageRow.number == number)
            .values(**values)
        )
        if current:
            s.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .values(current_stage=number, updated_at=now)
            )

    def set_reason(self, rollout_id: int, reason: str | None, now: dt.datetime) -> None:
        """Record why a rollout is where it is (a halt's gate and figures), or clear it."""
        self._session.execute(
            update(RolloutRow)
            .where(RolloutRow.id == rollout_id)
            .values(reason=reason, updated_at=now)
        )

    def open_with_profile(self, profile_uuid: str, states: Collection[str]) -> list[int]:
        """Rollouts in ``states`` that install ``profile_uuid``."""
        return list(
            self._session.scalars(
                select(RolloutRow.id).where(
                    RolloutRow.profile_uuid == profile_uuid, RolloutRow.state.in_(list(states))
                )
            )
        )

    def targeted(
        self, rollout_ids: Collection[int], device_ids: Collection[int], states: Collection[str]
    ) -> dict[int, int]:
        """``rollout id -> how many of device_ids`` it targets in ``states``."""
        out: dict[int, int] = {}
        if not rollout_ids:
            return out
        for chunk in chunks(sorted(device_ids)):
            for rid, n in self._session.execute(
                select(TargetRow.rollout_id, func.count())
                .where(
                    TargetRow.rollout_id.in_(list(rollout_ids)),
                    TargetRow.device_id.in_(list(chunk)),
                    TargetRow.state.in_(list(states)),
                )
                .group_by(TargetRow.rollout_id)
            ):
                out[rid] = out.get(rid, 0) + int(n)
        return out

    def cancel_undelivered(self, rollout_id: int, states: Collection[str], now: dt.datetime) -> int:
        """Abort: the rollout's commands not yet handed to a device (queued, or NotNow'd)
        become inactive, never to be served; returns how many."""
        result: CursorResult[Any] = self._session.execute(  # type: ignore[assignment]
            update(CommandRow)
            .where(
                CommandRow.rollout_id == rollout_id,
                CommandRow.status.in_(list(states)),
            )
            .values(status=CommandStatus.INACTIVE.value, result_at=now)
        )
        return int(result.rowcount or 0)

    def target_ids(
        self,
        rollout_id: int,
        states: Collection[str],
        *,
        reasons: Collection[str] | None = None,
    ) -> list[int]:
        """Ids of the rollout's targets in ``states`` (with one of ``reasons``, when given)."""
        q = select(TargetRow.id).where(
            TargetRow.rollout_id == rollout_id, TargetRow.state.in_(list(states))
        )
        if reasons is not None:
            q = q.where(TargetRow.reason.in_(list(reasons)))
        return list(self._session.scalars(q.order_by(TargetRow.id)))

    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]:
        """Apply target moves (compare-and-set, see :class:`~rollout.ledger.records.Move`)."""
        return move_targets(self._session, moves, now)

    def get(self, rollout_id: int, *, lock: bool = False) -> RolloutInfo | None:
        """The rollout's row (locked for a control when ``lock``), or None."""
        row = self._session.get(RolloutRow, rollout_id, with_for_update=lock or None)
        return _info(row) if row is not None else None

    def renewing(self, old_uuids: Collection[str]) -> list[RolloutInfo]:
        """The renewal rollouts that replace any of these profiles, oldest first."""
        rows = self._session.scalars(
            select(RolloutRow)
            .where(RolloutRow.replaces_uuid.in_([u.lower() for u in old_uuids]))
            .order_by(RolloutRow.id)
        )
        return [_info(r) for r in rows]

    def last_created_by(self, actor: str) -> RolloutInfo | None:
        """The newest rollout ``actor`` created, if any."""
        row = self._session.scalar(
            select(RolloutRow)
            .where(RolloutRow.created_by == actor)
            .order_by(RolloutRow.id.desc())
            .limit(1)
        )
        return _info(row) if row is not None else None

    def recent(self, *, limit: int = 1000) -> list[RolloutInfo]:
        """Rollouts, newest first."""
        rows = self._session.scalars(select(RolloutRow).order_by(RolloutRow.id.desc()).limit(limit))
        return [_info(r) for r in rows]

    def in_states(
        self, states: Collection[str], *, others: int = 0
    ) -> tuple[list[RolloutInfo], list[RolloutInfo]]:
        """The rollouts in ``states`` (newest first), and the ``others`` newest of the rest;
        read through the state index, whatever the number of rollouts on record."""
        wanted = list(states)
        chosen = [
            _info(r)
            for r in self._session.scalars(
                select(RolloutRow)
                .where(RolloutRow.state.in_(wanted))
                .order_by(RolloutRow.id.desc())
            )
        ]
        rest: list[RolloutInfo] = []
        if others > 0:
            rest = [
                _info(r)
                for r in self._session.scalars(
                    select(RolloutRow)
                    .where(RolloutRow.state.not_in(wanted))
                    .order_by(RolloutRow.id.desc())
                    .limit(others)
                )
            ]
        return chosen, rest

    def set_state(self, rollout_id: int, state: str, now: dt.datetime) -> None:
        """Record a rollout's new state (its start and end times with it)."""
        values: dict[str, object] = {"state": state, "updated_at": now}
        if state == RolloutState.RUNNING:
            values["started_at"] = func.coalesce(RolloutRow.started_at, now)
        if state in (RolloutState.COMPLETED, RolloutState.ABORTED):
            values["finished_at"] = now
        self._session.execute(
            update(RolloutRow).where(RolloutRow.id == rollout_id).values(**values)
        )

    def summary(self, rollout_id: int) -> RolloutSummary | None:
        """The rollout with its targets by stage and state (kept counters), and the reasons
        of its side exits."""
        s = self._session
        row = s.get(RolloutRow, rollout_id)
        if row is None:
            return None
        per_stage = counts(s, rollout_id)
        total: Counter[str] = Counter()
        for states in per_stage.values():
            total.update(states)
        reasons: dict[str, dict[str, int]] = {state.value: {} for state in REASONED_STATES}
        for state, by_reason in self.reason_counts(rollout_id).items():
            if state in reasons:
                reasons[state] = by_reason
        return RolloutSummary(
            rollout=_info(row),
            states=dict(sorted(total.items())),
            stages=[(k, dict(sorted(v.items()))) for k, v in sorted(per_stage.items())],
            reasons=reasons,
        )

    def reason_counts(self, rollout_id: int) -> dict[str, dict[str, int]]:
        """Side-exit targets by state and reason, from the kept reason counters (zeros left
        out; a target without a reason counts under ``unspecified``)."""
        out: dict[str, dict[str, int]] = {}
        q = (
            select(
                RolloutReasonCountRow.state, RolloutReasonCountRow.reason, RolloutReasonCountRow.n
            )
            .where(RolloutReasonCountRow.rollout_id == rollout_id, RolloutReasonCountRow.n != 0)
            .order_by(RolloutReasonCountRow.state, RolloutReasonCountRow.reason)
        )
        for state, reason, n in self._session.execute(q):
            out.setdefault(state, {})[reason or UNSPECIFIED] = int(n)
        return out

    def recount_reasons(self, rollout_id: int) -> dict[str, dict[str, int]]:
        """The same as :meth:`reason_counts`, counted from the targets (slow: for checks)."""
        out: dict[str, dict[str, int]] = {}
        q = (
            select(TargetRow.state, TargetRow.reason, func.count())
            .where(TargetRow.rollout_id == rollout_id, TargetRow.state.in_(sorted(SIDE_EXITS)))
            .group_by(TargetRow.state, TargetRow.reason)
            .order_by(TargetRow.state, TargetRow.reason)
        )
        for state, reason, n in self._session.execute(q):
            by_reason = out.setdefault(state, {})
            key = reason or UNSPECIFIED
            by_reason[key] = by_reason.get(key, 0) + int(n)
        return out

    def state_counts(self, rollout_id: int) -> dict[str, int]:
        """Targets by state over every stage, from the kept counters (zeros left out)."""
        total: Counter[str] = Counter()
        for states in counts(self._session, rollout_id).values():
            total.update(states)
        return dict(sorted(total.items()))

    def stage_counts(self, rollout_id: int) -> dict[int, dict[str, int]]:
        """Targets by stage and state, from the kept counters (zeros left out)."""
        return counts(self._session, rollout_id)

    def counters(self, rollout_ids: Collection[int]) -> dict[int, dict[int, dict[str, int]]]:
        """The kept counters of several rollouts at once: rollout → stage → state → targets."""
        out: dict[int, dict[int, dict[str, int]]] = {}
        if not rollout_ids:
            return out
        q = select(
            RolloutCountRow.rollout_id,
            RolloutCountRow.stage,
            RolloutCountRow.state,
            RolloutCountRow.n,
        ).where(RolloutCountRow.rollout_id.in_(list(rollout_ids)), RolloutCountRow.n > 0)
        for rid, stage, state, n in self._session.execute(q):
            out.setdefault(rid, {}).setdefault(stage, {})[state] = int(n)
        return out

    def by_state(self) -> dict[str, int]:
        """How many rollouts are in each state."""
        q = select(RolloutRow.state, func.count()).group_by(RolloutRow.state)
        return {state: int(n) for state, n in self._session.execute(q)}

    def recount(self, rollout_id: int) -> dict[str, int]:
        """Targets by state counted row by row (to check the kept counters; a full scan)."""
        return {
            state: int(n)
            for state, n in self._session.execute(
                select(TargetRow.state, func.count())
                .where(TargetRow.rollout_id == rollout_id)
                .group_by(TargetRow.state)
            )
        }

    def command_counts(self, rollout_id: int, request_type: str | None = None) -> dict[str, int]:
        """The rollout's commands (of one request type, when given) by status (a full scan;
        for checks, not dashboards)."""
        q = select(CommandRow.status, func.count()).where(CommandRow.rollout_id == rollout_id)
        if request_type is not None:
            q = q.where(CommandRow.request_type == request_type)
        return {
            status: int(n) for status, n in self._session.execute(q.group_by(CommandRow.status))
        }

    def command_uuids(self, rollout_id: int) -> dict[int, str]:
        """``device id -> CommandUUID`` of the rollout's targets that have a command."""
        rows = self._session.execute(
            select(TargetRow.device_id, TargetRow.command_uuid).where(
                TargetRow.rollout_id == rollout_id, TargetRow.command_uuid.is_not(None)
            )
        )
        return {device: uuid for device, uuid in rows if uuid is not None}

    def target_page(
        self,
        rollout_id: int,
        *,
        after_id: int = 0,
        limit: int = 100,
        states: Collection[str] | None = None,
        reason_prefix: str | None = None,
    ) -> list[tuple[TargetInfo, str]]:
        """One page of a rollout's targets with their device's key, in target order after
        target ``after_id``, optionally in ``states`` or with a reason starting with
        ``reason_prefix``.

        Keyset over the page index (rollout, state, id): each asked state (every state when
        none is asked) is read from ``after_id`` on, at most ``limit`` rows, and the pieces are
        merged, in one statement, so any page costs about the same whatever the rollout's
        size."""
        wanted = sorted(set(states) if states is not None else {st.value for st in TargetState})
        if not wanted:
            return []
        params: dict[str, Any] = {f"s{k}": state for k, state in enumerate(wanted)}
        params.update(rid=rollout_id, after=after_id, lim=limit)
        if reason_prefix:
            params["why"] = _like_prefix(reason_prefix)
        stmt = _page_statement(len(wanted), bool(reason_prefix))
        return [(TargetInfo(*row[:-1]), row[-1]) for row in self._session.execute(stmt, params)]

    def targets(
        self, rollout_id: int, device_ids: Collection[int] | None = None
    ) -> dict[int, TargetInfo]:
        """``device id -> target`` of the rollout's targets (all of them, or those given)."""
        q = select(TargetRow).where(TargetRow.rollout_id == rollout_id)
        if device_ids is not None:
            q = q.where(TargetRow.device_id.in_(list(device_ids)))
        return {t.device_id: _target(t) for t in self._session.scalars(q.order_by(TargetRow.id))}
