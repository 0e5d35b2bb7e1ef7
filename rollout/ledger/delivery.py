"""Storage for delivery through another MDM server (NanoMDM): which command each target waits
on, which commands were handed to the server, and which the server still has to forget.

Like the rest of the ledger it stores and reads; what a missing answer or an abort means is
decided by :mod:`rollout.delivery`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import CommandRow, DeviceRow, RolloutRow, TargetRow
from rollout.ledger.moves import chunks, move_targets
from rollout.ledger.records import AppliedMove, HandedCommand, Move, OpenCommand
from rollout.states import CommandStatus, RolloutState

_OPEN = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)


def _open_command_select() -> Any:
    """The columns of an :class:`OpenCommand` (target, command, its device's enrollment id)."""
    return select(
        CommandRow.target_id,
        CommandRow.id,
        CommandRow.command_uuid,
        CommandRow.request_type,
        CommandRow.status,
        CommandRow.body,
        CommandRow.rollout_id,
        DeviceRow.enrollment_id,
    ).join(DeviceRow, DeviceRow.id == CommandRow.device_id)


class DeliveryLedger(Journaled):
    """The delivery path's view of the ledger, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def open_commands(self, target_ids: Sequence[int]) -> dict[int, OpenCommand]:
        """Each target's newest command with no final answer, with its device's enrollment
        id; targets without one are left out."""
        found: dict[int, OpenCommand] = {}
        for chunk in chunks(list(target_ids)):
            rows = self._session.execute(
                _open_command_select()
                .where(CommandRow.target_id.in_(list(chunk)), CommandRow.status.in_(_OPEN))
                .order_by(CommandRow.id)
            ).all()
            for tid, cid, uuid, rtype, status, body, rid, key in rows:
                if tid is not None:
                    found[tid] = OpenCommand(tid, cid, uuid, rtype, status, body, rid, key)
        return found

    def share_command_uuid(self, commands: Sequence[OpenCommand], command_uuid: str) -> None:
        """Give these commands (one per device) and their targets one CommandUUID, to be
        handed over in one call."""
        ids = [c.command_id for c in commands]
        targets = [c.target_id for c in commands]
        for chunk in chunks(ids):
            self._session.execute(
                update(CommandRow)
                .where(CommandRow.id.in_(list(chunk)))
                .values(command_uuid=command_uuid)
            )
        for chunk in chunks(targets):
            self._session.execute(
                update(TargetRow)
                .where(TargetRow.id.in_(list(chunk)))
                .values(command_uuid=command_uuid)
            )

    def unhanded(self, target_states: Collection[str], limit: int = 5000) -> list[OpenCommand]:
        """Queued commands with a body of their own (made for one device, e.g. a clean-up)
        whose targets are in ``target_states``: no fan-out batch will hand them over."""
        rows = self._session.execute(
            _open_command_select()
            .join(TargetRow, TargetRow.id == CommandRow.target_id)
            .where(
                CommandRow.status == CommandStatus.QUEUED.value,
                CommandRow.body.is_not(None),
                TargetRow.state.in_(list(target_states)),
            )
            .order_by(CommandRow.id)
            .limit(limit)
        ).all()
        return [
            OpenCommand(int(tid or 0), cid, uuid, rtype, status, body, rid, key)
            for tid, cid, uuid, rtype, status, body, rid, key in rows
        ]

    def mark_handed(self, command_ids: Sequence[int], now: dt.datetime) -> None:
        """These queued commands are now in the other server's queue."""
        for chunk in chunks(list(command_ids)):
            self._session.execute(
                update(CommandRow)
                .where(
                    CommandRow.id.in_(list(chunk)),
                    CommandRow.status == CommandStatus.QUEUED.value,
                )
                .values(status=CommandStatus.SENT.value, sent_at=now)
            )

    def unanswered(
        self, sent_before: dt.datetime, target_states: Collection[str], limit: int = 5000
    ) -> list[HandedCommand]:
        """Commands handed to the other server before ``sent_before`` with no answer yet,
        whose targets are in ``target_states``; oldest first."""
        rows = self._session.execute(
            select(
                CommandRow.id,
                CommandRow.command_uuid,
                CommandRow.target_id,
                DeviceRow.enrollment_id,
            )
            .join(DeviceRow, DeviceRow.id == CommandRow.device_id)
            .join(TargetRow, TargetRow.id == CommandRow.target_id)
            .where(
                CommandRow.status == CommandStatus.SENT.value,
                CommandRow.sent_at < sent_before,
                TargetRow.state.in_(list(target_states)),
            )
            .order_by(CommandRow.sent_at, CommandRow.id)
            .limit(limit)
        ).all()
        return [HandedCommand(cid, uuid, tid, key) for cid, uuid, tid, key in rows]

    def to_withdraw(self, limit: int = 5000) -> list[HandedCommand]:
        """Commands of aborted rollouts that were handed to the other server and never
        answered: that server may still hold them."""
        rows = self._session.execute(
            select(
                CommandRow.id,
                CommandRow.command_uuid,
                CommandRow.target_id,
                DeviceRow.enrollment_id,
            )
            .join(DeviceRow, DeviceRow.id == CommandRow.device_id)
            .join(RolloutRow, RolloutRow.id == CommandRow.rollout_id)
            .where(
                RolloutRow.state == RolloutState.ABORTED.value,
                CommandRow.sent_at.is_not(None),
                CommandRow.status.in_(
                    [
                        CommandStatus.SENT.value,
                        CommandStatus.NOT_NOW.value,
                        CommandStatus.INACTIVE.value,
                    ]
                ),
            )
            .order_by(CommandRow.id)
            .limit(limit)
        ).all()
        return [HandedCommand(cid, uuid, tid, key) for cid, uuid, tid, key in rows]

    def set_status(self, command_ids: Sequence[int], status: str, now: dt.datetime) -> None:
        """Give these commands ``status`` (an end: inactive or withdrawn)."""
        for chunk in chunks(list(command_ids)):
            self._session.execute(
                update(CommandRow)
                .where(CommandRow.id.in_(list(chunk)))
                .values(status=status, result_at=now)
            )

    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]:
        """Apply target moves (compare-and-set, see :class:`~rollout.ledger.records.Move`)."""
        return move_targets(self._session, moves, now)
