"""The periodic inventory sweep: a ProvisioningProfileList rollout to every device, opened when
none is live and the last one is older than the period; its answers become the inventory."""

from __future__ import annotations

import datetime as dt

from rollout import controller
from rollout.clock import ManualClock
from rollout.dispatch import RecordingDispatcher
from rollout.inventory_sweep import sweep_if_due
from rollout.ledger import Ledger, ProfileFact
from rollout.operations import abort_rollout, rollout_report
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from tests.engine.support import import_fleet
from tests.support import NO_IDENTITY, udid

WEEK = dt.timedelta(days=7)
POLICY = EnginePolicy()
HELD = "5eed5eed-0000-4000-8000-000000000001"


def test_a_sweep_opens_when_due_and_its_answers_become_the_inventory(
    clock: ManualClock, ledger: Ledger
) -> None:
    devices = import_fleet(ledger, 3, clock.now())
    first = sweep_if_due(ledger, clock.now(), WEEK)
    assert first["sweep"] == "opened"
    rid = first["rollout"]
    data = rollout_report(ledger, rid, clock.now())
    assert data["rollout"]["state"] == "running" and data["states"] == {"planned": 3}
    assert sweep_if_due(ledger, clock.advance(3600), WEEK)["sweep"] == "not due"  # live

    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    expires = clock.now() + dt.timedelta(days=30)
    with ledger.checkin() as store:
        for n in range(3):
            [out] = process_reports(
                store,
                [Report(udid(n), "Idle")],
                identity=NO_IDENTITY,
                policy=POLICY,
                now=clock.now(),
            )
            assert out.served is not None and out.served.request_type == "ProvisioningProfileList"
            listed = (ProfileFact(HELD, "Held", expires),) if n < 2 else ()
            process_reports(
                store,
                [
                    Report(
                        udid(n),
                        "Acknowledged",
                        command_uuid=out.served.command_uuid,
                        profile_list=listed,
                    )
                ],
                identity=NO_IDENTITY,
                policy=POLICY,
                now=clock.now(),
            )
    with ledger.registry() as reg:
        assert [len(reg.installed(devices[n])) for n in range(3)] == [1, 1, 0]
        [holding] = reg.expiring(expires)
    assert holding.profile_uuid == HELD and holding.devices == 2

    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.advance(1))
    done = rollout_report(ledger, rid, clock.now())
    assert done["rollout"]["state"] == "completed", done
    assert sweep_if_due(ledger, clock.advance(86400), WEEK)["sweep"] == "not due"  # recent
    later = sweep_if_due(ledger, clock.advance(8 * 86400), WEEK)
    assert later["sweep"] == "opened" and later["rollout"] != rid


def test_sweeps_can_be_off_and_need_devices(clock: ManualClock, ledger: Ledger) -> None:
    assert sweep_if_due(ledger, clock.now(), None) == {"sweep": "off"}
    assert sweep_if_due(ledger, clock.now(), WEEK)["sweep"] == "none"  # no device yet
    import_fleet(ledger, 2, clock.now())
    opened = sweep_if_due(ledger, clock.now(), WEEK)
    assert opened["sweep"] == "opened"
    # however old, a sweep still running is not doubled
    assert sweep_if_due(ledger, clock.advance(30 * 86400), WEEK)["sweep"] == "not due"
    abort_rollout(ledger, opened["rollout"], actor="op", now=clock.now())
    # an aborted sweep is not live, and it is a month old: the next one opens
    assert sweep_if_due(ledger, clock.advance(3600), WEEK)["sweep"] == "opened"
