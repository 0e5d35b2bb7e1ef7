"""Reconciling devices' command reports into the ledger, a batch at a time.

One module for every way answers arrive: the built-in MDM endpoint hands in the reports of the
requests that came in together; a webhook receiver (NanoMDM, MicroMDM) hands in what it was
sent. For each report: check the device and its identity, persist the result once
(idempotent on the CommandUUID: a repeat changes nothing), move the rollout target, then choose
the device's next command. The ledger reads are a fixed handful of batch queries and the writes
one :meth:`~rollout.ledger.CheckinStore.apply_reports` call, whatever the batch size.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.enrollment import IdentityPolicy, identity_refusal
from rollout.ledger import (
    CheckinStore,
    CommandResultWrite,
    CommandState,
    Event,
    Move,
    NewCommand,
    ProfileFact,
    QueuedCommand,
    ReportWrites,
    RolloutFacts,
)
from rollout.mdm import (
    CommandResult,
    Status,
    parse_provisioning_profile_list,
    provisioning_profile_list,
    remove_provisioning_profile,
)
from rollout.mdm.commands import (
    INSTALL_PROVISIONING_PROFILE,
    PROVISIONING_PROFILE_LIST,
    REMOVE_PROVISIONING_PROFILE,
)
from rollout.policy import EnginePolicy
from rollout.spec import RolloutOptions
from rollout.states import FINAL_COMMAND_STATUSES, CommandStatus, EnrollmentState, TargetState
from rollout.transitions import move

_STATUS_TO_COMMAND = {
    "Acknowledged": CommandStatus.ACKNOWLEDGED,
    "Error": CommandStatus.ERROR,
    "CommandFormatError": CommandStatus.COMMAND_FORMAT_ERROR,
    "NotNow": CommandStatus.NOT_NOW,
}


@dataclass(frozen=True)
class Report:
    """One device's answer on its device channel, already parsed and its identity verified."""

    enrollment_id: str
    status: str  # Idle | Acknowledged | Error | CommandFormatError | NotNow
    command_uuid: str | None = None
    error_chain: tuple[dict[str, Any], ...] = ()
    cert_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # command-specific keys, JSON-ready
    profile_list: tuple[ProfileFact, ...] | None = None  # an acknowledged profile list

    @classmethod
    def from_result(cls, result: CommandResult, cert_sha256: str | None) -> Report:
        """The report a parsed command result makes (the same for every transport)."""
        return cls(
            enrollment_id=result.enrollment.device_key,
            status=result.status.value,
            command_uuid=result.command_uuid,
            error_chain=tuple(e.as_json() for e in result.error_chain),
            cert_sha256=cert_sha256,
            extra=result.extra_json,
            profile_list=_profile_list(result),
        )


@dataclass(frozen=True)
class Served:
    """The command chosen for a device: its UUID, and where its body comes from."""

    command_uuid: str
    request_type: str
    rollout_id: int | None
    body: bytes | None  # None for a rollout's command: rendered from the rollout's profile


@dataclass(frozen=True)
class Outcome:
    """What to answer one report: the command to serve (or none), or why it was refused."""

    served: Served | None = None
    refusal: str | None = None


def process_reports(
    store: CheckinStore,
    reports: Sequence[Report],
    *,
    identity: IdentityPolicy,
    policy: EnginePolicy,
    now: dt.datetime,
    serve: bool = True,
) -> list[Outcome]:
    """Persist a batch of reports and choose each device's next command (one per report).

    With ``serve`` false the answers came from another MDM server's webhook and that server
    serves its own queue: nothing is chosen from rollout's queue, and a command made for the
    device at once (a verification) is left queued, due now, for the fan-out to hand over.
    """
    devices = store.devices({r.enrollment_id for r in reports})
    commands = store.commands(
        {r.command_uuid for r in reports if r.command_uuid}, {d.id for d in devices.values()}
    )
    rollouts = store.rollout_facts({c.rollout_id for c in commands.values() if c.rollout_id})
    known = {uuid for uuid, _ in commands}
    writes = ReportWrites()
    outcomes: list[Outcome | None] = [None] * len(reports)
    answered: dict[int, str | None] = {}  # report index -> the CommandUUID it answered
    serve_for: dict[int, int] = {}  # report index -> device id
    handled: set[tuple[str, int]] = set()  # (CommandUUID, device) results this batch took
    follow_up: dict[int, Served] = {}  # report index -> a command to hand out at once

    for i, r in enumerate(reports):
        dev = devices.get(r.enrollment_id)
        if dev is None:
            outcomes[i] = Outcome(refusal="unknown_enrollment")
            writes.events.append(_event("mdm.refused", r, reason="unknown_enrollment"))
            continue
        refusal = identity_refusal(dev.identity_sha256, r.cert_sha256, identity)
        if refusal:
            outcomes[i] = Outcome(refusal=refusal)
            writes.events.append(_event("mdm.refused", r, device_id=dev.id, reason=refusal))
            continue
        if (
            dev.identity_sha256 is None
            and r.cert_sha256 is not None
            and identity.bind_on_first_sight
        ):
            writes.binds.append((dev.id, r.cert_sha256))
        writes.seen.append(dev.id)
        answered[i] = r.command_uuid
        if dev.state != EnrollmentState.CHECKED_OUT:
            serve_for[i] = dev.id
        if r.status == Status.IDLE or not r.command_uuid:
            continue
        cmd = commands.get((r.command_uuid, dev.id))
        if cmd is None:
            why = "foreign_command" if r.command_uuid in known else "unknown_command"
            writes.events.append(_event("mdm.anomaly", r, device_id=dev.id, reason=why))
            continue
        if cmd.status in FINAL_COMMAND_STATUSES or (r.command_uuid, dev.id) in handled:
            continue  # a repeat: the first report was kept, this one changes nothing
        if cmd.status == CommandStatus.NOT_NOW and r.status == Status.NOT_NOW:
            continue  # the same NotNow again: nothing new to record
        handled.add((r.command_uuid, dev.id))
        facts = rollouts.get(cmd.rollout_id) if cmd.rollout_id is not None else None
        nxt = _take_result(writes, r, cmd, dev.id, facts, policy, now, serve)
        if nxt is not None and i in serve_for:
            follow_up[i] = nxt

    # The next command is chosen from the commands as they were before this batch: the only
    # ones its results change are the ones just answered, which are never served back.
    if serve:
        queue = store.open_commands(set(serve_for.values()))
        served = _choose_next(writes, reports, serve_for, answered, handled, follow_up, queue, now)
    else:
        served = follow_up
    store.apply_reports(writes, now)
    return [o if o is not None else Outcome(served=served.get(i)) for i, o in enumerate(outcomes)]


