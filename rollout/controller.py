"""The controller: advances every running rollout by one idempotent tick.

A tick claims planned targets in batches (each batch gets its command rows and is moved to
queued in one transaction), hands the batches to the dispatcher after the commit, re-pushes
targets whose wait is over, times out the silent ones, and completes rollouts with nothing left
open. Everything it decides comes from the ledger, so a lost message or a dead worker only
delays work: the next tick finds it again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from rollout.apns import PushClient, PushRequest
from rollout.clock import Clock
from rollout.dispatch import Dispatcher
from rollout.ledger import db
from rollout.ledger import fanout as ledger_fanout
from rollout.policy import EnginePolicy

log = logging.getLogger(__name__)

CLAIM_BATCHES = 10
"""Fan-out batches a tick claims in one transaction (each still goes out as its own task)."""


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
    engine: Engine, dispatcher: Dispatcher, policy: EnginePolicy, now: dt.datetime
) -> TickReport:
    """One controller tick over every running rollout at ``now`` (safe to run on many workers
    at once)."""
    report = TickReport()
    with db.transaction(engine) as session:
        rollouts = ledger_fanout.running_rollouts(session)
    report.rollouts = len(rollouts)
    for rollout in rollouts:
        with db.transaction(engine) as session:
            report.unreachable += ledger_fanout.mark_unpushable(session, rollout)
            backlog = ledger_fanout.queued_count(session, rollout.id)
        # Backpressure: queued targets are batches sent and not pushed yet. A rollout keeps at
        # most max_batches_per_tick batches in flight, so a big rollout is claimed at the pace
        # the workers push: ticks stay short and leave the workers to push, and no queued
        # target outwaits its dispatch grace (which would send it twice).
        left = policy.max_batches_per_tick - math.ceil(backlog / policy.batch_size)
        while left > 0:
            # Claim several batches in one statement (fewer round trips and commits: about a
            # quarter cheaper per target on PostgreSQL than one claim per batch), then split.
            take = min(CLAIM_BATCHES, left)
            chunk = dataclasses.replace(policy, batch_size=policy.batch_size * take)
            with db.transaction(engine) as session:
                ids = ledger_fanout.claim_planned(session, rollout, chunk, now)
            if not ids:
                break
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
    return _due_and_finish(engine, dispatcher, policy, now, report)


def _due_and_finish(
    engine: Engine,
    dispatcher: Dispatcher,
    policy: EnginePolicy,
    now: dt.datetime,
    report: TickReport,
) -> TickReport:
    report_due(engine, dispatcher, policy, now, report)
    with db.transaction(engine) as session:
        report.completed = ledger_fanout.finish_rollouts(session, now)
    return report


def report_due(
    engine: Engine,
    dispatcher: Dispatcher,
    policy: EnginePolicy,
    now: dt.datetime,
    report: TickReport,
) -> None:
    """Re-push targets whose wait is over and time out the silent ones."""
    while True:
        with db.transaction(engine) as session:
            again, timed_out = ledger_fanout.claim_due(session, policy, now)
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
        if not again and not timed_out:
            return


def sweep(
    engine: Engine, dispatcher: Dispatcher, policy: EnginePolicy, now: dt.datetime
) -> TickReport:
    """Only the waiting part of a tick: re-push, time out, complete (the beat's sweep)."""
    return _due_and_finish(engine, dispatcher, policy, now, TickReport())


def push_batch(
    engine: Engine,
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
    with db.transaction(engine) as session:
        jobs, skipped = ledger_fanout.push_jobs(session, target_ids)
    results = (
        client.push_many(
            [PushRequest(token=j.token, push_magic=j.push_magic, topic=j.topic) for j in jobs]
        )
        if jobs
        else []
    )
    with db.transaction(engine) as session:
        tally = ledger_fanout.record_push_results(
            session, rollout_id, jobs, results, policy, clock.now()
        )
    out = dict(tally)
    out["skipped"] = skipped
    return out
