"""The per-device command queue, and reconciling devices' reports into the ledger.

``process_reports`` is the connect endpoint's whole ledger work for a batch of requests that
arrived together: a fixed handful of statements whatever the batch size. Each report's result
is persisted first (idempotent on the CommandUUID), then the device's next command is chosen
and marked as sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    Text,
    and_,
    bindparam,
    case,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from rollout.ledger.events import record_events
from rollout.ledger.installed import record_installs, record_profile_lists
from rollout.ledger.models import CommandRow, DeviceRow, EventRow, TargetRow
from rollout.ledger.targets import CHUNK, Move, among, apply_moves, plan_moves
from rollout.ledger.types import utcnow
from rollout.states import FINAL_COMMAND_STATUSES, CommandStatus, EnrollmentState, TargetState

_STATUS_TO_COMMAND = {
    "Acknowledged": CommandStatus.ACKNOWLEDGED,
    "Error": CommandStatus.ERROR,
    "CommandFormatError": CommandStatus.COMMAND_FORMAT_ERROR,
    "NotNow": CommandStatus.NOT_NOW,
}
_OPEN = (CommandStatus.QUEUED.value, CommandStatus.SENT.value, CommandStatus.NOT_NOW.value)


@dataclass(frozen=True)
class Report:
    """One connect request, already parsed and its identity verified by the caller."""

    enrollment_id: str
    status: str  # Idle | Acknowledged | Error | CommandFormatError | NotNow
    command_uuid: str | None = None
    error_chain: tuple[dict[str, Any], ...] = ()
    cert_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # command-specific response keys


@dataclass(frozen=True)
class Served:
    """The command chosen for a device: its UUID, and where its body comes from."""

    command_uuid: str
    request_type: str
    rollout_id: int | None
    body: bytes | None  # None for a rollout's command: rendered from the rollout's template


@dataclass(frozen=True)
class Outcome:
    """What to answer one report: a status code, and the command to serve (or none)."""

    status_code: int
    served: Served | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class IdentityPolicy:
    """How strictly a device's certificate must match the one bound at enrollment."""

    required: bool = True  # a report without a verified certificate is refused
    bind_on_first_sight: bool = False  # migrated fleets: bind a device that has no binding yet


NotNowDelay = Callable[[int], dt.timedelta]


def default_notnow_delay(count: int) -> dt.timedelta:
    """Back off NotNow re-pushes: 5 min, 10, 20 … capped at 4 hours."""
    return min(dt.timedelta(minutes=5) * (2 ** max(0, count - 1)), dt.timedelta(hours=4))


def identity_refusal(
    device_sha: str | None, report_sha: str | None, policy: IdentityPolicy
) -> str | None:
    """Why a report's certificate does not fit its device's binding, or None when it does."""
    if report_sha is None:
        return "no_identity" if policy.required else None
    if device_sha is None:
        return None if policy.bind_on_first_sight or not policy.required else "unbound_device"
    if device_sha != report_sha:
        return "identity_mismatch"
    return None


