"""The ledger's tables as SQLAlchemy 2.x typed models.

Every table has a natural unique key that makes a repeated write harmless: a profile by UUID,
a device by its enrollment id, a target per (rollout, device), a command per CommandUUID.
States are stored as short strings (see ``rollout.states``) so the schema needs no native enums.
No column takes its time from the clock: every timestamp is written by a caller that was given
``now`` (one clock for the whole product, see ``rollout.clock``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rollout import bounds
from rollout.ledger.types import JSONType, UTCDateTime

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so autoincrement works there.
BigID = BigInteger().with_variant(Integer(), "sqlite")


def _command_part(context: Any) -> int:
    """A command's partition key: its rollout, or 0 for a command of no rollout."""
    return int(context.get_current_parameters().get("rollout_id") or 0)


def _event_part(context: Any) -> int:
    """An event's partition key: its rollout when it names a device of one (a per-device row
    that leaves with the rollout), else 0 (kept by age, or forever for rollout-level events)."""
    row = context.get_current_parameters()
    if row.get("device_id") is None:
        return 0
    return int(row.get("rollout_id") or 0)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with constraint names that migrations can rely on."""

    metadata = MetaData(naming_convention=NAMING)


class ProfileRow(Base):
    """A provisioning profile in the library: the signed file and what was read from it."""

    __tablename__ = "profiles"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    app_id_name: Mapped[str | None] = mapped_column(String(255))
    app_id: Mapped[str | None] = mapped_column(String(255), index=True)
    team_id: Mapped[str | None] = mapped_column(String(32), index=True)
    team_name: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(24))
    platforms: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    provisions_all_devices: Mapped[bool] = mapped_column(Boolean, default=False)
    provisioned_devices: Mapped[list[str]] = mapped_column(JSONType, default=list)
    signature_valid: Mapped[bool] = mapped_column(Boolean)
    chain_trusted: Mapped[bool] = mapped_column(Boolean)
    signer: Mapped[str | None] = mapped_column(String(255))
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class DeviceRow(Base):
    """One MDM enrollment: a device channel (UDID) or a User Enrollment (EnrollmentID)."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[str] = mapped_column(String(bounds.ENROLLMENT_ID), unique=True)
    udid: Mapped[str | None] = mapped_column(String(bounds.UDID))
    enrollment_type: Mapped[str] = mapped_column(String(16), default="device")
    enrollment_state: Mapped[str] = mapped_column(String(16), default="imported")
    platform: Mapped[str | None] = mapped_column(String(16))
    os_version: Mapped[str | None] = mapped_column(String(bounds.OS_VERSION))
    build_version: Mapped[str | None] = mapped_column(String(bounds.BUILD_VERSION))
    product_name: Mapped[str | None] = mapped_column(String(bounds.PRODUCT_NAME))
    model: Mapped[str | None] = mapped_column(String(bounds.MODEL))
    serial_number: Mapped[str | None] = mapped_column(String(bounds.SERIAL_NUMBER), index=True)
    device_name: Mapped[str | None] = mapped_column(String(bounds.DEVICE_NAME))
    topic: Mapped[str | None] = mapped_column(String(bounds.TOPIC))
    push_token: Mapped[str | None] = mapped_column(String(bounds.PUSH_TOKEN_STORED))
    push_magic: Mapped[str | None] = mapped_column(String(bounds.PUSH_MAGIC_STORED))
    token_state: Mapped[str] = mapped_column(String(16), default="missing")
    token_dead_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    access_rights: Mapped[int | None] = mapped_column(Integer)
    identity_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    checked_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class InstalledProfileRow(Base):
    """A provisioning profile known to be on a device, and where that fact came from."""

    __tablename__ = "installed_profiles"
    __table_args__ = (UniqueConstraint("device_id", "profile_uuid"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    profile_uuid: Mapped[str] = mapped_column(String(bounds.PROFILE_UUID), index=True)
    name: Mapped[str | None] = mapped_column(String(bounds.PROFILE_NAME))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(24))  # import | profile_list | rollout
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RolloutRow(Base):
    """A rollout of one profile to a set of devices, in stages.

    A renewal rollout names the profile it replaces; there is at most one rollout per
    (replaced, new) pair, however often and however concurrently the expiry scan runs.
    """

    __tablename__ = "rollouts"
    __table_args__ = (
        UniqueConstraint("replaces_uuid", "profile_uuid", name="uq_rollouts_renewal"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    profile_uuid: Mapped[str | None] = mapped_column(ForeignKey("profiles.uuid"), index=True)
    replaces_uuid: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    current_stage: Mapped[int] = mapped_column(Integer, default=0)
    salt: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # A pinned rollout keeps its per-device rows whatever the retention policy says.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class StageRow(Base):
    """One stage of a rollout: a cumulative fraction of its eligible targets and its gate."""

    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("rollout_id", "number"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(32))  # 25%, 200 devices
    fraction: Mapped[float | None] = mapped_column(Float)
    gate: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class TargetRow(Base):
    """One device in one rollout."""

    __tablename__ = "targets"
    __table_args__ = (
        UniqueConstraint("rollout_id", "device_id"),
        # Claims walk a rollout's planned targets stage by stage, most recently seen first.
        Index("ix_targets_claim", "rollout_id", "state", "stage", "priority"),
        # A rollout's devices page walks each asked state in target order (keyset).
        Index("ix_targets_page", "rollout_id", "state", "id"),
        Index("ix_targets_next_push_at", "next_push_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(BigInteger, default=0)  # pushed first when higher
    state: Mapped[str] = mapped_column(String(16), default="planned")
    reason: Mapped[str | None] = mapped_column(String(bounds.TARGET_REASON))
    command_uuid: Mapped[str | None] = mapped_column(String(bounds.COMMAND_UUID))
    push_count: Mapped[int] = mapped_column(Integer, default=0)
    last_apns_id: Mapped[str | None] = mapped_column(String(64))
    last_pushed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_push_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    notnow_count: Mapped[int] = mapped_column(Integer, default=0)
    verify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error_chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    requeue_after_token_update: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CommandRow(Base):
    """An MDM command queued for one device, keyed by its CommandUUID and the device.

    A rollout's commands carry no body of their own: the rollout's body is rendered once from
    its profile and only the CommandUUID differs per device. Other commands keep their body.
    """

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_device_status", "device_id", "status", "id"),
        # one answer per (CommandUUID, device): a command handed to NanoMDM for many devices
        # in one call shares its CommandUUID (``part`` follows from the command: it is there
        # because a unique key of a partitioned table must hold the partition key)
        UniqueConstraint("command_uuid", "device_id", "part"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    command_uuid: Mapped[str] = mapped_column(String(bounds.COMMAND_UUID))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    target_id: Mapped[int | None] = mapped_column(BigID, index=True)  # the target it serves
    request_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(24), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # never served after
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    result_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    notnow_count: Mapped[int] = mapped_column(Integer, default=0)
    first_notnow_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error_chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # the partition a command lives in on PostgreSQL (see rollout.ledger.partitions)
    part: Mapped[int] = mapped_column(BigInteger, default=_command_part, server_default="0")


class EventRow(Base):
    """The append-only journal: every result, anomaly, refusal and operator action."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_rollout_id", "rollout_id", "id"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    rollout_id: Mapped[int | None] = mapped_column(BigID)
    device_id: Mapped[int | None] = mapped_column(BigID)
    enrollment_id: Mapped[str | None] = mapped_column(String(bounds.ENROLLMENT_KEY))
    command_uuid: Mapped[str | None] = mapped_column(String(bounds.COMMAND_UUID))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # the partition an event lives in on PostgreSQL (see rollout.ledger.partitions)
    part: Mapped[int] = mapped_column(BigInteger, default=_event_part, server_default="0")


class RolloutCountRow(Base):
    """Kept counters: how many targets of a rollout's stage are in each state.

    Updated in the same transaction as every target move, so dashboards read them in O(stages)
    instead of grouping millions of targets; the sum over states equals the stage's targets.
    """

    __tablename__ = "rollout_counts"

    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class RolloutReasonCountRow(Base):
    """Kept counters of side exits: how many of a rollout's targets are in a side-exit state
    (failed, unreachable, timed out, ineligible, cancelled) for each reason.

    Moved with the targets in the same transaction, like :class:`RolloutCountRow`, so a
    rollout's reason breakdown is read without grouping its targets. A row appears the first
    time a reason does (reasons are open-ended: error codes, APNs reasons).
    """

    __tablename__ = "rollout_reason_counts"

    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(bounds.TARGET_REASON), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class AlertRow(Base):
    """Something an operator must act on: open, then acknowledged, then resolved.

    ``open_key`` holds the finding's key while the alert is not resolved, so one finding has
    at most one live alert however often it is found; a resolved alert keeps ``key`` only.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AlertDeliveryRow(Base):
    """One notification of an alert to one channel (the outbox a delivery task drains)."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "state", "next_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # webhook | email
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ApiTokenRow(Base):
    """A bearer token of the operator API: only its hash is kept, with its role."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class HeartbeatRow(Base):
    """When a periodic task (``tick``, ``sweep``, ...) last completed: one row per task, written
    by the task, read by ``rollout check`` to tell whether beat is still driving the work."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ArchiveRow(Base):
    """One archive file written before rows left the ledger: a finished rollout's per-device
    rows (``rollout``), or records that belong to no kept rollout (``journal``).

    ``state`` is ``written`` once the file is on disk and verified, ``pruned`` once every row
    it holds has been deleted; a prune that stops between the two resumes from here.
    """

    __tablename__ = "archives"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))  # the file's name in the archive folder
    kind: Mapped[str] = mapped_column(String(16))
    rollout_id: Mapped[int | None] = mapped_column(BigID, index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # table -> count
    state: Mapped[str] = mapped_column(String(16), index=True)
    cutoff: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    pruned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
