"""The delivery sweep beside NanoMDM (or MicroMDM, alike): what a lost webhook or an abort
leaves behind.

NanoMDM posts each answer once, with no retry, so an answer can be lost on the way. A command
handed to NanoMDM and unanswered for a while is looked up in NanoMDM's queue API: while
NanoMDM still holds it the device simply has not answered (the controller's re-pushes and
time-outs apply as usual); when NanoMDM no longer holds it, the device answered and the
webhook never came (or NanoMDM lost its queue). Installing a profile again is harmless, so the
command is retired and its target planned again: the next tick hands a fresh command over and
the device's new answer is reconciled as usual. A lost webhook never leaves a target stuck.

An aborted rollout's commands that NanoMDM may still hold are cleared from its queue
(``DELETE /v1/queue/{ids}``; this clears everything queued for those enrollments).

A clean-up after a verification (``RemoveProvisioningProfile`` of the replaced profile) is made
when the verification's answer comes in, for a target that is then verified and waits for
nothing: the sweep hands it over.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from rollout.delivery.server import MDMServer, MDMServerError
from rollout.ledger import Event, HandedCommand, Ledger
from rollout.states import CommandStatus, TargetState
from rollout.transitions import move

log = logging.getLogger(__name__)

#: Targets that still wait for the answer to a command handed over.
WAITING = (
    TargetState.QUEUED.value,
    TargetState.PUSHED.value,
    TargetState.DELIVERED.value,
    TargetState.ACKNOWLEDGED.value,
)
PAGE = 2000


def recover_lost_answers(
    ledger: Ledger, server: MDMServer, now: dt.datetime, after: dt.timedelta
) -> int:
    """Commands unanswered for ``after`` that NanoMDM no longer holds: retired, and their
    targets planned again; how many."""
    with ledger.delivery() as store:
        waiting = store.unanswered(now - after, WAITING, PAGE)
    by_device: dict[str, list[HandedCommand]] = defaultdict(list)
    for c in waiting:
        by_device[c.enrollment_id].append(c)
    lost: list[HandedCommand] = []
    for enrollment_id, commands in by_device.items():
        try:
            held = server.queued(enrollment_id)
        except MDMServerError as exc:
            log.warning("cannot read NanoMDM's queue of %s: %s", enrollment_id, exc)
            continue
        lost.extend(c for c in commands if c.command_uuid not in held)
    if not lost:
        return 0
    with ledger.delivery() as store:
        store.set_status([c.command_id for c in lost], CommandStatus.INACTIVE.value, now)
        applied = store.move(
            [
                move(c.target_id, TargetState.PLANNED, command_uuid=None, reason="answer_lost")
                for c in lost
                if c.target_id is not None
            ],
            now,
        )
        store.record(
            [
                Event(
                    "delivery.answer_lost",
                    {"target_id": c.target_id},
                    enrollment_id=c.enrollment_id,
                    command_uuid=c.command_uuid,
                )
                for c in lost
            ],
            now,
        )
    return len(applied)


def withdraw_aborted(ledger: Ledger, server: MDMServer, now: dt.datetime) -> int:
    """Clear aborted rollouts' unanswered commands from NanoMDM's queue; how many."""
    total = 0
    while True:
        with ledger.delivery() as store:
            pending = store.to_withdraw(PAGE)
        if not pending:
            return total
        ids = sorted({c.enrollment_id for c in pending})
        try:
            answers = server.clear_queues(ids)
        except MDMServerError as exc:
            log.warning("cannot clear NanoMDM's queues: %s", exc)
            return total
        cleared = [c.command_id for c in pending if answers[c.enrollment_id].command_error is None]
        with ledger.delivery() as store:
            store.set_status(cleared, CommandStatus.WITHDRAWN.value, now)
        total += len(cleared)
        if len(cleared) < len(pending):
            return total  # the rest next time


def hand_over_cleanups(ledger: Ledger, server: MDMServer, now: dt.datetime, *, push: bool) -> int:
    """Hand the clean-ups of verified targets to the server (pushed by it when ``push``;
    else the device takes them at its next check-in); how many it took."""
    with ledger.delivery() as store:
        waiting = store.unhanded([TargetState.VERIFIED.value], PAGE)
    taken: list[int] = []
    for c in waiting:
        assert c.body is not None  # unhanded() reads only commands with a body
        try:
            answer = server.enqueue([c.enrollment_id], c.body, push=push)
        except MDMServerError as exc:
            log.warning("cannot hand a clean-up to the MDM server: %s", exc)
            break
        if answer[c.enrollment_id].command_error is None:
            taken.append(c.command_id)
    with ledger.delivery() as store:
        store.mark_handed(taken, now)
    return len(taken)


def sweep(
    ledger: Ledger, server: MDMServer, now: dt.datetime, after: dt.timedelta, *, push: bool = True
) -> dict[str, int]:
    """One delivery sweep: lost answers recovered, aborted commands withdrawn, clean-ups
    handed over."""
    return {
        "recovered": recover_lost_answers(ledger, server, now, after),
        "withdrawn": withdraw_aborted(ledger, server, now),
        "cleanups": hand_over_cleanups(ledger, server, now, push=push),
    }