def process_reports(
    session: Session,
    reports: Sequence[Report],
    *,
    identity: IdentityPolicy | None = None,
    notnow_delay: NotNowDelay = default_notnow_delay,
    now: dt.datetime | None = None,
) -> list[Outcome]:
    """Persist a batch of connect reports and choose each device's next command."""
    identity = identity or IdentityPolicy()
    now = now or utcnow()
    conn = session.connection()
    keys = sorted({r.enrollment_id for r in reports})
    devices: dict[str, tuple[int, str | None, str]] = {}
    if keys:
        q = select(
            DeviceRow.enrollment_id,
            DeviceRow.id,
            DeviceRow.identity_sha256,
            DeviceRow.enrollment_state,
        ).where(among(conn, DeviceRow.enrollment_id))
        for key, ident, sha, state in conn.execute(q, {"ids": keys}):
            devices[key] = (ident, sha, state)

    uuids = sorted({r.command_uuid for r in reports if r.command_uuid})
    commands: dict[str, dict[str, Any]] = {}
    if uuids:
        q2 = (
            select(
                CommandRow.id,
                CommandRow.command_uuid,
                CommandRow.device_id,
                CommandRow.rollout_id,
                CommandRow.request_type,
                CommandRow.status,
                CommandRow.notnow_count,
                TargetRow.id.label("target_id"),
                TargetRow.notnow_count.label("target_notnow"),
            )
            .outerjoin(
                TargetRow,
                and_(
                    TargetRow.rollout_id == CommandRow.rollout_id,
                    TargetRow.device_id == CommandRow.device_id,
                    TargetRow.command_uuid == CommandRow.command_uuid,
                ),
            )
            .where(among(conn, CommandRow.command_uuid))
        )
        for row in conn.execute(q2, {"ids": uuids}).mappings():
            commands[row["command_uuid"]] = dict(row)

    outcomes: list[Outcome | None] = [None] * len(reports)
    events: list[dict[str, Any]] = []
    command_updates: list[dict[str, Any]] = []
    moves: list[Move] = []
    seen: list[int] = []  # device ids
    binds: list[dict[str, Any]] = []
    answered: dict[int, str | None] = {}  # report index -> the CommandUUID it answered
    serve_for: dict[int, int] = {}  # report index -> device id
    handled: set[str] = set()  # CommandUUIDs whose result this batch already took
    installs: list[tuple[int, int]] = []  # (device, rollout) of acknowledged installs
    profile_lists: list[tuple[int, dict[str, Any]]] = []  # (device, answer)

    for i, r in enumerate(reports):
        dev = devices.get(r.enrollment_id)
        if dev is None:
            outcomes[i] = Outcome(400, refusal="unknown_enrollment")
            events.append(_event("mdm.refused", r, reason="unknown_enrollment"))
            continue
        device_id, device_sha, state = dev
        refusal = identity_refusal(device_sha, r.cert_sha256, identity)
        if refusal:
            outcomes[i] = Outcome(403, refusal=refusal)
            events.append(_event("mdm.refused", r, device_id=device_id, reason=refusal))
            continue
        if device_sha is None and r.cert_sha256 is not None and identity.bind_on_first_sight:
            binds.append({"b_id": device_id, "v_sha": r.cert_sha256})
        seen.append(device_id)
        answered[i] = r.command_uuid
        if state != EnrollmentState.CHECKED_OUT:
            serve_for[i] = device_id
        if r.status == "Idle" or not r.command_uuid:
            continue
        cmd = commands.get(r.command_uuid)
        if cmd is None:
            events.append(_event("mdm.anomaly", r, device_id=device_id, reason="unknown_command"))
            continue
        if cmd["device_id"] != device_id:
            events.append(_event("mdm.anomaly", r, device_id=device_id, reason="foreign_command"))
            continue
        if cmd["status"] in FINAL_COMMAND_STATUSES or r.command_uuid in handled:
            continue  # a repeat: the first report was kept, this one changes nothing
        if cmd["status"] == CommandStatus.NOT_NOW and r.status == "NotNow":
            continue  # the same NotNow again: nothing new to record
        new_status = _STATUS_TO_COMMAND[r.status]
        handled.add(r.command_uuid)
        chain = [dict(x) for x in r.error_chain] or None
        notnow = cmd["notnow_count"] + (1 if new_status == CommandStatus.NOT_NOW else 0)
        command_updates.append(
            {
                "b_id": cmd["id"],
                "v_status": new_status.value,
                "v_result_at": now,
                "v_notnow": notnow,
                "v_chain": chain,
                "v_result": _jsonable(r.extra) or None,
            }
        )
        events.append(
            _event(
                "mdm.result",
                r,
                device_id=device_id,
                rollout_id=cmd["rollout_id"],
                status=r.status,
                error_chain=chain,
            )
        )
        if new_status == CommandStatus.ACKNOWLEDGED:
            if cmd["request_type"] == "ProvisioningProfileList":
                profile_lists.append((device_id, r.extra))
            elif cmd["rollout_id"] is not None:
                installs.append((device_id, cmd["rollout_id"]))
        target_id = cmd["target_id"]
        if target_id is None:
            continue
        if new_status == CommandStatus.ACKNOWLEDGED:
            moves.append(Move(target_id, TargetState.ACKNOWLEDGED, {"finished_at": now}))
        elif new_status == CommandStatus.NOT_NOW:
            count = (cmd["target_notnow"] or 0) + 1
            moves.append(
                Move(
                    target_id,
                    TargetState.DEFERRED,
                    {"notnow_count": count, "next_push_at": now + notnow_delay(count)},
                )
            )
        else:
            moves.append(
                Move(
                    target_id,
                    TargetState.FAILED,
                    {"finished_at": now, "error_chain": chain, "reason": _failure_reason(r)},
                )
            )

    _update_results(conn, command_updates, now)
    record_installs(session, installs, now)
    record_profile_lists(session, profile_lists, now)

    # Choose each device's next command: open, not the one it just answered, and a NotNow'd
    # command only at the start of a session (Idle), so a NotNow never loops.
    served, delivered, marks = _choose_next(session, reports, serve_for, answered, now)
    # The choice reads commands, not targets, so the targets' moves can wait until here and
    # go in one call, results first where a target has both.
    for i in range(len(reports)):
        if outcomes[i] is None:
            outcomes[i] = Outcome(200, served=served.get(i))
    if {m.target_id for m in moves}.isdisjoint(m.target_id for m in delivered):
        plan = plan_moves(conn, moves + delivered)
    else:
        apply_moves(session, conn, plan_moves(conn, moves))
        plan = plan_moves(conn, delivered)
    # Nothing below reads a result: on PostgreSQL it all goes out in one pipeline.
    with _pipeline(conn):
        _mark_sent(conn, marks, now)
        apply_moves(session, conn, plan)
        _write_tail(session, conn, seen, binds, events, now)
    return [o for o in outcomes if o is not None]


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


