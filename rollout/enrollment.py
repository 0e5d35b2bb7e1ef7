"""Check-in decisions: Authenticate, TokenUpdate and CheckOut turned into ledger facts.

Called by the built-in MDM endpoint and by webhook receivers alike, inside one ledger
transaction. Refusals come back as reasons (the web layer picks the HTTP status, never 401);
every refusal is recorded.

Identity: a device is bound to the SHA-256 of its identity certificate at Authenticate; later
messages must carry the same certificate (``strict``), or bind it on first sight for fleets
migrated from another MDM (``bind-on-first-sight``). A certificate bound to one enrollment can
never be used by another, and a device that re-enrolls with a new certificate is recorded as a
security event with both fingerprints.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rollout.ledger import Authentication, CheckinStore, EnrolledDevice, Event, PushRegistration
from rollout.mdm import Authenticate, CheckinMessage, CheckOut, TokenUpdate
from rollout.mdm.products import platform_of
from rollout.states import EnrollmentState, TargetState
from rollout.transitions import OPEN_STATES, move

#: Refusals caused by the identity (the device's certificate), as opposed to its message.
IDENTITY_REFUSALS = frozenset(
    {"no_identity", "unbound_device", "identity_mismatch", "certificate_in_use"}
)


@dataclass(frozen=True)
class IdentityPolicy:
    """How strictly a device's certificate must match the one bound at enrollment."""

    required: bool = True  # a message without a verified certificate is refused
    bind_on_first_sight: bool = False  # migrated fleets: bind a device that has no binding yet


@dataclass(frozen=True)
class CheckinOutcome:
    """A check-in's result: accepted (``refusal`` None) or refused with a reason."""

    refusal: str | None = None
    device_id: int | None = None


def identity_refusal(
    device_sha: str | None, report_sha: str | None, policy: IdentityPolicy
) -> str | None:
    """Why a message's certificate does not fit its device's binding, or None when it does."""
    if report_sha is None:
        return "no_identity" if policy.required else None
    if device_sha is None:
        return None if policy.bind_on_first_sight or not policy.required else "unbound_device"
    if device_sha != report_sha:
        return "identity_mismatch"
    return None


def handle_checkin(
    store: CheckinStore,
    msg: CheckinMessage,
    cert_sha256: str | None,
    policy: IdentityPolicy,
    now: dt.datetime,
) -> CheckinOutcome:
    """Apply one device-channel Authenticate, TokenUpdate or CheckOut."""
    key = msg.enrollment.device_key
    if isinstance(msg, Authenticate):
        return authenticate(store, msg, cert_sha256, policy, now)
    if isinstance(msg, TokenUpdate):
        reg = PushRegistration(token_hex=msg.token_hex, push_magic=msg.push_magic, topic=msg.topic)
        return token_update(store, key, reg, cert_sha256, policy, now)
    if isinstance(msg, CheckOut):
        return check_out(store, key, cert_sha256, policy, now)
    raise TypeError(f"not an enrollment message: {type(msg).__name__}")


def authenticate(
    store: CheckinStore,
    msg: Authenticate,
    cert_sha256: str | None,
    policy: IdentityPolicy,
    now: dt.datetime,
) -> CheckinOutcome:
    """Create or re-enroll a device and bind its identity certificate.

    A re-enrollment drops the device's commands that have no final answer and sends their
    targets back to planning, to be queued again after the next TokenUpdate.
    """
    key = msg.enrollment.device_key
    if cert_sha256 is None and policy.required:
        return _refuse(store, key, "no_identity", "Authenticate", now)
    if cert_sha256 is not None:
        holder = store.certificate_holder(cert_sha256)
        if holder is not None and holder != key:
            return _refuse(store, key, "certificate_in_use", "Authenticate", now)
    before = store.device(key)
    device_id = store.authenticate(
        Authentication(
            key=key,
            udid=msg.enrollment.udid,
            enrollment_type="user" if msg.enrollment.is_user_enrollment else "device",
            topic=msg.topic,
            identity_sha256=cert_sha256,
            details={
                k: v
                for k, v in (
                    ("os_version", msg.os_version),
                    ("build_version", msg.build_version),
                    ("product_name", msg.product_name),
                    ("serial_number", msg.serial_number),
                    ("device_name", msg.device_name),
                    ("model", msg.model),
                    ("platform", platform_of(msg.product_name, msg.model)),
                )
                if v is not None
            },
        ),
        now,
    )
    events: list[Event] = []
    reenrolled = before is not None and before.state != EnrollmentState.IMPORTED
    dropped = _requeue_after_reenrollment(store, device_id, now) if reenrolled else 0
    if before is not None and _rebound(before, cert_sha256):
        events.append(
            Event(
                "security.identity_rebound",
                {"previous_sha256": before.identity_sha256, "new_sha256": cert_sha256},
                device_id=device_id,
                enrollment_id=key,
            )
        )
    events.append(
        Event(
            "mdm.authenticate",
            {"reenrolled": reenrolled, "dropped_commands": dropped},
            device_id=device_id,
            enrollment_id=key,
        )
    )
    store.record(events, now)
    return CheckinOutcome(device_id=device_id)


