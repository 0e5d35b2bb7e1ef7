"""Verification of installs (a ProvisioningProfileList must show the profile), clean-up of a
superseded profile, inventory sweeps and removals, reconciled on both backends."""

from __future__ import annotations

import datetime as dt

from rollout import controller
from rollout.apns import PushClient
from rollout.clock import ManualClock
from rollout.dispatch import InlineDispatcher, RecordingDispatcher
from rollout.ledger import Ledger, ProfileFact
from rollout.mdm import parse_command
from rollout.operations import create_rollout
from rollout.policy import EnginePolicy
from rollout.reconcile import Outcome, Report, process_reports
from rollout.spec import ONE_STAGE, RolloutSpec, TargetSpec
from tests.engine.support import import_fleet
from tests.support import NO_IDENTITY, add_profile, checked_states, udid

POLICY = EnginePolicy(max_pushes=2, response_timeout=dt.timedelta(minutes=10), max_verify=2)
OLD = "0ddba11a-0000-4000-8000-000000000001"


def send(ledger: Ledger, clock: ManualClock, report: Report) -> Outcome:
    with ledger.checkin() as store:
        [out] = process_reports(
            store, [report], identity=NO_IDENTITY, policy=POLICY, now=clock.now()
        )
    return out


def rollout(ledger: Ledger, clock: ManualClock, n: int, **spec: object) -> tuple[int, object]:
    import_fleet(ledger, n, clock.now())
    profile = add_profile(ledger, clock.now())
    full = RolloutSpec(
        profile=profile.uuid, targets=TargetSpec(everything=True), stages=ONE_STAGE, **spec
    )  # type: ignore[arg-type]
    rid = create_rollout(ledger, full, actor="t", now=clock.now(), start=True).rollout.id
    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    return rid, profile


def install(ledger: Ledger, clock: ManualClock, n: int) -> Outcome:
    """Device ``n`` takes its install command and acknowledges it; the answer to that."""
    out = send(ledger, clock, Report(udid(n), "Idle"))
    assert out.served is not None and out.served.request_type == "InstallProvisioningProfile"
    return send(
        ledger, clock, Report(udid(n), "Acknowledged", command_uuid=out.served.command_uuid)
    )


def target(ledger: Ledger, rid: int) -> tuple[str, str | None]:
    with ledger.rollouts() as store:
        [t] = store.targets(rid).values()
    return t.state, t.reason


def test_an_install_is_verified_by_the_list_served_in_the_same_session_then_cleaned_up(
    clock: ManualClock, ledger: Ledger
) -> None:
    rid, profile = rollout(ledger, clock, 1, verify=True, cleanup=OLD)
    follow = install(ledger, clock, 0)
    assert follow.served is not None  # no second push needed: asked at once
    asked = parse_command(follow.served.body or b"")
    assert asked.request_type == "ProvisioningProfileList"
    assert target(ledger, rid) == ("acknowledged", None)
    listed = (
        ProfileFact(profile.uuid, "Field App", profile.expires_at),  # type: ignore[attr-defined]
        ProfileFact(OLD, "Old", None),
    )
    then = send(
        ledger,
        clock,
        Report(
            udid(0), "Acknowledged", command_uuid=follow.served.command_uuid, profile_list=listed
        ),
    )
    assert target(ledger, rid)[0] == "verified"
    assert then.served is not None
    removal = parse_command(then.served.body or b"")
    assert removal.request_type == "RemoveProvisioningProfile"
    assert removal.command["UUID"] == OLD
    send(ledger, clock, Report(udid(0), "Acknowledged", command_uuid=then.served.command_uuid))
    with ledger.registry() as store:
        device = store.get(udid(0))
        assert device is not None
        held = {f.profile_uuid: f.source for f in store.installed(device.id)}
    assert held == {profile.uuid: "profile_list"}  # type: ignore[attr-defined]
    assert checked_states(ledger, rid) == {"verified": 1}


