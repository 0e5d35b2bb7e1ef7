"""The plain values that cross the ledger's boundary, both ways.

Reads return these (never ORM rows or sessions); writes take them. They carry facts only:
which state a target should move to, and from which states that move is allowed, is decided
by the engine (:mod:`rollout.transitions`) and handed in as a :class:`Move`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# ---- moves ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """Move one target to ``to``, setting ``fields`` on the way, if it is in ``allowed_from``.

    The ledger applies a move only when the target's current state (read under a row lock) is
    one of ``allowed_from``; otherwise the move is dropped. That compare-and-set is what makes
    duplicate, late and out-of-order results harmless. Build moves with
    :func:`rollout.transitions.move`, which fills ``allowed_from`` from the state machine.
    """

    target_id: int
    to: str
    allowed_from: frozenset[str]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AppliedMove:
    """A move that happened: the target, its rollout and stage, and the two states."""

    target_id: int
    rollout_id: int
    stage: int
    before: str
    after: str


@dataclass(frozen=True)
class Event:
    """One entry for the append-only journal."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    rollout_id: int | None = None
    device_id: int | None = None
    enrollment_id: str | None = None
    command_uuid: str | None = None


@dataclass(frozen=True)
class EventEntry:
    """An event as it was recorded."""

    id: int
    at: dt.datetime
    kind: str
    data: dict[str, Any]
    rollout_id: int | None
    device_id: int | None
    enrollment_id: str | None
    command_uuid: str | None


# ---- the check-in path ---------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolledDevice:
    """What the check-in path knows about one enrollment (a device channel)."""

    id: int
    key: str  # the UDID, or the EnrollmentID of a User Enrollment
    state: str  # rollout.states.EnrollmentState
    identity_sha256: str | None  # the certificate bound to it


@dataclass(frozen=True)
class Authentication:
    """The facts of an accepted Authenticate message."""

    key: str
    udid: str | None
    enrollment_type: str  # device | user
    topic: str | None
    identity_sha256: str | None
    details: dict[str, str] = field(default_factory=dict)  # os_version, serial_number, …


@dataclass(frozen=True)
class PushRegistration:
    """The facts of an accepted TokenUpdate message."""

    token_hex: str
    push_magic: str
    topic: str | None


@dataclass(frozen=True)
class CommandState:
    """A queued command as a report about it finds it, with its rollout target if any."""

    id: int
    command_uuid: str
    device_id: int
    rollout_id: int | None
    request_type: str
    status: str  # rollout.states.CommandStatus
    notnow_count: int
    target_id: int | None
    target_notnow: int
    target_state: str | None = None
    verify_attempts: int = 0


@dataclass(frozen=True)
class QueuedCommand:
    """A command that may be served to its device, in serving order."""

    id: int
    command_uuid: str
    device_id: int
    rollout_id: int | None
    request_type: str
    status: str
    body: bytes | None  # None for a rollout's command: rendered from the rollout's profile
    target_id: int | None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class NewCommand:
    """A command to queue (or, with status ``sent``, handed out in the same answer)."""

    command_uuid: str
    device_id: int
    request_type: str
    body: bytes | None = None
    rollout_id: int | None = None
    target_id: int | None = None
    status: str = "queued"


@dataclass(frozen=True)
class RolloutFacts:
    """What reconciling a rollout's answers needs to know about it."""

    id: int
    state: str
    profile_uuid: str | None
    profile_expires_at: dt.datetime | None
    options: dict[str, Any]


@dataclass(frozen=True)
class CommandResultWrite:
    """A device's answer to one command, to store on the command's row."""

    command_id: int
    status: str
    notnow_count: int
    error_chain: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProfileFact:
    """A provisioning profile a device holds, as some source reported it."""

    uuid: str
    name: str | None = None
    expires_at: dt.datetime | None = None