def token_update(
    store: CheckinStore,
    key: str,
    reg: PushRegistration,
    cert_sha256: str | None,
    policy: IdentityPolicy,
    now: dt.datetime,
) -> CheckinOutcome:
    """Store the push token and PushMagic; the device becomes pushable and its waiting
    targets (unreachable, or sent back at a re-enrollment) return to planning."""
    device = _known_device(store, key, cert_sha256, policy, "TokenUpdate", now)
    if not isinstance(device, EnrolledDevice):
        return device
    if device.state == EnrollmentState.CHECKED_OUT:
        # A device that left management comes back through Authenticate (a new enrollment),
        # never by a stray TokenUpdate.
        return _refuse(store, key, "checked_out", "TokenUpdate", now)
    if device.identity_sha256 is None and cert_sha256 is not None:
        store.bind_identity(device.id, cert_sha256)
    first = store.register_push(device.id, reg, now)
    waiting = store.device_targets(device.id, [TargetState.UNREACHABLE.value], flagged=True)
    if waiting:
        store.flag_for_token_update(waiting, False)
        store.move(
            [move(t, TargetState.PLANNED, reason=None, next_push_at=None) for t in waiting], now
        )
    store.record(
        [
            Event(
                "mdm.token_update",
                {"first": first, "resumed_targets": len(waiting)},
                device_id=device.id,
                enrollment_id=key,
            )
        ],
        now,
    )
    return CheckinOutcome(device_id=device.id)


def check_out(
    store: CheckinStore,
    key: str,
    cert_sha256: str | None,
    policy: IdentityPolicy,
    now: dt.datetime,
) -> CheckinOutcome:
    """Mark the device gone, drop its open commands and cancel its open targets."""
    device = _known_device(store, key, cert_sha256, policy, "CheckOut", now)
    if not isinstance(device, EnrolledDevice):
        return device
    store.check_out(device.id, now)
    # leaving management removes what MDM installed; the inventory no longer holds for it
    store.forget_profiles(device.id)
    store.drop_open_commands(device.id, now)
    still_open = [s.value for s in OPEN_STATES | {TargetState.UNREACHABLE}]
    targets = store.device_targets(device.id, still_open)
    store.move(
        [move(t, TargetState.CANCELLED, reason="checked_out", finished_at=now) for t in targets],
        now,
    )
    store.record([Event("mdm.check_out", device_id=device.id, enrollment_id=key)], now)
    return CheckinOutcome(device_id=device.id)


def _rebound(before: EnrolledDevice, cert_sha256: str | None) -> bool:
    return (
        before.identity_sha256 is not None
        and cert_sha256 is not None
        and before.identity_sha256 != cert_sha256
    )


def _requeue_after_reenrollment(store: CheckinStore, device_id: int, now: dt.datetime) -> int:
    """Re-enrollment clears the device's queue (a new enrollment has new push data and no
    memory of our commands): drop the unanswered commands and send their targets back to
    planning, held until the device's next TokenUpdate."""
    dropped = store.drop_open_commands(device_id, now)
    if dropped:
        open_states = [s.value for s in OPEN_STATES]
        targets = store.device_targets(device_id, open_states, command_uuids=dropped)
        store.flag_for_token_update(targets, True)
        store.move(
            [
                move(t, TargetState.PLANNED, command_uuid=None, reason="re-enrolled")
                for t in targets
            ],
            now,
        )
    return len(dropped)


def _known_device(
    store: CheckinStore,
    key: str,
    cert_sha256: str | None,
    policy: IdentityPolicy,
    kind: str,
    now: dt.datetime,
) -> EnrolledDevice | CheckinOutcome:
    """The enrolled device, locked, when its certificate fits; else the recorded refusal."""
    device = store.device(key)
    if device is None:
        return _refuse(store, key, "unknown_enrollment", kind, now)
    refusal = identity_refusal(device.identity_sha256, cert_sha256, policy)
    if refusal:
        return _refuse(store, key, refusal, kind, now)
    return device


def _refuse(
    store: CheckinStore, key: str, reason: str, kind: str, now: dt.datetime
) -> CheckinOutcome:
    store.record([Event("mdm.refused", {"reason": reason, "on": kind}, enrollment_id=key)], now)
    return CheckinOutcome(refusal=reason)