def _write_tail(
    session: Session,
    conn: Any,
    seen: list[int],
    binds: list[dict[str, Any]],
    events: list[dict[str, Any]],
    now: dt.datetime,
) -> None:
    if seen:
        # Every device of the batch was seen at ``now``: one statement, whatever the batch.
        ids = sorted(set(seen))
        stmt = update(DeviceRow).where(among(conn, DeviceRow.id)).values(last_seen_at=now)
        for start in range(0, len(ids), CHUNK):
            conn.execute(stmt, {"ids": ids[start : start + CHUNK]})
    if binds:
        conn.execute(
            update(DeviceRow)
            .where(DeviceRow.id == bindparam("b_id"))
            .values(identity_sha256=bindparam("v_sha")),
            binds,
        )
    if conn.dialect.name == "postgresql":
        _insert_events_pg(conn, events)
    else:
        record_events(session, events)


_EVENTS_UNNEST = text(
    "INSERT INTO events (at, kind, rollout_id, device_id, enrollment_id, command_uuid, data) "
    "SELECT :at, u.kind, u.rollout_id, u.device_id, u.enrollment_id, u.command_uuid, "
    "CAST(u.data AS JSONB) FROM unnest(:kinds, :rollout_ids, :device_ids, :enrollment_ids, "
    ":command_uuids, :datas) AS u(kind, rollout_id, device_id, enrollment_id, command_uuid, data)"
).bindparams(
    bindparam("at", type_=EventRow.__table__.c.at.type),
    bindparam("kinds", type_=ARRAY(String)),
    bindparam("rollout_ids", type_=ARRAY(BigInteger)),
    bindparam("device_ids", type_=ARRAY(BigInteger)),
    bindparam("enrollment_ids", type_=ARRAY(String)),
    bindparam("command_uuids", type_=ARRAY(String)),
    bindparam("datas", type_=ARRAY(Text)),
)


def _insert_events_pg(conn: Any, events: list[dict[str, Any]]) -> None:
    """The rows :func:`record_events` writes, as one ``INSERT … SELECT FROM unnest`` with a
    fixed text (one prepared statement for any batch; executemany costs a round of pipeline
    messages per row)."""
    if not events:
        return
    conn.execute(
        _EVENTS_UNNEST,
        {
            "at": utcnow(),
            "kinds": [e["kind"] for e in events],
            "rollout_ids": [e.get("rollout_id") for e in events],
            "device_ids": [e.get("device_id") for e in events],
            "enrollment_ids": [e.get("enrollment_id") for e in events],
            "command_uuids": [e.get("command_uuid") for e in events],
            "datas": [json.dumps(e.get("data") or {}) for e in events],
        },
    )


def _update_results(conn: Any, updates: list[dict[str, Any]], now: dt.datetime) -> None:
    """Store the batch's results: rows that get the same values share one UPDATE … IN.

    A batch is mostly the same answer (Acknowledged, no chain, no extra keys), so this is one
    statement for the whole batch in the common case instead of one per row.
    """
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for u in updates:
        key = json.dumps(
            [u["v_status"], u["v_notnow"], u["v_chain"], u["v_result"]],
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, (u, []))[1].append(u["b_id"])
    chain_type = CommandRow.__table__.c.error_chain.type
    result_type = CommandRow.__table__.c.result.type
    for first, ids in groups.values():
        status = first["v_status"]
        first_notnow: Any = CommandRow.first_notnow_at
        if status == CommandStatus.NOT_NOW.value:
            first_notnow = case(
                (CommandRow.first_notnow_at.is_(None), literal(now, CommandRow.result_at.type)),
                else_=CommandRow.first_notnow_at,
            )
        stmt = (
            update(CommandRow)
            .where(among(conn, CommandRow.id))
            .values(
                status=status,
                result_at=now,
                notnow_count=first["v_notnow"],
                first_notnow_at=first_notnow,
                error_chain=bindparam("v_chain", type_=chain_type),
                result=bindparam("v_result", type_=result_type),
            )
        )
        for start in range(0, len(ids), CHUNK):
            params = {"ids": ids[start : start + CHUNK]}
            params.update(v_chain=first["v_chain"], v_result=first["v_result"])
            conn.execute(stmt, params)


