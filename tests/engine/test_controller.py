"""The controller and fan-out functions, called directly (no Celery), on both backends."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

from sqlalchemy import Engine, func, select

from rollout import controller
from rollout.apns import PushClient
from rollout.clock import ManualClock
from rollout.dispatch import InlineDispatcher, RecordingDispatcher
from rollout.ledger import db
from rollout.ledger.enrollment import token_update
from rollout.ledger.models import CommandRow, DeviceRow, RolloutRow, TargetRow
from rollout.ledger.queue import IdentityPolicy, Report, process_reports
from rollout.policy import EnginePolicy
from rollout.sim.apns_server import ApnsStandIn
from tests.engine.conftest import make_fleet, states, token, udid

POLICY = EnginePolicy(batch_size=4, max_pushes=2, response_timeout=dt.timedelta(minutes=10))
NO_IDENTITY = IdentityPolicy(required=False)


def inline(engine: Engine, apns: PushClient, clock: ManualClock) -> InlineDispatcher:
    return InlineDispatcher(
        lambda rid, ids: controller.push_batch(engine, apns, rid, ids, POLICY, clock)
    )


def answer(engine: Engine, n: int, status: str, at: dt.datetime) -> None:
    """Device ``n`` connects at ``at``: Idle, then ``status`` for the command it is given."""
    with db.transaction(engine) as s:
        [out] = process_reports(s, [Report(udid(n), "Idle")], identity=NO_IDENTITY, now=at)
        assert out.served is not None, f"device {n} got no command"
        process_reports(
            s,
            [Report(udid(n), status, command_uuid=out.served.command_uuid)],
            identity=NO_IDENTITY,
            now=at,
        )


def test_tick_pushes_every_pushable_target_in_batches(
    clock: ManualClock, engine: Engine, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(engine, 10, no_token={3})
    dispatcher = inline(engine, apns, clock)
    report = controller.tick(engine, dispatcher, POLICY, clock.now())
    assert report.claimed == 9 and report.unreachable == 1
    assert [len(ids) for _, ids in dispatcher.sent] == [4, 4, 1]  # batches, not devices
    assert states(engine, fleet.rollout_id) == {"pushed": 9, "unreachable": 1}
    with db.transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(CommandRow)) == 9
        reason = s.scalar(select(TargetRow.reason).where(TargetRow.device_id == fleet.devices[3]))
        assert reason == "no_token"
    assert standin.counters()["requests"] >= 9
    # a second tick finds nothing new to claim
    again = controller.tick(engine, dispatcher, POLICY, clock.now())
    assert again.claimed == 0 and again.repushed == 0


def test_dead_tokens_become_unreachable_and_a_token_update_resumes_them(
    clock: ManualClock, engine: Engine, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(engine, 3)
    standin.unregister(token(1))
    controller.tick(engine, inline(engine, apns, clock), POLICY, clock.now())
    assert states(engine, fleet.rollout_id) == {"pushed": 2, "unreachable": 1}
    with db.transaction(engine) as s:
        dev = s.get(DeviceRow, fleet.devices[1])
        assert dev is not None and dev.token_state == "dead"
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == fleet.devices[1]))
        assert t is not None and t.reason == "token_dead:Unregistered"
    standin.reset()
    with db.transaction(engine) as s:
        token_update(s, udid(1), token_hex=token(101), push_magic="m", topic=None,
                     cert_sha256=None, policy=NO_IDENTITY)  # fmt: skip
    assert states(engine, fleet.rollout_id) == {"pushed": 2, "planned": 1}
    controller.tick(engine, inline(engine, apns, clock), POLICY, clock.now())
    assert states(engine, fleet.rollout_id) == {"pushed": 3}


def test_silent_targets_are_pushed_again_then_time_out_and_a_late_ack_counts_once(
    clock: ManualClock, engine: Engine, apns: PushClient
) -> None:
    fleet = make_fleet(engine, 2)
    dispatcher = inline(engine, apns, clock)
    controller.tick(engine, dispatcher, POLICY, clock.now())
    answer(engine, 0, "Acknowledged", clock.now())
    later = clock.advance(dt.timedelta(minutes=11))
    report = controller.tick(engine, dispatcher, POLICY, later)
    assert report.repushed == 1 and report.timed_out == 0
    with db.transaction(engine) as s:
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == fleet.devices[1]))
        assert t is not None and t.push_count == 2 and t.state == "pushed"
        commands = s.scalar(
            select(func.count())
            .select_from(CommandRow)
            .where(CommandRow.device_id == fleet.devices[1])
        )
        assert commands == 1  # re-pushed with the same command
    much_later = clock.advance(dt.timedelta(minutes=21))
    report = controller.tick(engine, dispatcher, POLICY, much_later)
    assert report.timed_out == 1
    assert report.completed == [fleet.rollout_id]
    assert states(engine, fleet.rollout_id) == {"acknowledged": 1, "timed_out": 1}
    answer(engine, 1, "Acknowledged", much_later)  # the device finally shows up
    assert states(engine, fleet.rollout_id) == {"acknowledged": 2}
    answer_again = Report(udid(1), "Acknowledged", command_uuid="x")
    with db.transaction(engine) as s:
        process_reports(s, [answer_again], identity=NO_IDENTITY, now=clock.now())
    assert states(engine, fleet.rollout_id) == {"acknowledged": 2}


def test_notnow_is_pushed_again_after_its_backoff_not_before(
    clock: ManualClock, engine: Engine, apns: PushClient
) -> None:
    fleet = make_fleet(engine, 1)
    dispatcher = inline(engine, apns, clock)
    controller.tick(engine, dispatcher, POLICY, clock.now())
    with db.transaction(engine) as s:
        [out] = process_reports(s, [Report(udid(0), "Idle")], identity=NO_IDENTITY, now=clock.now())
        assert out.served is not None
        process_reports(
            s,
            [Report(udid(0), "NotNow", command_uuid=out.served.command_uuid)],
            identity=NO_IDENTITY,
            now=clock.now(),
            notnow_delay=POLICY.notnow_delay,
        )
    assert states(engine, fleet.rollout_id) == {"deferred": 1}
    soon = controller.tick(engine, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=1)))
    assert soon.repushed == 0  # no tight loop
    due = controller.tick(engine, dispatcher, POLICY, clock.advance(dt.timedelta(minutes=5)))
    assert due.repushed == 1
    assert states(engine, fleet.rollout_id) == {"pushed": 1}


def test_transient_apns_failures_leave_targets_for_a_later_try(
    clock: ManualClock, engine: Engine, apns: PushClient, standin: ApnsStandIn
) -> None:
    fleet = make_fleet(engine, 3)
    standin.fail_next(500, "InternalServerError", count=1000)
    controller.tick(engine, inline(engine, apns, clock), POLICY, clock.now())
    assert states(engine, fleet.rollout_id) == {"queued": 3}  # nothing given up
    standin.reset()
    report = controller.tick(
        engine, inline(engine, apns, clock), POLICY, clock.advance(dt.timedelta(minutes=2))
    )
    assert report.repushed == 3
    assert states(engine, fleet.rollout_id) == {"pushed": 3}


def test_concurrent_ticks_never_dispatch_a_target_twice(clock: ManualClock, engine: Engine) -> None:
    fleet = make_fleet(engine, 60)
    dispatchers = [RecordingDispatcher() for _ in range(4)]
    errors: list[BaseException] = []

    def run(d: RecordingDispatcher) -> None:
        try:
            controller.tick(engine, d, POLICY, clock.now())
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
    assert states(engine, fleet.rollout_id) == {"queued": 60}


def test_a_finished_rollout_completes(clock: ManualClock, engine: Engine, apns: PushClient) -> None:
    fleet = make_fleet(engine, 2)
    controller.tick(engine, inline(engine, apns, clock), POLICY, clock.now())
    answer(engine, 0, "Acknowledged", clock.now())
    answer(engine, 1, "Error", clock.now())
    report = controller.tick(engine, inline(engine, apns, clock), POLICY, clock.now())
    assert report.completed == [fleet.rollout_id]
    with db.transaction(engine) as s:
        r = s.get(RolloutRow, fleet.rollout_id)
        assert r is not None and r.state == "completed" and r.finished_at is not None
