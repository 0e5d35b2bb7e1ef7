"""A push still on its way when the device answers: its late record leaves the answer's
count and deadline alone (compare-and-set on the push count), on both ledgers."""

from __future__ import annotations

import datetime as dt

from rollout.apns import Outcome, PushResult
from rollout.controller import record_push_results, split_pushable
from rollout.enrollment import IdentityPolicy
from rollout.ledger import Ledger, RunningRollout
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.states import TargetState
from tests.support import add_profile, enroll, start_rollout, udid

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
POLICY = EnginePolicy()


def test_a_late_push_does_not_undo_an_answer(ledger: Ledger) -> None:
    enroll(ledger, 1, NOW)
    entry = add_profile(ledger, NOW)
    rid = start_rollout(ledger, entry.uuid, [udid(1)], NOW, verify=True)
    with ledger.fanout() as store:
        [tid] = store.claim_planned(
            RunningRollout(rid, 0), 10, request_type="InstallProvisioningProfile",
            next_push_at=NOW, now=NOW,
        )  # fmt: skip
        jobs, _, _ = split_pushable(store.push_targets([tid]))
    with ledger.rollouts() as rollouts:
        command_uuid = rollouts.command_uuids(rid)[tid]
    # the device answers (installed; the verification is asked for) while the push is out
    answered_at = NOW + dt.timedelta(seconds=1)
    with ledger.checkin() as checkin:
        process_reports(
            checkin,
            [Report(udid(1), "Acknowledged", command_uuid)],
            identity=IdentityPolicy(required=False),
            policy=POLICY,
            now=answered_at,
        )
    with ledger.rollouts() as rollouts:
        before = rollouts.targets(rid)[next(iter(rollouts.targets(rid)))]
    assert before.state == TargetState.ACKNOWLEDGED
    # then the push's result comes back
    late = [PushResult(token=jobs[0].token or "", apns_id="A", outcome=Outcome.SUCCESS)]
    with ledger.fanout() as store:
        record_push_results(store, rid, jobs, late, POLICY, NOW + dt.timedelta(seconds=2))
    with ledger.rollouts() as rollouts:
        after = rollouts.targets(rid)[before.device_id]
    assert after.state == TargetState.ACKNOWLEDGED
    assert after.push_count == before.push_count == 0
    assert after.next_push_at == before.next_push_at == answered_at + POLICY.response_timeout


def test_a_push_on_time_is_recorded(ledger: Ledger) -> None:
    enroll(ledger, 2, NOW)
    entry = add_profile(ledger, NOW)
    rid = start_rollout(ledger, entry.uuid, [udid(2)], NOW)
    with ledger.fanout() as store:
        [tid] = store.claim_planned(
            RunningRollout(rid, 0), 10, request_type="InstallProvisioningProfile",
            next_push_at=NOW, now=NOW,
        )  # fmt: skip
        jobs, _, _ = split_pushable(store.push_targets([tid]))
        ok = [PushResult(token=jobs[0].token or "", apns_id="A", outcome=Outcome.SUCCESS)]
        record_push_results(store, rid, jobs, ok, POLICY, NOW)
        # the same batch delivered twice by the broker: counted once
        record_push_results(store, rid, jobs, ok, POLICY, NOW)
    with ledger.rollouts() as rollouts:
        [target] = rollouts.targets(rid).values()
    assert target.state == TargetState.PUSHED and target.push_count == 1
