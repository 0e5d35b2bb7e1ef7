"""What an operator can do, whichever surface they use (the CLI, the HTTP API, the demo).

Each verb takes the ledger, the acting operator and ``now``; it decides (is this allowed?),
writes an intent or a fact into the ledger, and records who did it as an event. The
controller's next tick acts on what was written. Controls are idempotent (pausing a paused
rollout changes nothing) and safe against races: each one locks the rollout's row first.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from rollout.eligibility import refusal
from rollout.gates import judge
from rollout.ledger import (
    Event,
    Ledger,
    NewRollout,
    NewStage,
    ProfileEntry,
    RolloutInfo,
    RolloutStore,
    RolloutSummary,
)
from rollout.planning import Plan, plan_targets
from rollout.profiles import Profile, ensure_installable
from rollout.spec import NAME_MAX, Gate, RolloutSpec
from rollout.states import CommandStatus, RolloutState, StageState, TargetState
from rollout.transitions import OPEN_STATES, move

#: Rollouts that may still send something.
LIVE_STATES = (
    RolloutState.DRAFT.value,
    RolloutState.RUNNING.value,
    RolloutState.PAUSED.value,
    RolloutState.HALTED.value,
)


class OperationError(ValueError):
    """The operation is not possible as asked; the message says why, in one line."""


class NotFoundError(OperationError):
    """What the operation names does not exist."""


class AlreadyRenewingError(OperationError):
    """A renewal rollout of the same (replaced, new) pair exists already."""


@dataclass(frozen=True)
class Planned:
    """A dry run: the profile the rollout would install, and its plan."""

    spec: RolloutSpec
    profile: ProfileEntry | None
    plan: Plan
    salt: str

    def as_json(self) -> dict[str, object]:
        """What ``rollouts plan`` prints."""
        return {
            "profile": self.profile.uuid if self.profile else None,
            "command": self.spec.command,
            **self.plan.as_json(self.spec.stages),
        }


def find_profile(ledger: Ledger, key: str) -> ProfileEntry:
    """The library's profile with UUID ``key``, or the only one whose UUID starts with it."""
    with ledger.library() as store:
        exact = store.get(key)
        if exact is not None:
            return exact
        found = store.find(key) if len(key.strip()) >= 4 else []
    if len(found) == 1:
        return found[0]
    if found:
        raise OperationError(f"{key!r} starts {len(found)} profiles' UUIDs: give more of it")
    raise NotFoundError(f"no profile {key} in the library")


def keep_profile(
    ledger: Ledger,
    profile: Profile,
    data: bytes,
    *,
    actor: str,
    now: dt.datetime,
    require_trusted_chain: bool = True,
) -> tuple[ProfileEntry, bool]:
    """Keep the file ``data`` (parsed into ``profile``) in the library, as ``rollout profiles
    add`` and ``POST /api/v1/profiles`` do; the entry and whether it is new.

    A profile whose signature does not match its content is refused, and so is one whose chain
    is not trusted when ``require_trusted_chain`` (:class:`~rollout.profiles.ProfileError`).
    The same file again is a no-op; a different file under a UUID already in the library
    raises :class:`~rollout.ledger.ProfileConflictError`. Nothing is written when it raises; a
    new profile is journalled (``profile.added``) with ``actor``.
    """
    ensure_installable(profile, require_trusted_chain=require_trusted_chain)
    with ledger.library() as store:
        entry, created = store.add(profile, data, now)
        if created:
            store.record(
                [Event("profile.added", {"uuid": entry.uuid, "name": entry.name, "by": actor})],
                now,
            )
    return entry, created


def plan_rollout(
    ledger: Ledger, spec: RolloutSpec, now: dt.datetime, *, server_wakes: bool = False
) -> Planned:
    """What a rollout of ``spec`` would do (writes nothing): per stage how many devices, per
    exclusion reason how many. Raises :class:`OperationError` (or
    :class:`~rollout.planning.PlanningError`) when the rollout must not happen at all.
    ``server_wakes``: the MDM server rollout delivers through wakes the devices
    (:attr:`rollout.policy.EnginePolicy.server_wakes`)."""
    profile = _profile_of(ledger, spec, now)
    salt = secrets.token_hex(8)
    with ledger.unit() as unit:
        plan = plan_targets(
            unit.registry,
            spec.targets,
            salt=salt,
            stages=spec.stages,
            command=spec.command,
            verify=spec.verify,
            profile=profile,
            server_wakes=server_wakes,
        )
        if profile is not None and spec.command == "install":
            _refuse_overlap(unit.rollouts, profile.uuid, plan)
    if plan.eligible == 0:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(plan.excluded.items()))
        raise OperationError(f"no device can take this rollout ({reasons})")
    return Planned(spec, profile, plan, salt)