@dataclass
class ReportWrites:
    """Everything a batch of connect reports writes, applied in one call and transaction.

    Target moves are applied in list order (a later move of a target sees the state the earlier
    one left), after the command results and before the journal.
    """

    results: list[CommandResultWrite] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # command ids served in this batch
    new_commands: list[NewCommand] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)  # device ids that connected
    binds: list[tuple[int, str]] = field(default_factory=list)  # (device id, certificate sha)
    installs: list[tuple[int, int]] = field(default_factory=list)  # (device id, rollout id)
    removals: list[tuple[int, str]] = field(default_factory=list)  # (device id, profile uuid)
    profile_lists: list[tuple[int, list[ProfileFact]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


# ---- the fan-out path ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunningRollout:
    """A rollout the controller works on, the highest stage open to fan-out, and its options
    (the stored part of its spec)."""

    id: int
    stage: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnpushableTarget:
    """A planned target whose device cannot be woken, with the device's facts."""

    target_id: int
    token_state: str
    enrollment_state: str


@dataclass(frozen=True)
class DueTarget:
    """A target whose wait (``next_push_at``) is over."""

    target_id: int
    rollout_id: int
    state: str
    push_count: int
    notnow_count: int


@dataclass(frozen=True)
class PushTarget:
    """A target of a fan-out batch with what its device needs to be woken."""

    target_id: int
    state: str
    push_count: int
    device_id: int
    token: str | None
    push_magic: str | None
    topic: str | None
    token_state: str
    enrollment_state: str


@dataclass(frozen=True)
class OpenCommand:
    """A target's command with no final answer yet, and its device's enrollment id."""

    target_id: int
    command_id: int
    command_uuid: str
    request_type: str
    status: str
    body: bytes | None  # None for a rollout's command: rendered from the rollout's profile
    rollout_id: int | None
    enrollment_id: str


@dataclass(frozen=True)
class HandedCommand:
    """A command handed to another MDM server, and where it went."""

    command_id: int
    command_uuid: str
    target_id: int | None
    enrollment_id: str


@dataclass(frozen=True)
class PushRecord:
    """A push APNs accepted: the target's new push count, next deadline and APNs id."""

    target_id: int
    push_count: int
    next_push_at: dt.datetime
    apns_id: str | None
    skip_in: frozenset[str] = frozenset()  # not stored on a target now in one of these


# ---- rollouts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTarget:
    """One device of a planned rollout: its stage, its place in the stage's pushing order
    (higher first), and why it is excluded, if it is (then it is written ``ineligible``)."""

    device_id: int
    stage: int
    priority: int = 0
    excluded: str | None = None


@dataclass(frozen=True)
class NewStage:
    """A stage to write: how far it reaches (a label such as ``25%``) and its gate."""

    label: str
    gate: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewRollout:
    """A rollout to write: its profile, options, stages and targets."""

    name: str
    profile_uuid: str | None
    salt: str
    stages: tuple[NewStage, ...]
    targets: tuple[PlannedTarget, ...]
    created_by: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    replaces_uuid: str | None = None  # a renewal rollout: the profile it renews


@dataclass(frozen=True)
class RolloutInfo:
    """A rollout's own row."""

    id: int
    name: str
    state: str
    profile_uuid: str | None
    current_stage: int
    salt: str
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    options: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    replaces_uuid: str | None = None


@dataclass(frozen=True)
class StageInfo:
    """One stage of a rollout: how far it reaches, its gate, and how far it has got."""

    number: int
    label: str
    gate: dict[str, Any]
    state: str  # rollout.states.StageState
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class TargetInfo:
    """One device's target in a rollout."""

    id: int
    device_id: int
    stage: int
    state: str
    reason: str | None
    command_uuid: str | None
    push_count: int
    notnow_count: int
    next_push_at: dt.datetime | None
    requeue_after_token_update: bool
    error_chain: list[dict[str, Any]] | None


@dataclass(frozen=True)
class RolloutSummary:
    """A rollout with its targets counted by stage, state and reason (from kept counters)."""

    rollout: RolloutInfo
    states: dict[str, int]
    stages: list[tuple[int, dict[str, int]]]
    reasons: dict[str, dict[str, int]]  # state -> reason -> count, for the side exits

    def as_json(self) -> dict[str, Any]:
        """The JSON shape the CLI and the demo print."""
        r = self.rollout
        return {
            "rollout": {
                "id": r.id,
                "name": r.name,
                "state": r.state,
                "profile": r.profile_uuid,
                "created_at": r.created_at.isoformat(),
                "started_at": r.started_at.isoformat() if r.started_at else None,
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            },
            "states": dict(self.states),
            "stages": [{"stage": k, "states": dict(v)} for k, v in self.stages],
            **{state: dict(by_reason) for state, by_reason in self.reasons.items()},
        }


# ---- the library and the registry ----------------------------------------------------------


@dataclass(frozen=True)
class ProfileEntry:
    """A provisioning profile in the library (without its file)."""

    uuid: str
    sha256: str
    name: str
    app_id: str | None
    team_id: str | None
    kind: str
    platforms: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    signature_valid: bool
    chain_trusted: bool
    metadata: dict[str, Any]  # the profile's own JSON description (rollout.profiles)
    added_at: dt.datetime


@dataclass(frozen=True)
class PushData:
    """What it takes to wake one device (opened from the ledger's sealed columns)."""

    token: str | None
    push_magic: str | None
    topic: str | None


@dataclass(frozen=True)
class DeviceInfo:
    """A device in the registry."""

    id: int
    enrollment_id: str
    udid: str | None
    enrollment_type: str
    state: str
    platform: str | None
    os_version: str | None
    serial_number: str | None
    model: str | None
    product_name: str | None
    token_state: str
    tags: tuple[str, ...]
    last_seen_at: dt.datetime | None
    topic: str | None = None
    has_push_token: bool = False  # the secrets themselves stay in the ledger (sealed)
    has_push_magic: bool = False
    identity_sha256: str | None = None
    access_rights: int | None = None
    device_name: str | None = None
    enrolled_at: dt.datetime | None = None
    checked_out_at: dt.datetime | None = None
    token_dead_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeviceTarget:
    """One device's target in some rollout, with that rollout's name, state and profile."""

    rollout_id: int
    rollout_name: str
    rollout_state: str
    profile_uuid: str | None
    target_id: int
    stage: int
    state: str
    reason: str | None
    push_count: int
    notnow_count: int
    error_chain: list[dict[str, Any]] | None
    updated_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class InstalledProfile:
    """A profile known to be on a device, where that fact came from, and when."""

    profile_uuid: str
    name: str | None
    expires_at: dt.datetime | None
    source: str  # import | rollout | profile_list
    seen_at: dt.datetime


@dataclass(frozen=True)
class Holding:
    """A profile on devices that expires before some horizon."""

    profile_uuid: str
    name: str | None
    app_id: str | None
    team_id: str | None
    expires_at: dt.datetime
    devices: int


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices a query selects; every given criterion must hold."""

    states: tuple[str, ...] = ()  # enrollment states, any of them
    tags: tuple[str, ...] = ()  # all of them
    platforms: tuple[str, ...] = ()  # any of them
    holders_of: str | None = None  # a profile UUID
    keys: tuple[str, ...] | None = None  # UDIDs / EnrollmentIDs
    models: tuple[str, ...] = ()  # model or product name, any of them
    token_states: tuple[str, ...] = ()  # any of them
    key_prefix: str | None = None  # the UDID / EnrollmentID starts with it
    serial_prefix: str | None = None  # the serial number starts with it


@dataclass(frozen=True)
class ImportResult:
    """How many devices an import created and updated, and profile facts it stored."""

    created: int
    updated: int
    profiles: int


@dataclass(frozen=True)
class NewAlert:
    """A finding to raise as an alert (kept once per ``key`` while it is not resolved)."""

    key: str
    kind: str
    severity: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertInfo:
    """An alert's row."""

    id: int
    key: str
    kind: str
    severity: str
    state: str
    title: str
    data: dict[str, Any]
    opened_at: dt.datetime
    updated_at: dt.datetime
    notified_at: dt.datetime | None
    acknowledged_by: str | None
    acknowledged_at: dt.datetime | None
    resolved_by: str | None
    resolved_at: dt.datetime | None


@dataclass(frozen=True)
class DeliveryInfo:
    """One notification of an alert to one channel, and how its delivery went so far."""

    id: int
    alert_id: int
    channel: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_at: dt.datetime
    last_status: int | None
    last_error: str | None
    delivered_at: dt.datetime | None


@dataclass(frozen=True)
class TokenInfo:
    """An operator API token (never the token itself)."""

    id: int
    name: str
    role: str
    created_by: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


# ---- retention -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedRollout:
    """A finished rollout that still holds per-device rows (a retention candidate)."""

    id: int
    name: str
    state: str
    finished_at: dt.datetime
    pinned: bool


@dataclass(frozen=True)
class BlockRollout:
    """A rollout of one partition block, as retention weighs dropping the block."""

    id: int
    state: str
    finished_at: dt.datetime | None
    pinned: bool
    has_rows: bool  # it still holds per-device rows


@dataclass(frozen=True)
class NewArchive:
    """An archive file just written and verified, to be recorded before any row is deleted."""

    name: str
    kind: str  # rollout | journal
    rollout_id: int | None
    sha256: str
    rows: dict[str, int]  # table -> rows in the file
    cutoff: dt.datetime


@dataclass(frozen=True)
class ArchiveInfo:
    """An archive file on record, and whether its rows have left the ledger yet."""

    id: int
    name: str
    kind: str
    rollout_id: int | None
    sha256: str
    rows: dict[str, int]
    state: str  # written | pruned
    cutoff: dt.datetime
    created_at: dt.datetime
    pruned_at: dt.datetime | None


@dataclass(frozen=True)
class TableSize:
    """One table's rows and bytes on disk (its heap, and its indexes apart)."""

    table: str
    rows: int
    table_bytes: int
    index_bytes: int
