"""Rollout beside MicroMDM: the same engine over MicroMDM's API (one device per call, raw
command plists under rollout's CommandUUIDs, its queue view and clearing) and its webhook,
against the stand-in speaking MicroMDM's paths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from rollout.delivery.sweep import recover_lost_answers, sweep
from rollout.operations import abort_rollout
from rollout.spec import StageSpec
from tests.delivery.conftest import Beside
from tests.delivery.test_nanomdm import ALL_OFFLINE, ALL_OK, events, rollout_to_all
from tests.support import checked_states


def test_a_staged_rollout_runs_end_to_end_over_micromdm(beside: Callable[..., Beside]) -> None:
    world = beside(devices=20, server="micromdm")
    rid = rollout_to_all(world)
    assert world.run(rid) == "completed"
    behaviours = world.fleet.behavior_counts()
    answered = behaviours["ok"] + behaviours["notnow_then_ok"]
    assert checked_states(world.ledger, rid) == {
        "verified": answered,
        "failed": behaviours["error"],
        "timed_out": behaviours["offline"],
    }
    assert sum(1 for d in world.fleet if d.installed) == answered
    # one call per device for the install and one per verification; NanoMDM's API unused
    assert world.nanomdm.counts.enqueue_calls == 20 + answered
    assert world.nanomdm.counts.push_calls >= 20


def test_a_500_and_a_lost_webhook_beside_micromdm_lose_nothing(
    beside: Callable[..., Beside],
) -> None:
    world = beside(devices=6, mix=ALL_OK, server="micromdm")
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.nanomdm.fail_enqueue = 2
    world.nanomdm.drop_webhooks = 1
    world.tick()
    assert world.handed[-1]["transient"] == 2
    assert checked_states(world.ledger, rid) == {"queued": 2, "acknowledged": 3, "pushed": 1}
    world.clock.advance(dt.timedelta(minutes=16))
    assert recover_lost_answers(world.ledger, world.client, world.clock.now(),
                                dt.timedelta(minutes=15)) == 1  # fmt: skip
    assert events(world.ledger, "delivery.answer_lost") == 1
    assert world.run(rid) == "completed"
    assert checked_states(world.ledger, rid) == {"acknowledged": 6}


def test_abort_clears_micromdms_queues(beside: Callable[..., Beside]) -> None:
    world = beside(devices=3, mix=ALL_OFFLINE, server="micromdm")
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.tick()
    assert all(len(world.nanomdm.queued(d.udid)) == 1 for d in world.fleet)
    abort_rollout(world.ledger, rid, actor="test", now=world.clock.now())
    assert sweep(world.ledger, world.client, world.clock.now(), dt.timedelta(minutes=15)) == {
        "recovered": 0,
        "withdrawn": 3,
        "cleanups": 0,
    }
    assert all(world.nanomdm.queued(d.udid) == [] for d in world.fleet)
    assert world.nanomdm.counts.queue_clears == 3  # one call per device