def create_rollout(
    ledger: Ledger,
    spec: RolloutSpec,
    *,
    actor: str,
    now: dt.datetime,
    start: bool = False,
    replaces: str | None = None,
    server_wakes: bool = False,
) -> RolloutSummary:
    """Plan and write a rollout of ``spec`` (a draft, or running when ``start``); its summary.
    Raises :class:`OperationError` (or :class:`~rollout.planning.PlanningError`) with the
    reason it must not happen. A renewal rollout names the profile it ``replaces``; there is
    only ever one per (replaced, new) pair (:class:`AlreadyRenewingError` for a second)."""
    planned = plan_rollout(ledger, spec, now, server_wakes=server_wakes)
    profile, plan = planned.profile, planned.plan
    stages = tuple(NewStage(s.label(), s.gate.to_json()) for s in spec.stages)
    name = spec.name or _default_name(spec, profile, plan)
    ledger.prepare_partitions()  # its block ready before its targets are written
    with ledger.unit() as unit:
        if replaces is not None and profile is not None:
            for other in unit.rollouts.renewing([replaces]):
                if other.profile_uuid == profile.uuid:
                    raise AlreadyRenewingError(
                        f"rollout {other.id} already renews {replaces} with {profile.uuid}"
                    )
        if profile is not None and spec.command == "install":
            _refuse_overlap(unit.rollouts, profile.uuid, plan)  # again, under this transaction
        rollout_id = unit.rollouts.create(
            NewRollout(
                name=name,
                profile_uuid=profile.uuid if profile else None,
                salt=planned.salt,
                stages=stages,
                targets=tuple(plan.targets),
                created_by=actor,
                options={**spec.to_json(), "remove_uuid": _remove_uuid(spec, profile)},
                replaces_uuid=replaces.lower() if replaces else None,
            ),
            now,
        )
        data = {
            "by": actor,
            "profile": profile.uuid if profile else None,
            "command": spec.command,
            "selection": spec.targets.describe(),
            "replaces": replaces,
            **planned.as_json(),
        }
        unit.rollouts.record([Event("rollout.created", data, rollout_id=rollout_id)], now)
        if start:
            _start(unit.rollouts, rollout_id, actor, now)
        summary = unit.rollouts.summary(rollout_id)
    assert summary is not None
    return summary


def _profile_of(ledger: Ledger, spec: RolloutSpec, now: dt.datetime) -> ProfileEntry | None:
    if spec.command == "list":
        return None
    if spec.command == "remove":
        # The profile to remove need not be in the library: devices may hold any profile.
        with ledger.library() as store:
            return store.get(spec.profile)
    profile = find_profile(ledger, spec.profile)
    why = refusal(profile, now=now, deadline=spec.deadline)
    if why is not None:
        raise OperationError(why)
    return profile


def _remove_uuid(spec: RolloutSpec, profile: ProfileEntry | None) -> str | None:
    if spec.command != "remove":
        return None
    return profile.uuid if profile else spec.profile.strip().lower()


def _default_name(spec: RolloutSpec, profile: ProfileEntry | None, plan: Plan) -> str:
    what = {
        "install": profile.name if profile else "",
        "list": "inventory sweep",
        "remove": f"remove {spec.profile}",
    }[spec.command]
    tail = f" → {plan.eligible} devices"
    return what[: NAME_MAX - len(tail)] + tail


def _refuse_overlap(store: RolloutStore, profile_uuid: str, plan: Plan) -> None:
    """Another live rollout already installs this profile to some of these devices."""
    others = store.open_with_profile(profile_uuid, LIVE_STATES)
    mine = [t.device_id for t in plan.targets if t.excluded is None]
    live = [s.value for s in OPEN_STATES]
    overlap = store.targeted(others, mine, live)
    if overlap:
        rid, n = min(overlap.items())
        raise OperationError(
            f"rollout {rid} already installs profile {profile_uuid} to {n} of these devices "
            f"(abort it, or leave those devices out)"
        )


