"""The check-in path's storage: enrollments, the per-device command queue and report writes.

The MDM endpoint (and any webhook receiver) reads what it needs with a handful of batch
queries, decides in :mod:`rollout.reconcile` / :mod:`rollout.enrollment`, and hands back one
:class:`~rollout.ledger.records.ReportWrites` that :meth:`CheckinLedger.apply_reports` writes
in a fixed number of statements whatever the batch size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, insert, literal, select, update
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled, record_events
from rollout.ledger.models import (
    CommandRow,
    DeviceRow,
    InstalledProfileRow,
    ProfileRow,
    RolloutRow,
    TargetRow,
)
from rollout.ledger.moves import among, apply_moves, chunks, move_targets, plan_moves
from rollout.ledger.profiles_held import record_installs, record_profile_lists, record_removals
from rollout.ledger.records import (
    AppliedMove,
    Authentication,
    CommandResultWrite,
    CommandState,
    EnrolledDevice,
    Move,
    NewCommand,
    PushRegistration,
    QueuedCommand,
    ReportWrites,
    RolloutFacts,
)
from rollout.ledger.rollouts import profile_content_of
from rollout.ledger.sealing import PLAIN, Sealer
from rollout.states import CommandStatus, EnrollmentState, TokenState

_DEVICE_DETAILS = frozenset(
    {"os_version", "build_version", "product_name", "serial_number", "device_name", "model",
     "platform"}
)  # fmt: skip
_SERVABLE = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)


class CheckinLedger(Journaled):
    """The check-in path's view of the ledger, inside one transaction."""

    def __init__(self, session: Session, sealer: Sealer = PLAIN) -> None:
        self._session = session
        self._sealer = sealer

    # ---- enrollments ---------------------------------------------------------------------

    def device(self, key: str, *, lock: bool = True) -> EnrolledDevice | None:
        """The enrollment with this UDID / EnrollmentID (row-locked by default), or None."""
        q = select(
            DeviceRow.id, DeviceRow.enrollment_id, DeviceRow.enrollment_state,
            DeviceRow.identity_sha256,
        ).where(DeviceRow.enrollment_id == key)  # fmt: skip
        if lock:
            q = q.with_for_update()
        row = self._session.execute(q).first()
        return EnrolledDevice(*row) if row is not None else None

    def certificate_holder(self, cert_sha256: str) -> str | None:
        """The enrollment a certificate is bound to, if any."""
        return self._session.scalar(
            select(DeviceRow.enrollment_id).where(DeviceRow.identity_sha256 == cert_sha256)
        )

    def authenticate(self, auth: Authentication, now: dt.datetime) -> int:
        """Store an accepted Authenticate: create the device or update it; its id.

        The device becomes ``authenticated`` (not pushable until its TokenUpdate); a topic or
        certificate not given keeps the stored one.
        """
        s = self._session
        device = s.scalar(
            select(DeviceRow).where(DeviceRow.enrollment_id == auth.key).with_for_update()
        )
        if device is None:
            device = DeviceRow(
                enrollment_id=auth.key,
                udid=auth.udid,
                enrollment_type=auth.enrollment_type,
                created_at=now,
                tags=[],
            )
            s.add(device)
        device.enrollment_state = EnrollmentState.AUTHENTICATED
        device.topic = auth.topic or device.topic
        device.identity_sha256 = auth.identity_sha256 or device.identity_sha256
        device.last_seen_at = now
        device.checked_out_at = None
        device.updated_at = now
        for key, value in auth.details.items():
            if key in _DEVICE_DETAILS and value is not None:
                setattr(device, key, value)
        s.flush()
        return device.id

    def register_push(self, device_id: int, reg: PushRegistration, now: dt.datetime) -> bool:
        """Store an accepted TokenUpdate: the device is enrolled and pushable again.

        Returns whether this is its first TokenUpdate since it (re-)authenticated.
        """
        device = self._session.get(DeviceRow, device_id, with_for_update=True)
        assert device is not None
        first = device.enrolled_at is None or device.enrollment_state != EnrollmentState.ENROLLED
        owner = device.enrollment_id
        device.push_token = self._sealer.seal(reg.token_hex, "push_token", owner)
        device.push_magic = self._sealer.seal(reg.push_magic, "push_magic", owner)
        device.topic = reg.topic or device.topic
        device.token_state = TokenState.ACTIVE
        device.token_dead_at = None
        device.enrollment_state = EnrollmentState.ENROLLED
        device.enrolled_at = device.enrolled_at or now
        device.checked_out_at = None
        device.last_seen_at = now
        device.updated_at = now
        self._session.flush()
        return first

    def check_out(self, device_id: int, now: dt.datetime) -> None:
        """Store a CheckOut: the device has left management."""
        self._session.execute(
            update(DeviceRow)
            .where(DeviceRow.id == device_id)
            .values(
                enrollment_state=EnrollmentState.CHECKED_OUT.value,
                checked_out_at=now,
                last_seen_at=now,
                updated_at=now,
            )
        )

    def forget_profiles(self, device_id: int) -> None:
        """Drop what the inventory says the device holds."""
        self._session.execute(
            delete(InstalledProfileRow).where(InstalledProfileRow.device_id == device_id)
        )

    def bind_identity(self, device_id: int, cert_sha256: str) -> None:
        """Bind a certificate to a device."""
        self._session.execute(
            update(DeviceRow).where(DeviceRow.id == device_id).values(identity_sha256=cert_sha256)
        )

    def drop_open_commands(self, device_id: int, now: dt.datetime) -> list[str]:
        """Mark the device's commands without a final answer inactive; their CommandUUIDs."""
        s = self._session
        rows = s.execute(
            select(CommandRow.id, CommandRow.command_uuid).where(
                CommandRow.device_id == device_id, CommandRow.status.in_(_SERVABLE)
            )
        ).all()
        if rows:
            s.execute(
                update(CommandRow)
                .where(CommandRow.id.in_([r.id for r in rows]))
                .values(status=CommandStatus.INACTIVE.value, result_at=now)
            )
        return [r.command_uuid for r in rows]

    def device_targets(
        self,
        device_id: int,
        states: Collection[str],
        *,
        command_uuids: Collection[str] | None = None,
        flagged: bool = False,
    ) -> list[int]:
        """Ids of the device's targets in ``states`` (and holding one of ``command_uuids``
        when given); with ``flagged``, also those waiting for the device's next TokenUpdate."""
        cond: ColumnElement[bool] = TargetRow.state.in_(list(states))
        if command_uuids is not None:
            cond = and_(cond, TargetRow.command_uuid.in_(list(command_uuids)))
        if flagged:
            cond = cond | TargetRow.requeue_after_token_update.is_(True)
        return list(
            self._session.scalars(
                select(TargetRow.id).where(TargetRow.device_id == device_id, cond)
            )
        )

    def flag_for_token_update(self, target_ids: Sequence[int], flagged: bool) -> None:
        """Mark targets as waiting for their device's next TokenUpdate (or clear the mark)."""
        for chunk in chunks(list(target_ids)):
            self._session.execute(
                update(TargetRow)
                .where(TargetRow.id.in_(list(chunk)))
                .values(requeue_after_token_update=flagged)
            )

    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]:
        """Apply target moves (compare-and-set, see :class:`~rollout.ledger.records.Move`)."""
        return move_targets(self._session, moves, now)

    # ---- connect reports -----------------------------------------------------------------

    def devices(self, keys: Collection[str]) -> dict[str, EnrolledDevice]:
        """The enrollments among ``keys`` (not locked: a report only reads them)."""
        conn = self._session.connection()
        out: dict[str, EnrolledDevice] = {}
        q = select(
            DeviceRow.id, DeviceRow.enrollment_id, DeviceRow.enrollment_state,
            DeviceRow.identity_sha256,
        ).where(among(conn, DeviceRow.enrollment_id))  # fmt: skip
        for chunk in chunks(sorted(set(keys))):
            for row in conn.execute(q, {"ids": list(chunk)}):
                out[row.enrollment_id] = EnrolledDevice(*row)
        return out

    def commands(
        self, command_uuids: Collection[str], device_ids: Collection[int] = ()
    ) -> dict[tuple[str, int], CommandState]:
        """The commands among ``command_uuids`` by (CommandUUID, device id), each with its
        rollout target if it has one. One CommandUUID may name one command per device (a
        command handed to NanoMDM for many devices at once): with ``device_ids`` only those
        devices' commands are read, and for a CommandUUID none of them holds, the other
        devices' (so that an answer about another device's command can be told from one
        about no command)."""
        conn = self._session.connection()
        q = select(
            CommandRow.id,
            CommandRow.command_uuid,
            CommandRow.device_id,
            CommandRow.rollout_id,
            CommandRow.request_type,
            CommandRow.status,
            CommandRow.notnow_count,
            TargetRow.id,
            TargetRow.notnow_count,
            TargetRow.state,
            TargetRow.verify_attempts,
        ).outerjoin(TargetRow, TargetRow.id == CommandRow.target_id)
        out: dict[tuple[str, int], CommandState] = {}
        wanted = sorted(set(command_uuids))
        devices = sorted(set(device_ids))
        if devices:
            of_devices = q.where(
                among(conn, CommandRow.command_uuid), among(conn, CommandRow.device_id, "devices")
            )
            for chunk in chunks(wanted):
                for row in conn.execute(of_devices, {"ids": list(chunk), "devices": devices}):
                    self._keep(out, row)
            found = {uuid for uuid, _ in out}
            wanted = [u for u in wanted if u not in found]
        anyone = q.where(among(conn, CommandRow.command_uuid))
        for chunk in chunks(wanted):
            for row in conn.execute(anyone, {"ids": list(chunk)}):
                self._keep(out, row)
        return out

    @staticmethod
    def _keep(out: dict[tuple[str, int], CommandState], row: Any) -> None:
        cid, uuid, device_id, rollout_id, rtype, status, notnow, target_id = row[:8]
        out[(uuid, device_id)] = CommandState(
            cid,
            uuid,
            device_id,
            rollout_id,
            rtype,
            status,
            notnow,
            target_id,
            target_notnow=row[8] or 0,
            target_state=row[9],
            verify_attempts=row[10] or 0,
        )

    def open_commands(self, device_ids: Collection[int]) -> dict[int, list[QueuedCommand]]:
        """Each device's commands without a final answer, in serving order (priority, age)."""
        conn = self._session.connection()
        q = (
            select(
                CommandRow.id,
                CommandRow.command_uuid,
                CommandRow.device_id,
                CommandRow.rollout_id,
                CommandRow.request_type,
                CommandRow.status,
                CommandRow.body,
                CommandRow.target_id,
                CommandRow.expires_at,
            )
            .where(among(conn, CommandRow.device_id), CommandRow.status.in_(_SERVABLE))
            .order_by(CommandRow.device_id, CommandRow.priority.desc(), CommandRow.id)
        )
        queue: dict[int, list[QueuedCommand]] = {}
        for chunk in chunks(sorted(set(device_ids))):
            for row in conn.execute(q, {"ids": list(chunk)}):
                queue.setdefault(row.device_id, []).append(QueuedCommand(*row))
        return queue

    def apply_reports(self, writes: ReportWrites, now: dt.datetime) -> None:
        """Write a batch's results, served commands, target moves, sightings, bindings,
        installed-profile facts and events, stamped ``now``.

        Only the target locks and the installed-profile lookups read anything; every other
        statement goes out in one psycopg pipeline on PostgreSQL.
        """
        session = self._session
        conn = session.connection()
        record_installs(session, writes.installs, now)
        record_removals(session, writes.removals)
        record_profile_lists(session, writes.profile_lists, now)
        # Commands made in this batch (verifications, clean-ups) are rare; an executemany
        # INSERT does not run inside psycopg's pipeline, so they go first.
        _insert_commands(conn, writes.new_commands, now)
        plan = plan_moves(conn, writes.moves, now)
        with _pipeline(conn):
            _update_results(conn, writes.results, now)
            _mark_sent(conn, writes.sent, now)
            apply_moves(session, conn, plan)
            _seen(conn, writes.seen, now)
            if writes.binds:
                conn.execute(
                    update(DeviceRow)
                    .where(DeviceRow.id == bindparam("b_id"))
                    .values(identity_sha256=bindparam("v_sha")),
                    [{"b_id": d, "v_sha": sha} for d, sha in writes.binds],
                )
            record_events(session, writes.events, now)

    def rollout_profile(self, rollout_id: int) -> bytes | None:
        """The signed profile file a rollout installs (its command body is rendered once)."""
        return profile_content_of(self._session, rollout_id)

    def rollout_facts(self, rollout_ids: Collection[int]) -> dict[int, RolloutFacts]:
        """State, profile (UUID and expiry) and options of each rollout named."""
        if not rollout_ids:
            return {}
        rows = self._session.execute(
            select(
                RolloutRow.id,
                RolloutRow.state,
                RolloutRow.profile_uuid,
                ProfileRow.expires_at,
                RolloutRow.options,
            )
            .outerjoin(ProfileRow, ProfileRow.uuid == RolloutRow.profile_uuid)
            .where(RolloutRow.id.in_(sorted(rollout_ids)))
        )
        return {r[0]: RolloutFacts(r[0], r[1], r[2], r[3], dict(r[4] or {})) for r in rows}

    def enqueue(
        self,
        device_id: int,
        command_uuid: str,
        request_type: str,
        body: bytes,
        now: dt.datetime,
        *,
        priority: int = 0,
    ) -> None:
        """Queue one command with its own body for a device (outside any rollout)."""
        self._session.add(
            CommandRow(
                command_uuid=command_uuid,
                device_id=device_id,
                request_type=request_type,
                body=body,
                priority=priority,
                status=CommandStatus.QUEUED.value,
                created_at=now,
            )
        )
        self._session.flush()

    def installed(self, device_id: int) -> list[tuple[str, str]]:
        """``(profile uuid, source)`` of what a device is known to hold (for tests and tools)."""
        return [
            (u, src)
            for u, src in self._session.execute(
                select(InstalledProfileRow.profile_uuid, InstalledProfileRow.source)
                .where(InstalledProfileRow.device_id == device_id)
                .order_by(InstalledProfileRow.profile_uuid)
            )
        ]


