"""The device registry's side of check-in: Authenticate, TokenUpdate and CheckOut."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rollout.ledger.events import record_event
from rollout.ledger.models import CommandRow, DeviceRow, TargetRow
from rollout.ledger.queue import IdentityPolicy, identity_refusal
from rollout.ledger.targets import Move, move_targets
from rollout.ledger.types import utcnow
from rollout.states import (
    FINAL_COMMAND_STATUSES,
    CommandStatus,
    EnrollmentState,
    TargetState,
    TokenState,
)
from rollout.transitions import OPEN_STATES

_DEVICE_FIELDS = (
    "os_version",
    "build_version",
    "product_name",
    "serial_number",
    "device_name",
    "model",
    "platform",
)


@dataclass(frozen=True)
class CheckinResult:
    """The answer to a check-in: 200 or a refusal (never 401) with its reason."""

    status_code: int
    refusal: str | None = None
    device_id: int | None = None


@dataclass(frozen=True)
class Authentication:
    """What an Authenticate message says about the enrollment."""

    enrollment_id: str
    udid: str | None
    enrollment_type: str
    topic: str | None
    details: dict[str, Any] = field(default_factory=dict)  # os_version, serial_number, …


def _refuse(session: Session, enrollment_id: str, reason: str, kind: str) -> CheckinResult:
    record_event(
        session, "mdm.refused", enrollment_id=enrollment_id, data={"reason": reason, "on": kind}
    )
    return CheckinResult(403 if "identity" in reason or "certificate" in reason else 400, reason)


def _known_device(
    session: Session,
    enrollment_id: str,
    cert_sha256: str | None,
    policy: IdentityPolicy | None,
    kind: str,
) -> DeviceRow | CheckinResult:
    """The enrolled device, locked, when its certificate fits; else the refusal to answer."""
    device = session.scalar(
        select(DeviceRow).where(DeviceRow.enrollment_id == enrollment_id).with_for_update()
    )
    if device is None:
        return _refuse(session, enrollment_id, "unknown_enrollment", kind)
    refusal = identity_refusal(device.identity_sha256, cert_sha256, policy or IdentityPolicy())
    if refusal:
        return _refuse(session, enrollment_id, refusal, kind)
    return device


def authenticate(
    session: Session,
    auth: Authentication,
    cert_sha256: str | None,
    policy: IdentityPolicy | None = None,
    now: dt.datetime | None = None,
) -> CheckinResult:
    """Create or re-enroll a device and bind its identity certificate.

    A re-enrollment drops the device's commands that have no final answer and sends their
    targets back to planning, to be queued again after the next TokenUpdate.
    """
    policy = policy or IdentityPolicy()
    now = now or utcnow()
    if cert_sha256 is None and policy.required:
        return _refuse(session, auth.enrollment_id, "no_identity", "Authenticate")
    if cert_sha256 is not None:
        holder = session.scalar(
            select(DeviceRow.enrollment_id).where(DeviceRow.identity_sha256 == cert_sha256)
        )
        if holder is not None and holder != auth.enrollment_id:
            return _refuse(session, auth.enrollment_id, "certificate_in_use", "Authenticate")
    device = session.scalar(
        select(DeviceRow).where(DeviceRow.enrollment_id == auth.enrollment_id).with_for_update()
    )
    details = {k: v for k, v in auth.details.items() if k in _DEVICE_FIELDS and v is not None}
    if device is None:
        device = DeviceRow(
            enrollment_id=auth.enrollment_id,
            udid=auth.udid,
            enrollment_type=auth.enrollment_type,
            created_at=now,
            tags=[],
        )
        session.add(device)
        reenrolled = False
    else:
        reenrolled = device.enrollment_state != EnrollmentState.IMPORTED
    device.enrollment_state = EnrollmentState.AUTHENTICATED
    device.topic = auth.topic or device.topic
    device.identity_sha256 = cert_sha256 or device.identity_sha256
    device.last_seen_at = now
    device.checked_out_at = None
    for key, value in details.items():
        setattr(device, key, value)
    session.flush()
    dropped = _drop_open_commands(session, device.id, requeue=True, now=now) if reenrolled else 0
    record_event(
        session,
        "mdm.authenticate",
        device_id=device.id,
        enrollment_id=auth.enrollment_id,
        data={"reenrolled": reenrolled, "dropped_commands": dropped},
    )
    return CheckinResult(200, device_id=device.id)


def token_update(
    session: Session,
    enrollment_id: str,
    *,
    token_hex: str,
    push_magic: str,
    topic: str | None,
    cert_sha256: str | None,
    policy: IdentityPolicy | None = None,
    now: dt.datetime | None = None,
) -> CheckinResult:
    """Store the push token and PushMagic; the device becomes pushable and its targets resume."""
    now = now or utcnow()
    device = _known_device(session, enrollment_id, cert_sha256, policy, "TokenUpdate")
    if isinstance(device, CheckinResult):
        return device
    if device.identity_sha256 is None and cert_sha256 is not None:
        device.identity_sha256 = cert_sha256
    first = device.enrolled_at is None or device.enrollment_state != EnrollmentState.ENROLLED
    device.push_token = token_hex
    device.push_magic = push_magic
    device.topic = topic or device.topic
    device.token_state = TokenState.ACTIVE
    device.token_dead_at = None
    device.enrollment_state = EnrollmentState.ENROLLED
    device.enrolled_at = device.enrolled_at or now
    device.checked_out_at = None
    device.last_seen_at = now
    session.flush()
    # Targets waiting for this device: back to planning so the next controller tick queues them.
    waiting = session.execute(
        select(TargetRow.id).where(
            TargetRow.device_id == device.id,
            (TargetRow.requeue_after_token_update.is_(True))
            | (TargetRow.state == TargetState.UNREACHABLE),
        )
    ).scalars()
    ids = list(waiting)
    if ids:
        session.execute(
            update(TargetRow).where(TargetRow.id.in_(ids)).values(requeue_after_token_update=False)
        )
        move_targets(
            session,
            [Move(t, TargetState.PLANNED, {"reason": None, "next_push_at": None}) for t in ids],
        )
    record_event(
        session,
        "mdm.token_update",
        device_id=device.id,
        enrollment_id=enrollment_id,
        data={"first": first, "resumed_targets": len(ids)},
    )
    return CheckinResult(200, device_id=device.id)


def check_out(
    session: Session,
    enrollment_id: str,
    cert_sha256: str | None,
    policy: IdentityPolicy | None = None,
    now: dt.datetime | None = None,
) -> CheckinResult:
    """Mark the device gone, drop its open commands and cancel its open targets."""
    now = now or utcnow()
    device = _known_device(session, enrollment_id, cert_sha256, policy, "CheckOut")
    if isinstance(device, CheckinResult):
        return device
    device.enrollment_state = EnrollmentState.CHECKED_OUT
    device.checked_out_at = now
    device.last_seen_at = now
    session.flush()
    _drop_open_commands(session, device.id, requeue=False, now=now)
    open_targets = session.scalars(
        select(TargetRow.id).where(
            TargetRow.device_id == device.id,
            TargetRow.state.in_([s.value for s in OPEN_STATES | {TargetState.UNREACHABLE}]),
        )
    ).all()
    move_targets(
        session,
        [
            Move(t, TargetState.CANCELLED, {"reason": "checked_out", "finished_at": now})
            for t in open_targets
        ],
    )
    record_event(session, "mdm.check_out", device_id=device.id, enrollment_id=enrollment_id)
    return CheckinResult(200, device_id=device.id)


def _drop_open_commands(
    session: Session, device_id: int, *, requeue: bool, now: dt.datetime
) -> int:
    open_cmds = session.execute(
        select(CommandRow.id, CommandRow.command_uuid).where(
            CommandRow.device_id == device_id,
            CommandRow.status.not_in([s.value for s in FINAL_COMMAND_STATUSES]),
        )
    ).all()
    if not open_cmds:
        return 0
    session.execute(
        update(CommandRow)
        .where(CommandRow.id.in_([c.id for c in open_cmds]))
        .values(status=CommandStatus.INACTIVE.value, result_at=now)
    )
    if requeue:
        targets = session.scalars(
            select(TargetRow.id).where(
                TargetRow.device_id == device_id,
                TargetRow.command_uuid.in_([c.command_uuid for c in open_cmds]),
                TargetRow.state.in_([s.value for s in OPEN_STATES]),
            )
        ).all()
        session.execute(
            update(TargetRow)
            .where(TargetRow.id.in_(targets))
            .values(requeue_after_token_update=True)
        )
        move_targets(
            session,
            [
                Move(t, TargetState.PLANNED, {"command_uuid": None, "reason": "re-enrolled"})
                for t in targets
            ],
        )
    return len(open_cmds)