def _locked(store: RolloutStore, rollout_id: int) -> RolloutInfo:
    if not 0 < rollout_id < 2**63:  # ids are 64-bit; anything else names no rollout
        raise NotFoundError(f"no rollout {rollout_id}")
    rollout = store.get(rollout_id, lock=True)
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return rollout


def _start(store: RolloutStore, rollout_id: int, actor: str, now: dt.datetime) -> None:
    rollout = _locked(store, rollout_id)
    if rollout.state != RolloutState.DRAFT:
        raise OperationError(f"rollout {rollout_id} is {rollout.state}, not draft")
    store.set_state(rollout_id, RolloutState.RUNNING.value, now)
    store.set_stage(rollout_id, 0, StageState.RUNNING.value, now, current=True)
    store.record([Event("rollout.started", {"by": actor}, rollout_id=rollout_id)], now)


def start_rollout(ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime) -> None:
    """Start a draft rollout: its first stage opens and the next controller tick fans it out."""
    with ledger.rollouts() as store:
        _start(store, rollout_id, actor, now)


def pause_rollout(ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime) -> bool:
    """Stop pushing (results are still recorded); whether anything changed."""
    with ledger.rollouts() as store:
        rollout = _locked(store, rollout_id)
        if rollout.state == RolloutState.PAUSED:
            return False
        if rollout.state != RolloutState.RUNNING:
            raise OperationError(f"rollout {rollout_id} is {rollout.state}, not running")
        store.set_state(rollout_id, RolloutState.PAUSED.value, now)
        store.record([Event("rollout.paused", {"by": actor}, rollout_id=rollout_id)], now)
    return True


def resume_rollout(
    ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime, override: bool = False
) -> bool:
    """Go on pushing after a pause; whether anything changed. A rollout its gate halted only
    goes on with ``override``, which waives that stage's failed gate: the stage counts as
    passed and the next one opens."""
    with ledger.rollouts() as store:
        rollout = _locked(store, rollout_id)
        if rollout.state == RolloutState.RUNNING:
            return False
        if rollout.state == RolloutState.HALTED:
            if not override:
                raise OperationError(
                    f"rollout {rollout_id} was halted by its gate ({rollout.reason}); "
                    "resume it with --override to waive that gate"
                )
            _waive_gate(store, rollout, now)
        elif rollout.state != RolloutState.PAUSED:
            raise OperationError(f"rollout {rollout_id} is {rollout.state}: nothing to resume")
        store.set_state(rollout_id, RolloutState.RUNNING.value, now)
        store.set_reason(rollout_id, None, now)
        data = {"by": actor, "override": override}
        store.record([Event("rollout.resumed", data, rollout_id=rollout_id)], now)
    return True


def _waive_gate(store: RolloutStore, rollout: RolloutInfo, now: dt.datetime) -> None:
    stage = rollout.current_stage
    store.set_stage(rollout.id, stage, StageState.PASSED.value, now)
    if stage + 1 < len(store.stages(rollout.id)):
        store.set_stage(rollout.id, stage + 1, StageState.RUNNING.value, now, current=True)


def abort_rollout(ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime) -> bool:
    """Stop for good: commands not yet delivered are cancelled (a device checking in later
    gets nothing of this rollout) and open targets end ``cancelled``; whether anything
    changed."""
    with ledger.rollouts() as store:
        rollout = _locked(store, rollout_id)
        if rollout.state == RolloutState.ABORTED:
            return False
        if rollout.state == RolloutState.COMPLETED:
            raise OperationError(f"rollout {rollout_id} is completed: nothing to abort")
        undelivered = (CommandStatus.QUEUED.value, CommandStatus.NOT_NOW.value)
        cancelled = store.cancel_undelivered(rollout_id, undelivered, now)
        waiting = (
            TargetState.PLANNED,
            TargetState.QUEUED,
            TargetState.PUSHED,
            TargetState.DEFERRED,
            TargetState.UNREACHABLE,
        )
        targets = store.target_ids(rollout_id, [s.value for s in waiting])
        store.move(
            [move(t, TargetState.CANCELLED, reason="aborted", finished_at=now) for t in targets],
            now,
        )
        store.set_state(rollout_id, RolloutState.ABORTED.value, now)
        data = {"by": actor, "commands_cancelled": cancelled, "targets_cancelled": len(targets)}
        store.record([Event("rollout.aborted", data, rollout_id=rollout_id)], now)
    return True


