"""Rollouts in the ledger: creating one with its targets, and queueing targets' commands."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid as uuidlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from rollout.ledger.events import record_event
from rollout.ledger.models import CommandRow, ProfileRow, RolloutRow, StageRow, TargetRow
from rollout.ledger.targets import Move, bump_counters, init_counters, move_targets
from rollout.ledger.types import utcnow
from rollout.states import RolloutState, TargetState

INSTALL_REQUEST_TYPE = "InstallProvisioningProfile"


class RolloutError(ValueError):
    """A rollout cannot be created or changed as asked."""


def create_rollout(
    session: Session,
    *,
    name: str,
    profile_uuid: str,
    device_ids: Sequence[int],
    options: dict[str, Any] | None = None,
    created_by: str | None = None,
) -> RolloutRow:
    """A draft rollout of one profile to ``device_ids``, in one stage, every target planned."""
    if session.get(ProfileRow, profile_uuid) is None:
        raise RolloutError(f"no profile {profile_uuid} in the library")
    rollout = RolloutRow(
        name=name,
        profile_uuid=profile_uuid,
        salt=secrets.token_hex(8),
        options=options or {},
        created_by=created_by,
        state=RolloutState.DRAFT,
    )
    session.add(rollout)
    session.flush()
    session.add(StageRow(rollout_id=rollout.id, number=0, fraction=1.0))
    init_counters(session, rollout.id, [0])
    ids = sorted(set(device_ids))
    now = utcnow()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        session.execute(
            insert(TargetRow),
            [
                {"rollout_id": rollout.id, "device_id": d, "stage": 0, "updated_at": now}
                for d in chunk
            ],
        )
    bump_counters(session, Counter({(rollout.id, 0, TargetState.PLANNED.value): len(ids)}))
    record_event(
        session,
        "rollout.created",
        rollout_id=rollout.id,
        data={"name": name, "profile": profile_uuid, "targets": len(ids)},
    )
    return rollout


def start_rollout(session: Session, rollout_id: int) -> None:
    """Move a draft rollout to running."""
    rollout = session.get(RolloutRow, rollout_id, with_for_update=True)
    if rollout is None:
        raise RolloutError(f"no rollout {rollout_id}")
    if rollout.state != RolloutState.DRAFT:
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}, not draft")
    rollout.state = RolloutState.RUNNING
    rollout.started_at = utcnow()
    record_event(session, "rollout.started", rollout_id=rollout_id)


def queue_commands(
    session: Session,
    rollout_id: int,
    target_ids: Sequence[int],
    *,
    next_push_at: dt.datetime | None = None,
) -> list[str]:
    """Give planned targets their command row (one statement) and move them to queued.

    A target that already has a CommandUUID keeps it. Returns the CommandUUIDs queued.
    """
    if not target_ids:
        return []
    rows = session.execute(
        select(TargetRow.id, TargetRow.device_id, TargetRow.command_uuid, TargetRow.state)
        .where(TargetRow.id.in_(list(target_ids)), TargetRow.rollout_id == rollout_id)
        .order_by(TargetRow.id)
        .with_for_update()
    ).all()
    now = utcnow()
    new_commands: list[dict[str, Any]] = []
    moves: list[Move] = []
    uuids: list[str] = []
    for tid, device_id, existing, state in rows:
        if state != TargetState.PLANNED:
            continue
        cmd = existing or str(uuidlib.uuid4()).upper()
        if existing is None:
            new_commands.append(
                {
                    "command_uuid": cmd,
                    "device_id": device_id,
                    "rollout_id": rollout_id,
                    "request_type": INSTALL_REQUEST_TYPE,
                    "status": "queued",
                    "priority": 0,
                    "notnow_count": 0,
                    "created_at": now,
                }
            )
        moves.append(
            Move(tid, TargetState.QUEUED, {"command_uuid": cmd, "next_push_at": next_push_at})
        )
        uuids.append(cmd)
    if new_commands:
        session.execute(insert(CommandRow), new_commands)
    move_targets(session, moves)
    return uuids


def rollout_profile_content(session: Session, rollout_id: int) -> bytes | None:
    """The signed profile file a rollout installs (to render its command body once)."""
    return session.scalar(
        select(ProfileRow.content)
        .join(RolloutRow, RolloutRow.profile_uuid == ProfileRow.uuid)
        .where(RolloutRow.id == rollout_id)
    )
