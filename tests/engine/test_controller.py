"""The controller and fan-out, called directly (no Celery), on both backends, on one clock."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

from rollout import controller
from rollout.apns import PushClient
from rollout.clock import ManualClock
from rollout.dispatch import InlineDispatcher, RecordingDispatcher
from rollout.enrollment import token_update
from rollout.ledger import Ledger, PushRegistration
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.sim.apns_server import ApnsStandIn
from tests.engine.support import make_fleet
from tests.support import NO_IDENTITY, checked_states, token, udid

POLICY = EnginePolicy(batch_size=4, max_pushes=2, response_timeout=dt.timedelta(minutes=10))


def inline(ledger: Ledger, apns: PushClient, clock: ManualClock) -> InlineDispatcher:
    return InlineDispatcher(
        lambda rid, ids: controller.push_batch(ledger, apns, rid, ids, POLICY, clock)
    )


def answer(ledger: Ledger, n: int, status: str, at: dt.datetime) -> None:
    """Device ``n`` connects at ``at``: Idle, then ``status`` for the command it is given."""
    with ledger.checkin() as store:
        [out] = process_reports(
            store, [Report(udid(n), "Idle")], identity=NO_IDENTITY, policy=POLICY, now=at
        )
        assert out.served is not None, f"device {n} got no command"
        process_reports(
            store,
            [Report(udid(n), status, command_uuid=out.served.command_uuid)],
            identity=NO_IDENTITY,
            policy=POLICY,
            now=at,
        )


def target(ledger: Ledger, rollout_id: int, device_id: int):  # type: ignore[no-untyped-def]
    with ledger.rollouts() as store:
        return store.targets(rollout_id, [device_id])[device_id]


def test_tick_pushes_every_pushable_target_in_batches(
    clock: ManualClock, ledger: Ledger, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(ledger, 11, clock.now(), no_token=frozenset({3}))
    with ledger.fanout() as store:  # APNs said so after the rollout was planned
        store.mark_tokens_dead([(fleet.devices[7], clock.now())])
    dispatcher = inline(ledger, apns, clock)
    report = controller.tick(ledger, dispatcher, POLICY, clock.now())
    assert report.claimed == 9 and report.unreachable == 1
    assert [len(ids) for _, ids in dispatcher.sent] == [4, 4, 1]  # batches, not devices
    assert checked_states(ledger, fleet.rollout_id) == {
        "pushed": 9,
        "unreachable": 1,
        "ineligible": 1,
    }
    with ledger.rollouts() as store:
        assert sum(store.command_counts(fleet.rollout_id).values()) == 9
    assert target(ledger, fleet.rollout_id, fleet.devices[3]).reason == "never_pushable"
    assert target(ledger, fleet.rollout_id, fleet.devices[7]).reason == "token_dead"
    assert standin.counters()["requests"] >= 9
    # a second tick finds nothing new to claim
    again = controller.tick(ledger, dispatcher, POLICY, clock.now())
    assert again.claimed == 0 and again.repushed == 0


def test_dead_tokens_become_unreachable_and_a_token_update_resumes_them(
    clock: ManualClock, ledger: Ledger, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(ledger, 3, clock.now())
    standin.unregister(token(1))
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"pushed": 2, "unreachable": 1}
    with ledger.registry() as store:
        device = store.get(udid(1))
        assert device is not None and device.token_state == "dead"
    assert target(ledger, fleet.rollout_id, fleet.devices[1]).reason == "token_dead:Unregistered"
    standin.reset()
    with ledger.checkin() as store:
        reg = PushRegistration(token_hex=token(101), push_magic="m", topic=None)
        out = token_update(store, udid(1), reg, None, NO_IDENTITY, clock.now())
        assert out.refusal is None
    assert checked_states(ledger, fleet.rollout_id) == {"pushed": 2, "planned": 1}
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"pushed": 3}


def test_silent_targets_are_pushed_again_then_time_out_and_a_late_ack_counts_once(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 2, clock.now())
    dispatcher = inline(ledger, apns, clock)
    controller.tick(ledger, dispatcher, POLICY, clock.now())
    answer(ledger, 0, "Acknowledged", clock.now())
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=9)))
    assert report.repushed == 0  # not yet: the answer is awaited for ten minutes
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=2)))
    assert report.repushed == 1 and report.timed_out == 0
    silent = target(ledger, fleet.rollout_id, fleet.devices[1])
    assert silent.push_count == 2 and silent.state == "pushed"
    with ledger.rollouts() as store:
        assert sum(store.command_counts(fleet.rollout_id).values()) == 2  # the same command
    # the second wait doubles (20 minutes): nothing at 19, timed out at 21
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=19)))
    assert report.timed_out == 0
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=2)))
    assert report.timed_out == 1
    assert report.completed == [fleet.rollout_id]
    assert checked_states(ledger, fleet.rollout_id) == {"acknowledged": 1, "timed_out": 1}
    answer(ledger, 1, "Acknowledged", clock.now())  # the device finally shows up
    assert checked_states(ledger, fleet.rollout_id) == {"acknowledged": 2}
    again = Report(udid(1), "Acknowledged", command_uuid=silent.command_uuid)
    with ledger.checkin() as store:
        process_reports(store, [again], identity=NO_IDENTITY, policy=POLICY, now=clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"acknowledged": 2}


def test_notnow_is_pushed_again_after_its_backoff_not_before(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 1, clock.now())
    dispatcher = inline(ledger, apns, clock)
    controller.tick(ledger, dispatcher, POLICY, clock.now())
    answer(ledger, 0, "NotNow", clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"deferred": 1}
    soon = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=4)))
    assert soon.repushed == 0  # no tight loop: the first NotNow waits five minutes
    due = controller.tick(ledger, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=2)))
    assert due.repushed == 1
    assert checked_states(ledger, fleet.rollout_id) == {"pushed": 1}


def test_transient_apns_failures_leave_targets_for_a_later_try(
    clock: ManualClock, ledger: Ledger, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(ledger, 3, clock.now())
    standin.fail_next(500, "InternalServerError", count=1000)
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"queued": 3}  # nothing given up
    standin.reset()
    report = controller.tick(
        ledger, inline(ledger, apns, clock), POLICY, clock.advance(dt.timedelta(minutes=2))
    )
    assert report.repushed == 3
    assert checked_states(ledger, fleet.rollout_id) == {"pushed": 3}


def test_a_lost_batch_is_dispatched_again_after_its_grace(
    clock: ManualClock, ledger: Ledger
) -> None:
    fleet = make_fleet(ledger, 5, clock.now())
    lost = RecordingDispatcher()  # sent, never pushed
    controller.tick(ledger, lost, POLICY, clock.now())
    assert checked_states(ledger, fleet.rollout_id) == {"queued": 5}
    early = controller.tick(ledger, lost, POLICY, clock.advance(dt.timedelta(minutes=1)))
    assert early.repushed == 0
    late = controller.tick(ledger, lost, POLICY, clock.advance(dt.timedelta(minutes=2)))
    assert late.repushed == 5


def test_concurrent_ticks_never_dispatch_a_target_twice(clock: ManualClock, ledger: Ledger) -> None:
    fleet = make_fleet(ledger, 60, clock.now())
    dispatchers = [RecordingDispatcher() for _ in range(4)]
    errors: list[BaseException] = []

    def run(d: RecordingDispatcher) -> None:
        try:
            controller.tick(ledger, d, POLICY, clock.now())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sent = Counter(tid for d in dispatchers for _, ids in d.sent for tid in ids)
    assert len(sent) == 60 and max(sent.values()) == 1
    assert checked_states(ledger, fleet.rollout_id) == {"queued": 60}


def test_a_finished_rollout_completes(clock: ManualClock, ledger: Ledger, apns: PushClient) -> None:
    fleet = make_fleet(ledger, 2, clock.now())
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    answer(ledger, 0, "Acknowledged", clock.now())
    answer(ledger, 1, "Error", clock.now())
    report = controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    assert report.completed == [fleet.rollout_id]
    with ledger.rollouts() as store:
        info = store.get(fleet.rollout_id)
    assert info is not None and info.state == "completed" and info.finished_at == clock.now()


def test_due_decisions_follow_the_policy(clock: ManualClock) -> None:
    from rollout.ledger import DueTarget

    now = clock.now()
    due = [
        DueTarget(1, 7, "pushed", 1, 0),  # silent, one push: again
        DueTarget(2, 7, "pushed", 2, 0),  # silent, pushed enough: timed out
        DueTarget(3, 7, "deferred", 1, 12),  # NotNow'd too often: timed out
        DueTarget(4, 8, "queued", 5, 0),  # dispatched, never pushed: again
    ]
    again, expire = controller.due_decisions(due, POLICY, now)
    assert again == {7: [1], 8: [4]}
    assert [(m.target_id, m.to, m.fields["reason"]) for m in expire] == [
        (2, "timed_out", "no_answer"),
        (3, "timed_out", "notnow_limit"),
    ]