def approve_stage(ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime) -> int:
    """Promote a stage that passed its gate and waits for approval; the stage opened."""
    with ledger.rollouts() as store:
        rollout = _locked(store, rollout_id)
        stages = store.stages(rollout_id)
        current = stages[rollout.current_stage]
        if current.state != StageState.WAITING:
            raise OperationError(
                f"rollout {rollout_id}'s stage {current.number} ({current.label}) is "
                f"{current.state}, not waiting for approval"
            )
        nxt = current.number + 1
        if nxt >= len(stages):
            raise OperationError(f"rollout {rollout_id} has no stage after {current.number}")
        store.set_stage(rollout_id, current.number, StageState.PASSED.value, now)
        store.set_stage(rollout_id, nxt, StageState.RUNNING.value, now, current=True)
        data = {"by": actor, "stage": nxt, "approved": current.number}
        store.record([Event("rollout.promoted", data, rollout_id=rollout_id)], now)
    return nxt


def retry_targets(
    ledger: Ledger,
    rollout_id: int,
    *,
    actor: str,
    now: dt.datetime,
    reasons: tuple[str, ...] | None = None,
) -> int:
    """Queue failed and timed-out targets again (only those failed for one of ``reasons``,
    e.g. ``MCProvisioningProfileErrorDomain:25001``, when given); how many. A completed
    rollout runs again."""
    with ledger.rollouts() as store:
        rollout = _locked(store, rollout_id)
        if rollout.state in (RolloutState.ABORTED, RolloutState.DRAFT):
            raise OperationError(f"rollout {rollout_id} is {rollout.state}: nothing to retry")
        again = store.target_ids(
            rollout_id,
            [TargetState.FAILED.value, TargetState.TIMED_OUT.value],
            reasons=reasons,
        )
        applied = store.move(
            [
                move(
                    t,
                    TargetState.PLANNED,
                    command_uuid=None,
                    reason=None,
                    error_chain=None,
                    next_push_at=None,
                    finished_at=None,
                    push_count=0,
                    notnow_count=0,
                )
                for t in again
            ],
            now,
        )
        if applied and rollout.state == RolloutState.COMPLETED:
            store.set_state(rollout_id, RolloutState.RUNNING.value, now)
        data = {"by": actor, "targets": len(applied), "reasons": list(reasons or [])}
        store.record([Event("rollout.retried", data, rollout_id=rollout_id)], now)
    return len(applied)


def rollout_summary(ledger: Ledger, rollout_id: int) -> RolloutSummary:
    """A rollout and its targets by stage, state and reason."""
    if not 0 < rollout_id < 2**63:
        raise NotFoundError(f"no rollout {rollout_id}")
    with ledger.rollouts() as store:
        summary = store.summary(rollout_id)
    if summary is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return summary


def rollout_report(ledger: Ledger, rollout_id: int, now: dt.datetime) -> dict[str, Any]:
    """A rollout's summary as JSON, with each stage's reach, state, counts and gate verdict
    (judged now, from the kept counters)."""
    if not 0 < rollout_id < 2**63:
        raise NotFoundError(f"no rollout {rollout_id}")
    with ledger.rollouts() as store:
        summary = store.summary(rollout_id)
        stages = store.stages(rollout_id)
    if summary is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    out = summary.as_json()
    out["rollout"]["reason"] = summary.rollout.reason
    out["rollout"]["current_stage"] = summary.rollout.current_stage
    counted = dict(summary.stages)
    out["stages"] = []
    for stage in stages:
        counts = counted.get(stage.number, {})
        verdict = judge(Gate.from_json(stage.gate), counts, stage.started_at, now)
        out["stages"].append(
            {
                "stage": stage.number,
                "reach": stage.label,
                "state": stage.state,
                "states": counts,
                "gate": {"verdict": verdict.kind, "why": verdict.why, **verdict.figures},
            }
        )
    return out


def list_rollouts(ledger: Ledger) -> list[RolloutInfo]:
    """Every rollout, newest first."""
    with ledger.rollouts() as store:
        return store.recent()
