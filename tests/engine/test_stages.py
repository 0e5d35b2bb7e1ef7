"""Staged rollouts driven by the controller on one clock: stages that advance when their gate
passes, a bad canary that halts before stage two is pushed, manual approval, promotion windows,
the operator's controls, deadlines and command time-to-live, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout import controller
from rollout.apns import PushClient
from rollout.clock import ManualClock
from rollout.dispatch import InlineDispatcher, RecordingDispatcher
from rollout.ledger import Ledger
from rollout.operations import (
    OperationError,
    abort_rollout,
    approve_stage,
    pause_rollout,
    resume_rollout,
    retry_targets,
    rollout_report,
)
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.spec import Gate, StageSpec, parse_window
from tests.engine.support import make_fleet
from tests.support import NO_IDENTITY, checked_states, udid

POLICY = EnginePolicy(batch_size=50, max_pushes=2, response_timeout=dt.timedelta(minutes=10))
GATE = Gate(min_success_rate=0.8, min_final_share=1.0)
CANARY_THEN_ALL = (StageSpec(count=4, gate=GATE), StageSpec(share=1.0, gate=GATE))


def inline(ledger: Ledger, apns: PushClient, clock: ManualClock) -> InlineDispatcher:
    return InlineDispatcher(
        lambda rid, ids: controller.push_batch(ledger, apns, rid, ids, POLICY, clock)
    )


def answer_all(ledger: Ledger, clock: ManualClock, statuses: dict[int, str]) -> None:
    """Each device ``n`` connects (Idle) and answers its command with ``statuses[n]``."""
    with ledger.checkin() as store:
        idle = [Report(udid(n), "Idle") for n in statuses]
        outs = process_reports(store, idle, identity=NO_IDENTITY, policy=POLICY, now=clock.now())
        answers = [
            Report(udid(n), status, command_uuid=out.served.command_uuid)
            for (n, status), out in zip(statuses.items(), outs, strict=True)
            if out.served is not None
        ]
        process_reports(store, answers, identity=NO_IDENTITY, policy=POLICY, now=clock.now())


def stage_of_device(ledger: Ledger, rollout_id: int) -> dict[int, int]:
    with ledger.rollouts() as store:
        return {t.device_id: t.stage for t in store.targets(rollout_id).values()}


def pushed_devices(ledger: Ledger, rollout_id: int) -> set[int]:
    with ledger.rollouts() as store:
        return {t.device_id for t in store.targets(rollout_id).values() if t.push_count > 0}


def by_stage(fleet_devices: dict[int, int], stages: dict[int, int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for n, device in fleet_devices.items():
        out.setdefault(stages[device], []).append(n)
    return out


def test_a_good_canary_opens_the_next_stage(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 20, clock.now(), stages=CANARY_THEN_ALL)
    groups = by_stage(fleet.devices, stage_of_device(ledger, fleet.rollout_id))
    assert len(groups[0]) == 4 and len(groups[1]) == 16
    dispatcher = inline(ledger, apns, clock)
    report = controller.tick(ledger, dispatcher, POLICY, clock.now())
    assert report.claimed == 4  # the canary only
    answer_all(ledger, clock, {n: "Acknowledged" for n in groups[0]})
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(1))
    assert report.claimed == 16  # the gate passed: stage 1 opened in the same tick
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert [s["state"] for s in data["stages"]] == ["passed", "running"]
    with ledger.rollouts() as store:
        kinds = [e.kind for e in store.events(rollout_id=fleet.rollout_id)]
    assert "rollout.promoted" in kinds


def test_a_bad_canary_halts_before_anything_of_stage_two_is_pushed(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 20, clock.now(), stages=CANARY_THEN_ALL)
    stages = stage_of_device(ledger, fleet.rollout_id)
    groups = by_stage(fleet.devices, stages)
    dispatcher = inline(ledger, apns, clock)
    controller.tick(ledger, dispatcher, POLICY, clock.now())
    canary = groups[0]
    answer_all(
        ledger, clock, {n: ("Error" if i < 2 else "Acknowledged") for i, n in enumerate(canary)}
    )
    report = controller.tick(ledger, dispatcher, POLICY, clock.advance(1))
    assert report.claimed == 0
    for _ in range(3):  # later ticks push nothing either
        assert controller.tick(ledger, dispatcher, POLICY, clock.advance(60)).claimed == 0
    assert pushed_devices(ledger, fleet.rollout_id) == {fleet.devices[n] for n in canary}
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert data["rollout"]["state"] == "halted"
    assert "stage 0 (4 devices) gate failed: success rate 50% < 80%" in data["rollout"]["reason"]
    with ledger.rollouts() as store:
        [halt] = store.events(kind="rollout.halted")
    assert halt.data["figures"]["failed"] == 2 and halt.data["figures"]["succeeded"] == 2
    # a halted rollout goes on only past its gate, when an operator says so
    with pytest.raises(OperationError, match="--override"):
        resume_rollout(ledger, fleet.rollout_id, actor="op", now=clock.now())
    assert resume_rollout(ledger, fleet.rollout_id, actor="op", now=clock.now(), override=True)
    assert controller.tick(ledger, dispatcher, POLICY, clock.advance(1)).claimed == 16


def test_max_failures_halts_at_once(clock: ManualClock, ledger: Ledger, apns: PushClient) -> None:
    strict = (StageSpec(count=4, gate=Gate(max_failures=0)), StageSpec(share=1.0))
    fleet = make_fleet(ledger, 12, clock.now(), stages=strict)
    groups = by_stage(fleet.devices, stage_of_device(ledger, fleet.rollout_id))
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    answer_all(ledger, clock, {groups[0][0]: "Error"})  # one failure, the rest still silent
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.advance(1))
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert data["rollout"]["state"] == "halted"
    assert "1 failures > 0 allowed" in data["rollout"]["reason"]


def test_a_manual_stage_waits_for_approval(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    manual = (StageSpec(count=2, gate=Gate(manual=True, min_final_share=1.0)), StageSpec(share=1.0))
    fleet = make_fleet(ledger, 6, clock.now(), stages=manual)
    groups = by_stage(fleet.devices, stage_of_device(ledger, fleet.rollout_id))
    dispatcher = inline(ledger, apns, clock)
    controller.tick(ledger, dispatcher, POLICY, clock.now())
    answer_all(ledger, clock, {n: "Acknowledged" for n in groups[0]})
    assert controller.tick(ledger, dispatcher, POLICY, clock.advance(1)).claimed == 0
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert data["stages"][0]["state"] == "waiting"
    assert approve_stage(ledger, fleet.rollout_id, actor="op", now=clock.now()) == 1
    assert controller.tick(ledger, dispatcher, POLICY, clock.advance(1)).claimed == 4
    with pytest.raises(OperationError, match="not waiting for approval"):
        approve_stage(ledger, fleet.rollout_id, actor="op", now=clock.now())


def test_promotion_waits_for_the_window(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    # The clock starts on Monday 2026-01-05 09:00 UTC (10:00 in Berlin).
    window = parse_window("Mon-Fri 11:00-12:00 Europe/Berlin")
    fleet = make_fleet(ledger, 8, clock.now(), stages=CANARY_THEN_ALL, window=window)
    groups = by_stage(fleet.devices, stage_of_device(ledger, fleet.rollout_id))
    dispatcher = inline(ledger, apns, clock)
    controller.tick(ledger, dispatcher, POLICY, clock.now())
    answer_all(ledger, clock, {n: "Acknowledged" for n in groups[0]})
    assert controller.tick(ledger, dispatcher, POLICY, clock.advance(1800)).claimed == 0
    assert controller.tick(ledger, dispatcher, POLICY, clock.advance(1800)).claimed == 4


def test_pause_stops_pushes_within_one_tick_and_resume_goes_on(
    clock: ManualClock, ledger: Ledger
) -> None:
    fleet = make_fleet(ledger, 10, clock.now())
    assert pause_rollout(ledger, fleet.rollout_id, actor="a", now=clock.now())
    assert not pause_rollout(ledger, fleet.rollout_id, actor="b", now=clock.now())  # idempotent
    sent = RecordingDispatcher()
    assert controller.tick(ledger, sent, POLICY, clock.now()).claimed == 0 and not sent.sent
    assert resume_rollout(ledger, fleet.rollout_id, actor="a", now=clock.now())
    assert controller.tick(ledger, sent, POLICY, clock.now()).claimed == 10
    with ledger.rollouts() as store:
        paused = store.events(kind="rollout.paused")
    assert [e.data["by"] for e in paused] == ["a"]


def test_abort_cancels_queued_commands_and_a_device_checking_in_gets_nothing(
    clock: ManualClock, ledger: Ledger
) -> None:
    fleet = make_fleet(ledger, 5, clock.now())
    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())  # queued, not pushed
    answer_all(ledger, clock, {0: "Acknowledged"})
    assert abort_rollout(ledger, fleet.rollout_id, actor="op", now=clock.now())
    assert not abort_rollout(ledger, fleet.rollout_id, actor="op", now=clock.now())
    with ledger.checkin() as store:
        [out] = process_reports(
            store, [Report(udid(1), "Idle")], identity=NO_IDENTITY, policy=POLICY, now=clock.now()
        )
    assert out.served is None
    assert checked_states(ledger, fleet.rollout_id) == {"acknowledged": 1, "cancelled": 4}
    with ledger.rollouts() as store:
        assert store.command_counts(fleet.rollout_id) == {"acknowledged": 1, "inactive": 4}


def test_retry_requeues_only_what_it_should(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 4, clock.now())
    controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.now())
    answer_all(ledger, clock, {0: "Acknowledged", 1: "Error", 2: "CommandFormatError"})
    for _ in range(3):  # device 3 stays silent until it times out
        controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.advance(3600))
    assert checked_states(ledger, fleet.rollout_id) == {
        "acknowledged": 1,
        "failed": 2,
        "timed_out": 1,
    }
    with ledger.rollouts() as store:
        assert store.get(fleet.rollout_id).state == "completed"  # type: ignore[union-attr]
    n = retry_targets(
        ledger, fleet.rollout_id, actor="op", now=clock.now(), reasons=("CommandFormatError",)
    )
    assert n == 1
    assert checked_states(ledger, fleet.rollout_id) == {
        "acknowledged": 1,
        "failed": 1,
        "timed_out": 1,
        "planned": 1,
    }
    with ledger.rollouts() as store:
        assert store.get(fleet.rollout_id).state == "running"  # type: ignore[union-attr]
    assert retry_targets(ledger, fleet.rollout_id, actor="op", now=clock.now()) == 2
    report = controller.tick(ledger, inline(ledger, apns, clock), POLICY, clock.advance(1))
    assert report.claimed == 3  # each gets a fresh command
    with ledger.rollouts() as store:
        assert sum(store.command_counts(fleet.rollout_id).values()) == 7


def test_a_command_past_its_time_to_live_is_never_served(
    clock: ManualClock, ledger: Ledger
) -> None:
    fleet = make_fleet(ledger, 3, clock.now(), command_ttl=dt.timedelta(hours=1))
    controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    answer_all(ledger, clock, {0: "Acknowledged"})
    clock.advance(dt.timedelta(hours=1, seconds=1))
    with ledger.checkin() as store:  # before the controller noticed: still never served
        [out] = process_reports(
            store, [Report(udid(1), "Idle")], identity=NO_IDENTITY, policy=POLICY, now=clock.now()
        )
    assert out.served is None
    report = controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    assert report.timed_out == 2  # two targets given up (cancelled: ttl_expired)
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert data["states"] == {"acknowledged": 1, "cancelled": 2}
    assert data["rollout"]["state"] == "completed"


def test_nothing_is_pushed_before_the_start_and_all_is_given_up_at_the_deadline(
    clock: ManualClock, ledger: Ledger
) -> None:
    start = clock.now() + dt.timedelta(hours=2)
    fleet = make_fleet(
        ledger, 3, clock.now(), start_at=start, deadline=start + dt.timedelta(days=1)
    )
    assert controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now()).claimed == 0
    assert controller.tick(ledger, RecordingDispatcher(), POLICY, start).claimed == 3
    clock.advance(dt.timedelta(days=2))
    report = controller.tick(ledger, RecordingDispatcher(), POLICY, clock.now())
    assert report.timed_out == 3
    data = rollout_report(ledger, fleet.rollout_id, clock.now())
    assert data["timed_out"] == {"deadline": 3} and data["rollout"]["state"] == "completed"


def test_a_rollouts_rate_limit_caps_what_each_tick_claims(
    clock: ManualClock, ledger: Ledger
) -> None:
    # 2 pushes a second on a 5-second tick: at most 10 new targets a tick, whatever the
    # batch size and backlog allowance would let through.
    fleet = make_fleet(ledger, 25, clock.now(), rate_limit=2.0)
    policy = EnginePolicy(batch_size=50, tick_interval=dt.timedelta(seconds=5))
    claimed = []
    for _ in range(4):
        sent = RecordingDispatcher()
        claimed.append(controller.tick(ledger, sent, policy, clock.advance(5)).claimed)
        assert sum(len(ids) for _, ids in sent.sent) == claimed[-1]
    assert claimed == [10, 10, 5, 0]
    assert len(pushed_devices(ledger, fleet.rollout_id)) == 0  # recorded, never pushed
    with ledger.rollouts() as store:
        queued = [t for t in store.targets(fleet.rollout_id).values() if t.state == "queued"]
    assert len(queued) == 25


def test_devices_seen_most_recently_are_pushed_first(clock: ManualClock, ledger: Ledger) -> None:
    from tests.engine.support import import_fleet
    from tests.support import add_profile, start_rollout

    devices = import_fleet(ledger, 6, clock.now())
    for n in (4, 1):  # device 4 checks in, then (later) device 1
        clock.advance(60)
        with ledger.checkin() as store:
            process_reports(
                store,
                [Report(udid(n), "Idle")],
                identity=NO_IDENTITY,
                policy=POLICY,
                now=clock.now(),
            )
    profile = add_profile(ledger, clock.now())
    rid = start_rollout(ledger, profile.uuid, [udid(n) for n in range(6)], clock.now())
    small = EnginePolicy(batch_size=2, max_batches_per_tick=1)
    sent = RecordingDispatcher()
    controller.tick(ledger, sent, small, clock.now())
    assert sent.sent[0][1] and len(sent.sent[0][1]) == 2
    with ledger.rollouts() as store:
        first = {t.device_id for t in store.targets(rid).values() if t.state == "queued"}
    assert first == {devices[1], devices[4]}


def test_two_operators_pausing_at_once_pause_it_once(clock: ManualClock, ledger: Ledger) -> None:
    import threading

    fleet = make_fleet(ledger, 3, clock.now())
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def pause(who: str) -> None:
        barrier.wait()
        results.append(pause_rollout(ledger, fleet.rollout_id, actor=who, now=clock.now()))

    threads = [threading.Thread(target=pause, args=(f"op{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    with ledger.rollouts() as store:
        assert len(store.events(kind="rollout.paused")) == 1


def test_results_of_a_batch_in_flight_are_kept_after_a_pause(
    clock: ManualClock, ledger: Ledger, apns: PushClient
) -> None:
    fleet = make_fleet(ledger, 4, clock.now())
    held = RecordingDispatcher()
    controller.tick(ledger, held, POLICY, clock.now())  # batches sent, not pushed yet
    pause_rollout(ledger, fleet.rollout_id, actor="op", now=clock.now())
    for rollout_id, ids in held.sent:  # the worker pushes what it already had
        controller.push_batch(ledger, apns, rollout_id, ids, POLICY, clock)
    answer_all(ledger, clock, {0: "Acknowledged"})
    assert checked_states(ledger, fleet.rollout_id) == {"acknowledged": 1, "pushed": 3}
    assert controller.tick(ledger, RecordingDispatcher(), POLICY, clock.advance(3600)).repushed == 0