def _take_result(
    writes: ReportWrites,
    r: Report,
    cmd: CommandState,
    device_id: int,
    rollout: RolloutFacts | None,
    policy: EnginePolicy,
    now: dt.datetime,
    serve: bool = True,
) -> Served | None:
    """Record one new result and its target's move; a command to hand the device at once
    (a verification after an install, a clean-up after a verification), if any."""
    new_status = _STATUS_TO_COMMAND[r.status]
    chain = [dict(x) for x in r.error_chain] or None
    notnow = cmd.notnow_count + (1 if new_status == CommandStatus.NOT_NOW else 0)
    writes.results.append(
        CommandResultWrite(cmd.id, new_status.value, notnow, chain, r.extra or None)
    )
    writes.events.append(
        _event(
            "mdm.result",
            r,
            device_id=device_id,
            rollout_id=cmd.rollout_id,
            status=r.status,
            error_chain=chain,
        )
    )
    opts = RolloutOptions.from_json(rollout.options if rollout else None)
    acked = new_status == CommandStatus.ACKNOWLEDGED
    if acked and cmd.request_type == PROVISIONING_PROFILE_LIST and r.profile_list is not None:
        writes.profile_lists.append((device_id, list(r.profile_list)))
    if acked and cmd.request_type == INSTALL_PROVISIONING_PROFILE and cmd.rollout_id is not None:
        writes.installs.append((device_id, cmd.rollout_id))
    if acked and cmd.request_type == REMOVE_PROVISIONING_PROFILE:
        removed = opts.cleanup if opts.command == "install" else opts.remove_uuid
        if removed:
            writes.removals.append((device_id, removed))
    if cmd.target_id is None or rollout is None:
        return None
    target = cmd.target_id
    if cmd.request_type == REMOVE_PROVISIONING_PROFILE and opts.command == "install":
        return None  # a clean-up: its answer is recorded, the target stays verified
    if cmd.request_type == PROVISIONING_PROFILE_LIST and opts.command == "install":
        return _verified(writes, r, cmd, device_id, rollout, opts, policy, now, serve)
    if new_status == CommandStatus.NOT_NOW:
        count = cmd.target_notnow + 1
        writes.moves.append(
            move(
                target,
                TargetState.DEFERRED,
                notnow_count=count,
                next_push_at=now + policy.notnow_delay(count),
            )
        )
        return None
    if not acked:
        writes.moves.append(
            move(
                target,
                TargetState.FAILED,
                finished_at=now,
                error_chain=chain,
                reason=failure_reason(r),
            )
        )
        return None
    if opts.command == "install" and opts.verify:
        # Installed: ask at once, while the device is still here, whether it lists it.
        writes.moves.append(
            move(
                target,
                TargetState.ACKNOWLEDGED,
                finished_at=now,
                push_count=0,
                verify_attempts=cmd.verify_attempts + 1,
                next_push_at=now + policy.response_timeout if serve else now,
            )
        )
        return _hand_out(
            writes, device_id, rollout.id, target, provisioning_profile_list(), handed=serve
        )
    writes.moves.append(move(target, TargetState.ACKNOWLEDGED, finished_at=now, next_push_at=None))
    return None


