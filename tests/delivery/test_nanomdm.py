"""Rollout beside NanoMDM: a staged rollout through the stand-in (a real HTTP server speaking
NanoMDM's API, queue and webhook) with simulated devices enrolled in it, and its faults."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable

import httpx

from rollout.apns import PushClient, PushConfig, load_pem
from rollout.delivery.sweep import recover_lost_answers, sweep, withdraw_aborted
from rollout.ledger import Ledger
from rollout.operations import abort_rollout
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.fleet import FleetMix
from rollout.spec import Gate, StageSpec
from tests.delivery.conftest import SECRET, Beside
from tests.support import TOPIC, add_profile, checked_states, start_rollout

ALL_OK = FleetMix(ok=1.0, notnow_then_ok=0.0, error=0.0, format_error=0.0, offline=0.0,
                  dead_token=0.0)  # fmt: skip
ALL_OFFLINE = FleetMix(ok=0.0, notnow_then_ok=0.0, error=0.0, format_error=0.0, offline=1.0,
                       dead_token=0.0)  # fmt: skip
# the canary's four devices are drawn by a per-rollout salt and a tenth of the fleet fails: the
# canary's gate allows two failures and waits for every canary answer (or time-out)
STAGED = (
    StageSpec(count=4, gate=Gate(min_success_rate=None, max_failures=2, min_final_share=1.0)),
    StageSpec(share=1.0, gate=Gate(min_success_rate=None)),
)


def rollout_to_all(world: Beside, *, verify: bool = True, stages: tuple[StageSpec, ...] = STAGED
                   ) -> int:  # fmt: skip
    entry = add_profile(world.ledger, world.clock.now())
    udids = [d.udid for d in world.fleet]
    return start_rollout(
        world.ledger, entry.uuid, udids, world.clock.now(), stages=stages, verify=verify
    )


def events(ledger: Ledger, kind: str) -> int:
    with ledger.checkin() as store:
        return len(store.events(kind=kind, limit=10_000))


def test_enrollments_reach_the_registry_through_the_webhook(
    beside: Callable[..., Beside],
) -> None:
    world = beside(devices=12)
    with world.ledger.registry() as store:
        ids = store.device_ids([d.udid for d in world.fleet])
        infos = [store.get(d.udid) for d in world.fleet]
        pushes = {d.udid: store.push_data(d.udid) for d in world.fleet}
    assert len(ids) == 12
    assert all(i is not None and i.state == "enrolled" for i in infos), infos
    # the push data came with each TokenUpdate: rollout could wake the devices itself
    tokens = {d.udid: d.push_token_hex for d in world.fleet}
    assert all(p is not None and p.token == tokens[udid] for udid, p in pushes.items())


def test_a_staged_rollout_runs_end_to_end_over_nanomdm(beside: Callable[..., Beside]) -> None:
    world = beside(devices=20)
    rid = rollout_to_all(world)
    state = world.run(rid)
    with world.ledger.rollouts() as store:
        info = store.get(rid)
    assert state == "completed", info
    states = checked_states(world.ledger, rid)
    behaviours = world.fleet.behavior_counts()
    answered = behaviours["ok"] + behaviours["notnow_then_ok"]
    assert states == {
        "verified": answered,
        "failed": behaviours["error"],
        "timed_out": behaviours["offline"],
    }
    # every answering device really holds the profile, installed from NanoMDM's queue
    assert sum(1 for d in world.fleet if d.installed) == answered
    # the install went out in one enqueue call per stage, all its devices under one
    # CommandUUID; each verification went alone
    with world.ledger.rollouts() as store:
        install_uuids = set(store.command_uuids(rid).values())
    assert len(install_uuids) == 2
    assert world.nanomdm.counts.enqueue_calls == 2 + answered
    with world.ledger.rollouts() as store:
        stages = store.stages(rid)
    assert [s.state for s in stages] == ["passed", "passed"]


def test_a_500_on_enqueue_and_a_restart_lose_nothing(beside: Callable[..., Beside]) -> None:
    world = beside(devices=10, mix=ALL_OK)
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.nanomdm.fail_enqueue = 1  # the batch's one enqueue call answers 500
    world.tick()
    assert world.handed[-1]["transient"] == 10
    assert checked_states(world.ledger, rid) == {"queued": 10}
    world.nanomdm.stop()  # down: every call fails to connect
    world.clock.advance(2)
    world.tick()
    assert world.handed[-1]["transient"] == 10
    world.nanomdm.start()  # back on the same port with its queue
    assert world.run(rid) == "completed"
    assert checked_states(world.ledger, rid) == {"acknowledged": 10}
    assert all(len(d.installed) == 1 for d in world.fleet)


def test_a_duplicated_webhook_is_counted_once(beside: Callable[..., Beside]) -> None:
    world = beside(devices=10, mix=ALL_OK)
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.nanomdm.duplicate_webhooks = 1000
    assert world.run(rid) == "completed"
    assert world.nanomdm.counts.webhooks_posted >= 2 * world.nanomdm.counts.reports
    assert checked_states(world.ledger, rid) == {"acknowledged": 10}
    assert events(world.ledger, "mdm.result") == world.nanomdm.counts.reports == 10


def test_a_lost_webhook_is_recovered_by_the_sweep(beside: Callable[..., Beside]) -> None:
    world = beside(devices=10, mix=ALL_OK)
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.nanomdm.drop_webhooks = 3
    world.tick()
    assert world.nanomdm.counts.webhooks_dropped == 3
    assert checked_states(world.ledger, rid) == {"acknowledged": 7, "pushed": 3}
    # a recent command is left alone: its answer may still be on the way
    assert recover_lost_answers(world.ledger, world.client, world.clock.now(),
                                dt.timedelta(minutes=15)) == 0  # fmt: skip
    world.clock.advance(dt.timedelta(minutes=16))
    recovered = recover_lost_answers(
        world.ledger, world.client, world.clock.now(), dt.timedelta(minutes=15)
    )
    assert recovered == 3
    assert events(world.ledger, "delivery.answer_lost") == 3
    assert world.run(rid) == "completed"
    assert checked_states(world.ledger, rid) == {"acknowledged": 10}


def test_a_command_nanomdm_still_holds_is_not_recovered(beside: Callable[..., Beside]) -> None:
    world = beside(devices=4, mix=ALL_OFFLINE)
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.tick()
    world.clock.advance(dt.timedelta(hours=1))
    assert recover_lost_answers(world.ledger, world.client, world.clock.now(),
                                dt.timedelta(minutes=15)) == 0  # fmt: skip
    assert checked_states(world.ledger, rid) == {"pushed": 4}


def test_abort_clears_the_servers_queue(beside: Callable[..., Beside]) -> None:
    world = beside(devices=6, mix=ALL_OFFLINE)
    rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
    world.tick()
    assert all(len(world.nanomdm.queued(d.udid)) == 1 for d in world.fleet)
    assert abort_rollout(world.ledger, rid, actor="test", now=world.clock.now())
    out = sweep(world.ledger, world.client, world.clock.now(), dt.timedelta(minutes=15))
    assert out == {"recovered": 0, "withdrawn": 6, "cleanups": 0}
    assert all(world.nanomdm.queued(d.udid) == [] for d in world.fleet)
    assert world.nanomdm.counts.queue_clears == 1  # one call for every device
    assert withdraw_aborted(world.ledger, world.client, world.clock.now()) == 0
    assert checked_states(world.ledger, rid) == {"cancelled": 6}


def test_a_forged_webhook_is_refused_and_nothing_is_stored(
    beside: Callable[..., Beside],
) -> None:
    world = beside(devices=2, mix=ALL_OK)
    udid = "00008020-00000000DEADBEEF"
    payload = (
        b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
        b"<key>MessageType</key><string>Authenticate</string>"
        b"<key>Topic</key><string>com.apple.mgmt.External.x</string>"
        b"<key>UDID</key><string>" + udid.encode() + b"</string></dict></plist>"
    )
    event = {
        "topic": "mdm.Authenticate",
        "event_id": "1",
        "created_at": "2026-12-02T00:00:00Z",
        "checkin_event": {"udid": udid, "raw_payload": base64.b64encode(payload).decode()},
    }
    base = f"{world.web.base_url}/webhook/mdm"
    before = events(world.ledger, "device.enrolled"), _devices(world)
    with httpx.Client() as http:
        assert http.post(f"{base}/wrong-secret-0123456789", json=event).status_code == 403
        assert http.post(base, json=event).status_code == 403
        assert http.post(base, json=event, headers={"X-Webhook-Secret": "nope"}).status_code == 403
        assert http.post(f"{base}/{SECRET[:-1]}", json=event).status_code == 403
        assert (events(world.ledger, "device.enrolled"), _devices(world)) == before
        # the real secret, a body that is not an event: refused, nothing stored
        assert http.post(f"{base}/{SECRET}", content=b"{not json").status_code == 400
        bad = dict(event, checkin_event={"raw_payload": "%%%"})
        assert http.post(f"{base}/{SECRET}", content=json.dumps(bad)).status_code == 400
        assert _devices(world) == before[1]
        # and the real secret in the header is taken
        ok = http.post(base, json=event, headers={"X-Webhook-Secret": SECRET})
        assert ok.status_code == 200
    assert _devices(world) == before[1] + 1


def _devices(world: Beside) -> int:
    with world.ledger.registry() as store:
        return sum(store.count_by_state().values())


def test_rollout_pushes_itself_when_it_holds_the_push_certificate(
    beside: Callable[..., Beside],
) -> None:
    """``ROLLOUT_NANOMDM_PUSH=rollout``: commands are enqueued with ``nopush=1`` and rollout's
    own APNs client wakes the devices (with the push data the TokenUpdates brought); NanoMDM
    pushes nothing. A token APNs calls dead makes its target unreachable."""
    world = beside(devices=8, mix=ALL_OK)
    dead = next(iter(world.fleet))
    with ApnsStandIn(topic=TOPIC, on_push=world.fleet.wake) as apns_server:
        apns_server.unregister(dead.push_token_hex)
        issued = apns_server.issue_push_certificate(TOPIC)
        config = PushConfig(base_url=apns_server.base_url, ca_file=apns_server.ca_file,
                            backoff_base=0.01, backoff_cap=0.05, timeout=3.0)  # fmt: skip
        pusher = PushClient(load_pem(issued.cert_pem() + issued.key_pem()), config)
        try:
            rid = rollout_to_all(world, verify=False, stages=(StageSpec(share=1.0),))
            world.pusher = pusher
            assert world.run(rid) == "completed"
        finally:
            pusher.close()
    assert world.nanomdm.counts.pushes == 0 and world.nanomdm.counts.push_calls == 0
    assert checked_states(world.ledger, rid) == {"acknowledged": 7, "unreachable": 1}
    with world.ledger.registry() as store:
        info = store.get(dead.udid)
    assert info is not None and info.token_state == "dead"


def test_the_clean_up_after_a_verification_is_handed_over_by_the_sweep(
    beside: Callable[..., Beside],
) -> None:
    world = beside(devices=5, mix=ALL_OK)
    now = world.clock.now()
    old = add_profile(
        world.ledger, now, name="Field App (old)", expires_at=now + dt.timedelta(days=9)
    )
    with world.ledger.library() as store:
        content = store.content(old.uuid)
    assert content is not None
    for device in world.fleet:
        device.preinstall(content, managed=True)
    new = add_profile(world.ledger, now)
    rid = start_rollout(world.ledger, new.uuid, [d.udid for d in world.fleet], now, verify=True,
                        cleanup=old.uuid)  # fmt: skip
    assert world.run(rid) == "completed"
    assert checked_states(world.ledger, rid) == {"verified": 5}
    # each verified device's clean-up was made, queued, and nobody hands it over but the sweep
    with world.ledger.rollouts() as store:
        assert store.command_counts(rid, "RemoveProvisioningProfile") == {"queued": 5}
    out = sweep(world.ledger, world.client, world.clock.now(), dt.timedelta(minutes=15))
    assert out["cleanups"] == 5
    world.settle()
    with world.ledger.rollouts() as store:
        assert store.command_counts(rid, "RemoveProvisioningProfile") == {"acknowledged": 5}
    assert all(old.uuid.upper() not in d.installed for d in world.fleet)
    assert sweep(world.ledger, world.client, world.clock.now(), dt.timedelta(minutes=15)) == {
        "recovered": 0,
        "withdrawn": 0,
        "cleanups": 0,
    }