def _choose_next(
    session: Session,
    reports: Sequence[Report],
    serve_for: dict[int, int],
    answered: dict[int, str | None],
    now: dt.datetime,
) -> tuple[dict[int, Served], list[Move], list[int]]:
    """The command served to each report (by index), the targets' moves to delivered, and the
    commands to mark as sent (the caller writes them with the batch's other writes)."""
    if not serve_for:
        return {}, [], []
    conn = session.connection()
    device_ids = sorted(set(serve_for.values()))
    q = (
        select(
            CommandRow.id,
            CommandRow.command_uuid,
            CommandRow.device_id,
            CommandRow.rollout_id,
            CommandRow.request_type,
            CommandRow.status,
            CommandRow.body,
            TargetRow.id.label("target_id"),
        )
        .outerjoin(
            TargetRow,
            and_(
                TargetRow.rollout_id == CommandRow.rollout_id,
                TargetRow.device_id == CommandRow.device_id,
                TargetRow.command_uuid == CommandRow.command_uuid,
            ),
        )
        .where(among(conn, CommandRow.device_id), CommandRow.status.in_(_OPEN))
        .order_by(CommandRow.device_id, CommandRow.priority.desc(), CommandRow.id)
    )
    queue: dict[int, list[Any]] = {}
    for row in conn.execute(q, {"ids": device_ids}):
        queue.setdefault(row.device_id, []).append(row)
    chosen: dict[int, Served] = {}
    taken: set[int] = set()
    marks: list[int] = []  # command ids served now
    moves: list[Move] = []
    for i, device_id in serve_for.items():
        idle = reports[i].status == "Idle"
        for row in queue.get(device_id, []):
            if row.id in taken or row.command_uuid == answered.get(i):
                continue
            if row.status == CommandStatus.NOT_NOW and not idle:
                continue
            taken.add(row.id)
            chosen[i] = Served(row.command_uuid, row.request_type, row.rollout_id, row.body)
            marks.append(row.id)
            if row.target_id is not None:
                moves.append(Move(row.target_id, TargetState.DELIVERED, {"delivered_at": now}))
            break
    return chosen, moves, marks


def _mark_sent(conn: Any, marks: list[int], now: dt.datetime) -> None:
    sent = (
        update(CommandRow)
        .where(among(conn, CommandRow.id))
        .values(status=CommandStatus.SENT.value, sent_at=now)
    )
    for start in range(0, len(marks), CHUNK):
        conn.execute(sent, {"ids": marks[start : start + CHUNK]})


def _failure_reason(r: Report) -> str:
    if r.status == "CommandFormatError":
        return "CommandFormatError"
    if r.error_chain:
        top = r.error_chain[0]
        return f"{top.get('ErrorDomain', '?')}:{top.get('ErrorCode', '?')}"
    return "Error"


def _jsonable(value: Any) -> Any:
    """Command-specific keys as JSON (dates to ISO strings, bytes to hex)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _event(kind: str, r: Report, **data: Any) -> dict[str, Any]:
    device_id = data.pop("device_id", None)
    rollout_id = data.pop("rollout_id", None)
    return {
        "kind": kind,
        "device_id": device_id,
        "rollout_id": rollout_id,
        "enrollment_id": r.enrollment_id,
        "command_uuid": r.command_uuid,
        "data": {k: v for k, v in data.items() if v is not None},
    }


def enqueue_command(
    session: Session,
    device_id: int,
    command_uuid: str,
    request_type: str,
    body: bytes,
    *,
    priority: int = 0,
) -> None:
    """Queue one ad-hoc command (with its own body) for a device."""
    session.add(
        CommandRow(
            command_uuid=command_uuid,
            device_id=device_id,
            request_type=request_type,
            body=body,
            priority=priority,
        )
    )
    session.flush()