def test_an_acknowledged_install_the_device_does_not_list_is_installed_again_then_fails(
    clock: ManualClock, ledger: Ledger
) -> None:
    rid, _ = rollout(ledger, clock, 1, verify=True)
    for attempt in (1, 2):
        follow = install(ledger, clock, 0)
        assert follow.served is not None
        send(
            ledger,
            clock,
            Report(
                udid(0), "Acknowledged", command_uuid=follow.served.command_uuid, profile_list=()
            ),
        )
        if attempt == 1:
            assert target(ledger, rid) == ("planned", "not_listed")
            controller.tick(ledger, RecordingDispatcher(), POLICY, clock.advance(1))
    assert target(ledger, rid) == ("failed", "not_verified:not_listed")


def test_a_device_silent_after_its_install_is_pushed_again_then_times_out(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    rid, _ = rollout(ledger, clock, 1, verify=True)
    install(ledger, clock, 0)  # and the device goes away before answering the list
    pushes = InlineDispatcher(
        lambda r, ids: controller.push_batch(ledger, apns, r, ids, POLICY, clock)
    )
    report = controller.tick(ledger, pushes, POLICY, clock.advance(dt.timedelta(minutes=11)))
    assert report.repushed == 1
    # woken, the device comes back with Idle and is asked for its list again
    again = send(ledger, clock, Report(udid(0), "Idle"))
    assert again.served is not None and again.served.request_type == "ProvisioningProfileList"
    controller.tick(ledger, pushes, POLICY, clock.advance(dt.timedelta(minutes=11)))
    assert target(ledger, rid) == ("acknowledged", None)  # pushed twice now
    controller.tick(ledger, pushes, POLICY, clock.advance(dt.timedelta(minutes=21)))
    assert target(ledger, rid) == ("timed_out", "not_verified")


def test_an_inventory_sweep_lists_and_records_what_devices_hold(
    clock: ManualClock, ledger: Ledger
) -> None:
    import_fleet(ledger, 2, clock.now())
    spec = RolloutSpec(
        profile="",
        command="list",
        targets=TargetSpec(everything=True),
        stages=ONE_STAGE,
        verify=False,
    )
    rid = create_rollout(ledger, spec, actor="t", now=clock.now(), start=True).rollout.id
    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    out = send(ledger, clock, Report(udid(0), "Idle"))
    assert out.served is not None and out.served.request_type == "ProvisioningProfileList"
    item = ProfileFact("abcdef01-2345-6789-abcd-ef0123456789", "Seen", None)
    send(
        ledger,
        clock,
        Report(udid(0), "Acknowledged", command_uuid=out.served.command_uuid, profile_list=(item,)),
    )
    assert checked_states(ledger, rid) == {"acknowledged": 1, "queued": 1}
    with ledger.registry() as store:
        device = store.get(udid(0))
        assert device is not None
        assert [f.profile_uuid for f in store.installed(device.id)] == [item.uuid]


def test_a_remove_rollout_sends_the_uuid_and_drops_the_fact(
    clock: ManualClock, ledger: Ledger
) -> None:
    import_fleet(ledger, 1, clock.now())
    from rollout.inventory import read_inventory

    with ledger.registry() as store:
        rows = read_inventory(f"udid,profiles\n{udid(0)},{OLD}\n".encode()).records
        store.import_devices(rows, clock.now())
    spec = RolloutSpec(
        profile=OLD,
        command="remove",
        targets=TargetSpec(holders_of=OLD),
        stages=ONE_STAGE,
        verify=False,
    )
    rid = create_rollout(ledger, spec, actor="t", now=clock.now(), start=True).rollout.id
    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    out = send(ledger, clock, Report(udid(0), "Idle"))
    assert out.served is not None and out.served.request_type == "RemoveProvisioningProfile"
    send(ledger, clock, Report(udid(0), "Acknowledged", command_uuid=out.served.command_uuid))
    assert checked_states(ledger, rid) == {"acknowledged": 1}
    with ledger.registry() as store:
        device = store.get(udid(0))
        assert device is not None and store.installed(device.id) == []
