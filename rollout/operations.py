"""What an operator can do, whichever surface they use (the CLI, the HTTP API, the demo).

Each verb takes the ledger, the acting operator and ``now``; it decides (is this allowed?),
writes an intent or a fact into the ledger, and records who did it. The controller's next tick
acts on what was written.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

from rollout.ledger import (
    Event,
    Ledger,
    NewRollout,
    ProfileEntry,
    RolloutInfo,
    RolloutStore,
    RolloutSummary,
)
from rollout.planning import SINGLE_STAGE, TargetSpec, assign_stages, select_targets
from rollout.states import RolloutState


class OperationError(ValueError):
    """The operation is not possible as asked; the message says why, in one line."""


class NotFoundError(OperationError):
    """What the operation names does not exist."""


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


def create_rollout(
    ledger: Ledger,
    *,
    profile_uuid: str,
    spec: TargetSpec,
    actor: str,
    now: dt.datetime,
    name: str = "",
    stages: Sequence[float] = SINGLE_STAGE,
    start: bool = False,
) -> RolloutSummary:
    """Plan a rollout of a library profile (its UUID, or a unique start of it) to the devices
    ``spec`` selects (a draft, or running when ``start``); its summary. Raises
    :class:`OperationError` (or :class:`~rollout.planning.PlanningError`) with the reason."""
    salt = secrets.token_hex(8)
    profile = find_profile(ledger, profile_uuid)
    with ledger.unit() as unit:
        devices = select_targets(unit.registry, spec)
        rollout_id = unit.rollouts.create(
            NewRollout(
                name=name or f"{profile.name} → {len(devices)} devices",
                profile_uuid=profile.uuid,
                salt=salt,
                stages=tuple(stages),
                targets=assign_stages(devices, salt, stages),
                created_by=actor,
            ),
            now,
        )
        unit.rollouts.record(
            [
                Event(
                    "rollout.created",
                    {
                        "by": actor,
                        "profile": profile.uuid,
                        "targets": len(devices),
                        "selection": spec.describe(),
                    },
                    rollout_id=rollout_id,
                )
            ],
            now,
        )
        if start:
            _start(unit.rollouts, rollout_id, actor, now)
        summary = unit.rollouts.summary(rollout_id)
    assert summary is not None
    return summary


def start_rollout(ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime) -> None:
    """Start a draft rollout: the next controller tick fans it out."""
    with ledger.rollouts() as store:
        _start(store, rollout_id, actor, now)


def _check_id(rollout_id: int) -> None:
    # Ids are 64-bit in the ledger: anything else names no rollout (and must not reach SQL).
    if not 0 < rollout_id < 2**63:
        raise NotFoundError(f"no rollout {rollout_id}")


def _start(store: RolloutStore, rollout_id: int, actor: str, now: dt.datetime) -> None:
    _check_id(rollout_id)
    rollout = store.get(rollout_id, lock=True)
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    if rollout.state != RolloutState.DRAFT:
        raise OperationError(f"rollout {rollout_id} is {rollout.state}, not draft")
    store.set_state(rollout_id, RolloutState.RUNNING.value, now)
    store.record([Event("rollout.started", {"by": actor}, rollout_id=rollout_id)], now)


def rollout_summary(ledger: Ledger, rollout_id: int) -> RolloutSummary:
    """A rollout and its targets by stage, state and reason."""
    _check_id(rollout_id)
    with ledger.rollouts() as store:
        summary = store.summary(rollout_id)
    if summary is None:
        raise NotFoundError(f"no rollout {rollout_id}")
    return summary


def list_rollouts(ledger: Ledger) -> list[RolloutInfo]:
    """Every rollout, newest first."""
    with ledger.rollouts() as store:
        return store.recent()