@contextlib.contextmanager
def _pipeline(conn: Any) -> Iterator[None]:
    """On PostgreSQL, send the statements inside in psycopg's pipeline mode: writes whose
    results nobody reads go out together instead of one round trip each."""
    driver: Any = getattr(conn.connection, "driver_connection", None)
    if conn.dialect.name != "postgresql" or not hasattr(driver, "pipeline"):
        yield
        return
    with driver.pipeline():
        yield


def _seen(conn: Any, device_ids: Sequence[int], now: dt.datetime) -> None:
    """Every device of the batch was seen at ``now``: one statement, whatever the batch."""
    ids = sorted(set(device_ids))
    stmt = update(DeviceRow).where(among(conn, DeviceRow.id)).values(last_seen_at=now)
    for chunk in chunks(ids):
        conn.execute(stmt, {"ids": list(chunk)})


def _update_results(conn: Any, updates: Sequence[CommandResultWrite], now: dt.datetime) -> None:
    """Store the batch's results: rows that get the same values share one UPDATE … IN.

    A batch is mostly the same answer (Acknowledged, no chain, no extra keys), so this is one
    statement for the whole batch in the common case instead of one per row.
    """
    groups: dict[str, tuple[CommandResultWrite, list[int]]] = {}
    for u in updates:
        key = json.dumps(
            [u.status, u.notnow_count, u.error_chain, u.result], sort_keys=True, default=str
        )
        groups.setdefault(key, (u, []))[1].append(u.command_id)
    chain_type = CommandRow.__table__.c.error_chain.type
    result_type = CommandRow.__table__.c.result.type
    for first, ids in groups.values():
        first_notnow: Any = CommandRow.first_notnow_at
        if first.status == CommandStatus.NOT_NOW.value:
            first_notnow = case(
                (CommandRow.first_notnow_at.is_(None), literal(now, CommandRow.result_at.type)),
                else_=CommandRow.first_notnow_at,
            )
        stmt = (
            update(CommandRow)
            .where(among(conn, CommandRow.id))
            .values(
                status=first.status,
                result_at=now,
                notnow_count=first.notnow_count,
                first_notnow_at=first_notnow,
                error_chain=bindparam("v_chain", type_=chain_type),
                result=bindparam("v_result", type_=result_type),
            )
        )
        for chunk in chunks(ids):
            conn.execute(
                stmt, {"ids": list(chunk), "v_chain": first.error_chain, "v_result": first.result}
            )


def _insert_commands(conn: Any, commands: Sequence[NewCommand], now: dt.datetime) -> None:
    if not commands:
        return
    sent = CommandStatus.SENT.value
    conn.execute(
        insert(CommandRow),
        [
            {
                "command_uuid": c.command_uuid,
                "device_id": c.device_id,
                "rollout_id": c.rollout_id,
                "target_id": c.target_id,
                "request_type": c.request_type,
                "body": c.body,
                "status": c.status,
                "priority": 0,
                "notnow_count": 0,
                "created_at": now,
                "sent_at": now if c.status == sent else None,
            }
            for c in commands
        ],
    )


def _mark_sent(conn: Any, command_ids: Sequence[int], now: dt.datetime) -> None:
    sent = (
        update(CommandRow)
        .where(among(conn, CommandRow.id))
        .values(status=CommandStatus.SENT.value, sent_at=now)
    )
    for chunk in chunks(list(command_ids)):
        conn.execute(sent, {"ids": list(chunk)})