def _verified(
    writes: ReportWrites,
    r: Report,
    cmd: CommandState,
    device_id: int,
    rollout: RolloutFacts,
    opts: RolloutOptions,
    policy: EnginePolicy,
    now: dt.datetime,
    serve: bool = True,
) -> Served | None:
    """A verification answered: the target is verified when the device lists the rollout's
    profile with its expiry; otherwise the profile is installed again, until the attempts are
    spent and the target fails verification."""
    target = cmd.target_id
    assert target is not None
    listed = {item.uuid: item.expires_at for item in r.profile_list or ()}
    expected = rollout.profile_expires_at
    uuid = (rollout.profile_uuid or "").lower()
    found = uuid in listed and (
        expected is None
        or listed[uuid] is None
        or abs((listed[uuid] - expected).total_seconds()) <= 1  # type: ignore[operator]
    )
    if r.status == Status.ACKNOWLEDGED and found:
        writes.moves.append(move(target, TargetState.VERIFIED, next_push_at=None))
        if opts.cleanup:
            body = remove_provisioning_profile(opts.cleanup)
            return _hand_out(writes, device_id, rollout.id, target, body, handed=serve)
        return None
    why = "not_listed" if r.status == Status.ACKNOWLEDGED else failure_reason(r)
    if cmd.verify_attempts < policy.max_verify:
        writes.moves.append(
            move(target, TargetState.PLANNED, command_uuid=None, next_push_at=None, reason=why)
        )
    else:
        writes.moves.append(
            move(
                target,
                TargetState.FAILED,
                finished_at=now,
                next_push_at=None,
                reason=f"not_verified:{why}",
            )
        )
    return None


def _hand_out(
    writes: ReportWrites,
    device_id: int,
    rollout_id: int,
    target_id: int,
    template: Any,
    *,
    handed: bool = True,
) -> Served:
    """A command made for this device now, written as sent and served in this answer (or,
    when not ``handed``, written as queued for the fan-out to hand to another server)."""
    uuid = str(uuidlib.uuid4()).upper()
    body = template.render(uuid)
    writes.new_commands.append(
        NewCommand(
            uuid,
            device_id,
            template.request_type,
            body,
            rollout_id,
            target_id,
            (CommandStatus.SENT if handed else CommandStatus.QUEUED).value,
        )
    )
    return Served(uuid, template.request_type, rollout_id, body)


def _choose_next(
    writes: ReportWrites,
    reports: Sequence[Report],
    serve_for: dict[int, int],
    answered: dict[int, str | None],
    handled: set[tuple[str, int]],
    follow_up: dict[int, Served],
    queue: dict[int, list[QueuedCommand]],
    now: dt.datetime,
) -> dict[int, Served]:
    """Each device's next command: one made for it just now (a verification or clean-up), or
    else the first open one that is not the one it just answered, not past its time-to-live,
    and a NotNow'd command only at the start of a session (Idle), so a NotNow never loops. The
    chosen commands are marked sent and their targets delivered (after the results' moves)."""
    chosen: dict[int, Served] = dict(follow_up)
    taken: set[int] = set()
    delivered: list[Move] = []
    for i, device_id in serve_for.items():
        if i in chosen:
            continue
        idle = reports[i].status == Status.IDLE
        for cmd in queue.get(device_id, []):
            if cmd.id in taken or (cmd.command_uuid, device_id) in handled:
                continue
            if cmd.command_uuid == answered.get(i):
                continue
            if cmd.status == CommandStatus.NOT_NOW and not idle:
                continue
            if cmd.expires_at is not None and cmd.expires_at <= now:
                continue  # never served stale: the controller cancels it
            taken.add(cmd.id)
            chosen[i] = Served(cmd.command_uuid, cmd.request_type, cmd.rollout_id, cmd.body)
            writes.sent.append(cmd.id)
            if cmd.target_id is not None:
                delivered.append(move(cmd.target_id, TargetState.DELIVERED, delivered_at=now))
            break
    writes.moves.extend(delivered)
    return chosen


def failure_reason(r: Report) -> str:
    """The reason a failed target keeps: ``CommandFormatError``, or the top error's
    ``domain:code``."""
    if r.status == Status.COMMAND_FORMAT_ERROR:
        return "CommandFormatError"
    if r.error_chain:
        top = r.error_chain[0]
        return f"{top.get('ErrorDomain', '?')}:{top.get('ErrorCode', '?')}"
    return "Error"


def _profile_list(result: CommandResult) -> tuple[ProfileFact, ...] | None:
    """The profiles an acknowledged list names (already checked when the report was parsed)."""
    if result.status is not Status.ACKNOWLEDGED or PROVISIONING_PROFILE_LIST not in result.raw:
        return None
    items = parse_provisioning_profile_list(result)
    return tuple(ProfileFact(i.uuid.lower(), i.name, i.expiry_date) for i in items)


def _event(kind: str, r: Report, **data: Any) -> Event:
    device_id = data.pop("device_id", None)
    rollout_id = data.pop("rollout_id", None)
    return Event(
        kind,
        {k: v for k, v in data.items() if v is not None},
        rollout_id=rollout_id,
        device_id=device_id,
        enrollment_id=r.enrollment_id,
        command_uuid=r.command_uuid,
    )
