"""Check-in decisions: Authenticate, TokenUpdate, CheckOut and the identity rules around them."""

from __future__ import annotations

from rollout.clock import ManualClock
from rollout.enrollment import IdentityPolicy, check_out, handle_checkin, token_update
from rollout.ledger import Ledger, PushRegistration
from rollout.mdm import Authenticate, Enrollment
from rollout.reconcile import Report
from tests.engine.support import CERT, enrolled, queued_rollout, report, state
from tests.support import TOPIC, checked_states, udid

STRICT = IdentityPolicy()


def authenticate(ledger: Ledger, clock: ManualClock, n: int, cert: str | None):  # type: ignore[no-untyped-def]
    with ledger.checkin() as store:
        msg = Authenticate(Enrollment(udid=udid(n)), TOPIC, os_version="17.5")
        return handle_checkin(store, msg, cert, STRICT, clock.now())


def test_one_certificate_cannot_serve_two_enrollments(clock: ManualClock, ledger: Ledger) -> None:
    enrolled(ledger, clock, 1)
    assert authenticate(ledger, clock, 2, CERT[1]).refusal == "certificate_in_use"
    with ledger.registry() as store:
        assert store.get(udid(2)) is None  # nothing was written for the impostor


def test_authenticate_needs_an_identity_unless_identity_is_off(
    clock: ManualClock, ledger: Ledger
) -> None:
    assert authenticate(ledger, clock, 3, None).refusal == "no_identity"
    with ledger.checkin() as store:
        msg = Authenticate(Enrollment(udid=udid(3)), TOPIC)
        out = handle_checkin(store, msg, None, IdentityPolicy(required=False), clock.now())
    assert out.refusal is None


def test_rebinding_a_device_to_a_new_certificate_is_a_security_event(
    clock: ManualClock, ledger: Ledger
) -> None:
    enrolled(ledger, clock, 1)
    assert authenticate(ledger, clock, 1, CERT[9]).refusal is None
    with ledger.checkin() as store:
        [event] = store.events(kind="security.identity_rebound")
    assert event.data == {"previous_sha256": CERT[1], "new_sha256": CERT[9]}
    # the old certificate no longer speaks for the device
    [out] = report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert out.refusal == "identity_mismatch"


def test_reenrollment_drops_open_commands_and_requeues_after_token_update(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    rid, cmds, _ = queued_rollout(ledger, clock, [1])
    report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert authenticate(ledger, clock, 1, CERT[1]).refusal is None
    with ledger.rollouts() as store:
        t = store.targets(rid, [dev])[dev]
        assert store.command_counts(rid) == {"inactive": 1}
    assert t.state == "planned" and t.requeue_after_token_update and t.command_uuid is None
    # a result for the dropped command changes no target
    report(
        ledger, clock, Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    )
    assert state(ledger, rid, dev) == "planned"
    with ledger.checkin() as store:
        reg = PushRegistration(token_hex="cd" * 32, push_magic="m2", topic=None)
        assert token_update(store, udid(1), reg, CERT[1], STRICT, clock.now()).refusal is None
    with ledger.rollouts() as store:
        assert not store.targets(rid, [dev])[dev].requeue_after_token_update
    checked_states(ledger, rid)


def test_check_out_cancels_open_targets_and_a_token_update_cannot_bring_it_back(
    clock: ManualClock, ledger: Ledger
) -> None:
    a, b = enrolled(ledger, clock, 1, 2)
    rid, cmds, _ = queued_rollout(ledger, clock, [1, 2])
    report(
        ledger, clock, Report(udid(2), "Acknowledged", command_uuid=cmds[b], cert_sha256=CERT[2])
    )
    with ledger.registry() as reg:
        assert len(reg.installed(b)) == 1  # the acknowledged install is in the inventory
    with ledger.checkin() as store:
        assert check_out(store, udid(1), CERT[1], STRICT, clock.now()).refusal is None
        assert check_out(store, udid(2), CERT[2], STRICT, clock.now()).refusal is None
    with ledger.registry() as reg:
        assert reg.installed(b) == []  # a checked-out device holds nothing for the scan
    assert state(ledger, rid, a) == "cancelled"
    assert state(ledger, rid, b) == "acknowledged"
    [out] = report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert out.served is None
    with ledger.checkin() as store:
        reg = PushRegistration(token_hex="cd" * 32, push_magic="m2", topic=None)
        assert token_update(store, udid(1), reg, CERT[1], STRICT, clock.now()).refusal == (
            "checked_out"
        )
    with ledger.registry() as store:
        device = store.get(udid(1))
    assert device is not None and device.state == "checked_out"
    # Authenticate is the way back
    assert authenticate(ledger, clock, 1, CERT[1]).refusal is None
    assert checked_states(ledger, rid) == {"cancelled": 1, "acknowledged": 1}
