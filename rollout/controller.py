"""The controller: every decision a tick makes, advancing running rollouts one idempotent step.

A tick, at the ``now`` its caller gives it, for each running rollout:

1. judges the open stage's gate from the kept counters: a failing gate halts the rollout (the
   event names the gate and its figures); a passing one opens the next stage, unless the stage
   waits for an operator's approval or the promotion window is closed;
2. past the rollout's deadline, gives up on its open targets (``timed_out: deadline``);
3. marks planned targets whose device cannot be woken ``unreachable``, saying why;
4. claims planned, pushable targets of the open stages in batches, most recently seen devices
   first (each batch gets its command rows and is moved to queued in one transaction), and
   hands the batches to the dispatcher after the commit, keeping at most
   ``max_batches_per_tick`` batches of a rollout in flight (backpressure) and within the
   rollout's own push rate;

then, for every running rollout at once: cancels commands past their time-to-live that no
device was handed; re-pushes targets whose wait is over (silent after a push, NotNow'd,
transiently failed, dispatched and never pushed, or acknowledged and not yet verified) and
times out the ones that have been pushed enough; completes rollouts with no open target left.

A push batch (:func:`push_batch`) wakes its devices and turns each APNs outcome into the
target's next state. Everything is decided from the ledger, so a lost message or a dead worker
only delays work: the next tick finds it again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rollout.apns import Outcome, PushClient, PushRequest, PushResult
from rollout.clock import Clock
from rollout.dispatch import Dispatcher
from rollout.gates import judge
from rollout.ledger import (
    DueTarget,
    Event,
    FanoutStore,
    Ledger,
    Move,
    PushRecord,
    PushTarget,
    RunningRollout,
    UnpushableTarget,
)
from rollout.mdm.commands import REQUEST_TYPES
from rollout.policy import EnginePolicy
from rollout.spec import Gate, RolloutOptions
from rollout.states import EnrollmentState, RolloutState, StageState, TargetState, TokenState
from rollout.transitions import OPEN_STATES, move

log = logging.getLogger(__name__)

CLAIM_BATCHES = 10
"""Fan-out batches a tick claims in one transaction (each still goes out as its own task)."""
DUE_PAGE = 5000
"""Due targets handled per transaction."""

#: Targets a push batch still wakes: claimed and not answered for good, or acknowledged and
#: waiting for the device to answer its verification.
_PUSHABLE = frozenset(
    s.value
    for s in (
        TargetState.QUEUED,
        TargetState.PUSHED,
        TargetState.DELIVERED,
        TargetState.DEFERRED,
        TargetState.ACKNOWLEDGED,
    )
)
_SILENT = frozenset({TargetState.PUSHED.value, TargetState.DELIVERED.value})
_ANSWERED = frozenset({TargetState.ACKNOWLEDGED.value})


@dataclass
class TickReport:
    """What one tick did."""

    rollouts: int = 0
    claimed: int = 0
    batches: int = 0
    unreachable: int = 0
    repushed: int = 0
    timed_out: int = 0
    completed: list[int] = field(default_factory=list)


def tick(
    ledger: Ledger, dispatcher: Dispatcher, policy: EnginePolicy, now: dt.datetime
) -> TickReport:
    """One controller tick over every running rollout at ``now`` (safe to run on many workers
    at once)."""
    report = TickReport()
    with ledger.fanout() as store:
        rollouts = store.running()
    report.rollouts = len(rollouts)
    for found in rollouts:
        opts = RolloutOptions.from_json(found.options)
        if opts.start_at is not None and now < opts.start_at:
            continue  # not yet: nothing of it is pushed before its start
        if opts.deadline is not None and now >= opts.deadline:
            report.timed_out += _give_up_at_deadline(ledger, found.id, now)
            continue
        rollout = advance_stages(ledger, found, opts, now)
        if rollout is None:
            continue  # halted by its gate
        with ledger.fanout() as store:
            report.unreachable += _mark_unpushable(store, rollout, policy, now)
            backlog = store.count_in(rollout.id, [TargetState.QUEUED.value])
        # Backpressure: queued targets are batches sent and not pushed yet. A rollout keeps at
        # most max_batches_per_tick batches in flight, so a big rollout is claimed at the pace
        # the workers push: ticks stay short and leave the workers to push, and no queued
        # target outwaits its dispatch grace (which would send it twice).
        left = policy.max_batches_per_tick - math.ceil(backlog / policy.batch_size)
        # A rollout's own push rate: at most rate x tick interval new targets per tick.
        allowance = (
            max(1, int(opts.rate_limit * policy.tick_interval.total_seconds()))
            if opts.rate_limit
            else None
        )
        while left > 0 and (allowance is None or allowance > 0):
            # Claim several batches in one statement (fewer round trips and commits: about a
            # quarter cheaper per target on PostgreSQL than one claim per batch), then split.
            take = min(CLAIM_BATCHES, left)
            limit = policy.batch_size * take
            if allowance is not None:
                limit = min(limit, allowance)
            with ledger.fanout() as store:
                ids = store.claim_planned(
                    rollout,
                    limit,
                    request_type=REQUEST_TYPES[opts.command],
                    next_push_at=now + policy.dispatch_grace,
                    now=now,
                    expires_at=now + opts.command_ttl if opts.command_ttl else None,
                    need_push_data=not policy.server_wakes,
                )
            if not ids:
                break
            if allowance is not None:
                allowance -= len(ids)
            batches = [
                (rollout.id, ids[i : i + policy.batch_size])
                for i in range(0, len(ids), policy.batch_size)
            ]
            # After the commit: if sending fails, the targets are queued with a dispatch
            # deadline and the sweep below sends them again on a later tick.
            dispatcher.push_batches(batches)
            report.claimed += len(ids)
            report.batches += len(batches)
            left -= take
    return _due_and_finish(ledger, dispatcher, policy, now, report)


def sweep(
    ledger: Ledger, dispatcher: Dispatcher, policy: EnginePolicy, now: dt.datetime
) -> TickReport:
    """Only the waiting part of a tick: re-push, time out, complete (the beat's sweep)."""
    return _due_and_finish(ledger, dispatcher, policy, now, TickReport())


def _due_and_finish(
    ledger: Ledger,
    dispatcher: Dispatcher,
    policy: EnginePolicy,
    now: dt.datetime,
    report: TickReport,
) -> TickReport:
    report.timed_out += expire_commands(ledger, now)
    report_due(ledger, dispatcher, policy, now, report)
    with ledger.fanout() as store:
        report.completed = finish_rollouts(store, now)
    return report


def advance_stages(
    ledger: Ledger, rollout: RunningRollout, opts: RolloutOptions, now: dt.datetime
) -> RunningRollout | None:
    """Judge the open stage's gate and act on the verdict; the rollout as fan-out should see
    it now (its open stage may have moved on), or None when the gate halted it."""
    with ledger.rollouts() as store:
        stages = store.stages(rollout.id)
        if not stages:
            return rollout
        stage = stages[min(rollout.stage, len(stages) - 1)]
        if stage.state != StageState.RUNNING:
            return rollout  # waiting for approval (or already decided)
        counts = store.stage_counts(rollout.id).get(stage.number, {})
        verdict = judge(Gate.from_json(stage.gate), counts, stage.started_at, now)
        last = stage.number == len(stages) - 1
        if verdict.kind == "fail":
            why = f"stage {stage.number} ({stage.label}) gate failed: {verdict.why}"
            store.set_stage(rollout.id, stage.number, StageState.FAILED.value, now)
            store.set_state(rollout.id, RolloutState.HALTED.value, now)
            store.set_reason(rollout.id, why, now)
            data = {
                "stage": stage.number,
                "gate": stage.gate,
                "figures": verdict.figures,
                "why": verdict.why,
            }
            store.record([Event("rollout.halted", data, rollout_id=rollout.id)], now)
            return None
        if verdict.kind == "wait" or last:
            return rollout
        if Gate.from_json(stage.gate).manual:
            store.set_stage(rollout.id, stage.number, StageState.WAITING.value, now)
            data = {"stage": stage.number, "figures": verdict.figures}
            store.record([Event("rollout.awaiting_approval", data, rollout_id=rollout.id)], now)
            return rollout
        if opts.window is not None and not opts.window.is_open(now):
            return rollout  # promote when the window opens
        nxt = stage.number + 1
        store.set_stage(rollout.id, stage.number, StageState.PASSED.value, now)
        store.set_stage(rollout.id, nxt, StageState.RUNNING.value, now, current=True)
        data = {"stage": nxt, "passed": stage.number, "figures": verdict.figures}
        store.record([Event("rollout.promoted", data, rollout_id=rollout.id)], now)
        return RunningRollout(rollout.id, nxt, rollout.options)


def _give_up_at_deadline(ledger: Ledger, rollout_id: int, now: dt.datetime) -> int:
    """Past its deadline a rollout sends nothing more: its open targets time out."""
    with ledger.fanout() as store:
        waiting = store.open_targets(rollout_id, [s.value for s in OPEN_STATES])
        applied = store.move(
            [move(t, TargetState.TIMED_OUT, reason="deadline", finished_at=now) for t in waiting],
            now,
        )
    return len(applied)


def expire_commands(ledger: Ledger, now: dt.datetime) -> int:
    """Commands past their time-to-live that no device was handed are never served: they are
    retired and their targets end ``cancelled: ttl_expired``."""
    total = 0
    while True:
        with ledger.fanout() as store:
            expired = store.expired_commands(now, DUE_PAGE)
            store.retire_commands([c for _, c in expired], now)
            applied = store.move(
                [
                    move(t, TargetState.CANCELLED, reason="ttl_expired", finished_at=now)
                    for t, _ in expired
                ],
                now,
            )
        total += len(applied)
        if len(expired) < DUE_PAGE:
            return total


def unpushable_reason(target: UnpushableTarget | PushTarget) -> str:
    """Why a device cannot be woken: it checked out, APNs said its token is dead, or it never
    gave us a usable token."""
    if target.enrollment_state == EnrollmentState.CHECKED_OUT:
        return "checked_out"
    if target.token_state == TokenState.DEAD:
        return "token_dead"
    return "no_token"


def _mark_unpushable(
    store: FanoutStore, rollout: RunningRollout, policy: EnginePolicy, now: dt.datetime
) -> int:
    """Planned targets whose device cannot be woken become unreachable, saying why (when the
    MDM server wakes the devices, a device needs no push data in rollout's ledger)."""
    found = store.unpushable_planned(rollout, need_push_data=not policy.server_wakes)
    moves = [move(t.target_id, TargetState.UNREACHABLE, reason=unpushable_reason(t)) for t in found]
    return len(store.move(moves, now))


def due_decisions(
    due: Sequence[DueTarget], policy: EnginePolicy, now: dt.datetime
) -> tuple[dict[int, list[int]], list[Move]]:
    """Which due targets are pushed again (by rollout) and which are timed out: a silent
    target pushed ``max_pushes`` times, or one deferred ``max_notnow`` times, gives up."""
    again: dict[int, list[int]] = {}
    expire: list[Move] = []
    for t in due:
        if t.state == TargetState.ACKNOWLEDGED and t.push_count >= policy.max_pushes:
            expire.append(
                move(t.target_id, TargetState.TIMED_OUT, reason="not_verified", finished_at=now)
            )
        elif t.state in _SILENT and t.push_count >= policy.max_pushes:
            expire.append(
                move(t.target_id, TargetState.TIMED_OUT, reason="no_answer", finished_at=now)
            )
        elif t.state == TargetState.DEFERRED and t.notnow_count >= policy.max_notnow:
            expire.append(
                move(t.target_id, TargetState.TIMED_OUT, reason="notnow_limit", finished_at=now)
            )
        else:
            again.setdefault(t.rollout_id, []).append(t.target_id)
    return again, expire


def report_due(
    ledger: Ledger,
    dispatcher: Dispatcher,
    policy: EnginePolicy,
    now: dt.datetime,
    report: TickReport,
) -> None:
    """Re-push targets whose wait is over and time out the silent ones."""
    while True:
        with ledger.fanout() as store:
            due = store.due(now, DUE_PAGE)
            again, expire = due_decisions(due, policy, now)
            # A re-dispatched target gets a fresh dispatch deadline, so a lost batch is sent
            # again by a later tick rather than at once by the next one.
            store.set_next_push(
                [t for ids in again.values() for t in ids], now + policy.dispatch_grace
            )
            timed_out = len(store.move(expire, now))
        report.timed_out += timed_out
        batches = [
            (rid, ids[i : i + policy.batch_size])
            for rid, ids in again.items()
            for i in range(0, len(ids), policy.batch_size)
        ]
        if batches:
            dispatcher.push_batches(batches)
            report.repushed += sum(len(ids) for _, ids in batches)
            report.batches += len(batches)
        if len(due) < DUE_PAGE:
            return  # that was the last page


def finish_rollouts(store: FanoutStore, now: dt.datetime) -> list[int]:
    """Running rollouts with no open target left are completed; their ids. In a rollout that
    verifies its installs, an acknowledged target still waits for its verification."""
    done = store.running_without([s.value for s in OPEN_STATES])
    verifying = {r.id for r in store.running() if RolloutOptions.from_json(r.options).verify}
    acknowledged = [TargetState.ACKNOWLEDGED.value]
    done = [rid for rid in done if rid not in verifying or not store.count_in(rid, acknowledged)]
    # the last stage ends with its rollout, in the same transaction: no reader sees a
    # completed rollout whose stage still runs
    store.finish(done, RolloutState.COMPLETED.value, now, stage_state=StageState.PASSED.value)
    store.record([Event("rollout.completed", rollout_id=rid) for rid in done], now)
    return done


def push_batch(
    ledger: Ledger,
    client: PushClient,
    rollout_id: int,
    target_ids: Sequence[int],
    policy: EnginePolicy,
    clock: Clock,
) -> dict[str, int]:
    """Wake the devices of one batch and record every device's push result.

    The results are stamped with ``clock`` when the pushes are done. Idempotent: a target
    already answered is skipped, and a repeated push is harmless (it is counted). Called by
    the fan-out task; tests call it directly.
    """
    with ledger.fanout() as store:
        targets = store.push_targets(target_ids)
        jobs, lost, skipped = split_pushable(targets)
        store.move(lost, clock.now())
    results = (
        client.push_many(
            [
                PushRequest(token=j.token or "", push_magic=j.push_magic or "", topic=j.topic)
                for j in jobs
            ]
        )
        if jobs
        else []
    )
    now = clock.now()
    with ledger.fanout() as store:
        tally = record_push_results(store, rollout_id, jobs, results, policy, now)
    out = dict(tally)
    out["skipped"] = skipped + len(lost)
    return out


def split_pushable(
    targets: Sequence[PushTarget], *, need_push_data: bool = True
) -> tuple[list[PushTarget], list[Move], int]:
    """The targets to push; moves to unreachable for those whose device lost its token (or,
    when the MDM server wakes the devices and ``need_push_data`` is false, checked out or had
    its token called dead) since they were claimed; how many were skipped as answered,
    cancelled or timed out meanwhile."""
    jobs: list[PushTarget] = []
    lost: list[Move] = []
    skipped = 0
    for t in targets:
        if t.state not in _PUSHABLE:
            skipped += 1
            continue
        if (
            t.enrollment_state == EnrollmentState.CHECKED_OUT
            or t.token_state == TokenState.DEAD
            or (
                need_push_data
                and (t.token_state != TokenState.ACTIVE or not t.token or not t.push_magic)
            )
        ):
            reason = "token_dead" if t.token_state == TokenState.DEAD else "no_token"
            lost.append(move(t.target_id, TargetState.UNREACHABLE, reason=reason))
            continue
        jobs.append(t)
    return jobs, lost, skipped


def record_push_results(
    store: FanoutStore,
    rollout_id: int,
    jobs: Sequence[PushTarget],
    results: Sequence[PushResult],
    policy: EnginePolicy,
    now: dt.datetime,
) -> Counter[str]:
    """Decide what each push outcome means and write it in a few batch statements:

    * accepted: the target is ``pushed`` (a re-push of a pushed or delivered target only
      counts the push) and waits ``repush_delay`` for an answer;
    * dead token or permanent refusal: ``unreachable`` (a dead token is marked on the device
      until its next TokenUpdate);
    * anything else (transient after the client's retries, certificate trouble, circuit open):
      left as it is, to be tried again after ``transient_retry``.
    """
    tally: Counter[str] = Counter()
    pushed: list[PushRecord] = []
    to_pushed: list[Move] = []
    gone: list[Move] = []
    dead_devices: list[tuple[int, dt.datetime]] = []
    retry: list[int] = []
    for job, res in zip(jobs, results, strict=True):
        tally[res.outcome.value] += 1
        if res.outcome is Outcome.SUCCESS:
            count = job.push_count + 1
            # A device that answered while its push was out is acknowledged now, waiting for
            # its verification with a fresh count and deadline: the late push leaves them be.
            late = _ANSWERED if job.state != TargetState.ACKNOWLEDGED.value else frozenset()
            pushed.append(
                PushRecord(
                    job.target_id, count, now + policy.repush_delay(count), res.apns_id, late
                )
            )
            to_pushed.append(move(job.target_id, TargetState.PUSHED))
        elif res.outcome in (Outcome.DEAD_TOKEN, Outcome.PERMANENT):
            why = res.reason or res.outcome.value
            prefix = "token_dead" if res.outcome is Outcome.DEAD_TOKEN else "apns"
            gone.append(move(job.target_id, TargetState.UNREACHABLE, reason=f"{prefix}:{why}"))
            if res.outcome is Outcome.DEAD_TOKEN:
                dead_devices.append((job.device_id, res.unregistered_at or now))
        else:
            retry.append(job.target_id)
    store.record_pushes(pushed, to_pushed, now)
    store.move(gone, now)
    store.mark_tokens_dead(dead_devices)
    store.set_next_push(retry, now + policy.transient_retry)
    store.record([Event("fanout.batch", dict(tally), rollout_id=rollout_id)], now)
    return tally
