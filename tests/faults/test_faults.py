"""Faults that must lose nothing, with real worker processes, Redis, PostgreSQL, APNs stand-in
and simulated devices. Each test ends with the rollout completed, every device counted once,
the kept counters equal to the targets, and one command row per device."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from rollout.sim.world import World
from tests.faults.support import RedisServer, assert_ledger_consistent, expected_end, make_world

pytestmark = [pytest.mark.slow, pytest.mark.celery]


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(every)


def pushes(world: World) -> int:
    assert world.standin is not None
    return int(world.standin.counters()["requests"])


def finish(world: World, rollout_id: int, timeout: float = 120.0) -> dict[str, int]:
    summary = world.wait(rollout_id, timeout)
    assert summary["rollout"]["state"] == "completed"
    states = assert_ledger_consistent(world, rollout_id)
    assert states == expected_end(world), states
    return states


def test_sigkill_a_worker_mid_batch_another_worker_redoes_it(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    with make_world(tmp_path, postgres_url, redis_server.url) as world:
        assert world.standin is not None
        world.standin.set_delay(0.4)  # every batch takes a while: there is a middle to kill in
        world.enroll()
        rid = world.open_rollout()
        victim = world.start_worker("w1", concurrency=1)
        world.start_beat()
        wait_for(lambda: pushes(world) > 0)  # w1, the only worker, is inside a batch
        world.start_worker("w2", concurrency=1)
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool process, mid-batch
        world.standin.set_delay(0)
        finish(world, rid)
        assert pushes(world) >= expected_end(world)["acknowledged"]


def test_redis_stops_and_restarts_mid_stage(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    with make_world(tmp_path, postgres_url, redis_server.url) as world:
        assert world.standin is not None
        world.standin.set_delay(0.2)
        world.enroll()
        rid = world.open_rollout()
        world.start_worker("w1")
        world.start_beat()
        wait_for(lambda: pushes(world) > 0)
        redis_server.stop()  # every queued message is gone with it (no persistence)
        time.sleep(3)
        redis_server.start()
        world.standin.set_delay(0)
        finish(world, rid)


def test_postgres_connections_dropped_mid_batch(
    tmp_path: Path, postgres_url: str, postgres_admin: str, redis_server: RedisServer
) -> None:
    database = make_url(postgres_url).database
    with make_world(tmp_path, postgres_url, redis_server.url) as world:
        assert world.standin is not None
        world.standin.set_delay(0.2)
        world.enroll()
        rid = world.open_rollout()
        world.start_worker("w1")
        world.start_worker("w2")
        world.start_beat()
        wait_for(lambda: pushes(world) > 0)
        killed = 0
        with psycopg.connect(postgres_admin, autocommit=True) as admin:
            for _ in range(3):
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                ).fetchall()
                killed += len(rows)
                time.sleep(0.7)
        assert killed > 0
        world.standin.set_delay(0)
        finish(world, rid, timeout=180)


def test_apns_500s_then_recovery_gives_nothing_up_early(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    with make_world(tmp_path, postgres_url, redis_server.url) as world:
        assert world.standin is not None and world.ledger is not None
        world.enroll()
        rid = world.open_rollout()
        # An outage counted in requests, not seconds: however long the workers take to start
        # on a busy machine, the first pushes meet it.
        world.standin.fail_next(500, "InternalServerError", count=400)
        world.start_worker("w1")
        world.start_beat()
        wait_for(lambda: world.standin is not None and pushes(world) > 50)
        with world.ledger.rollouts() as store:  # during the outage nothing is given up
            states = store.state_counts(rid)
        assert states.get("timed_out", 0) == states.get("failed", 0) == 0
        finish(world, rid)
        statuses = world.standin.counters()["statuses"]
        assert statuses.get(500, 0) > 0 and statuses.get(200, 0) > 0


def test_concurrent_ticks_on_two_workers_dispatch_each_batch_once(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    from rollout.config import Settings
    from workers.app import make_app

    # long answer time-out: any second push of a target would be a double dispatch
    with make_world(
        tmp_path, postgres_url, redis_server.url, ROLLOUT_RESPONSE_TIMEOUT_S="120"
    ) as world:
        assert world.standin is not None and world.ledger is not None
        world.standin.set_delay(0.1)
        world.enroll()
        rid = world.open_rollout()
        world.start_worker("w1", concurrency=2)
        world.start_worker("w2", concurrency=2)
        sender = make_app(Settings(broker_url=redis_server.url, home=tmp_path))
        time.sleep(2)  # let both workers connect
        barrier = threading.Barrier(6)

        def send() -> None:
            barrier.wait()
            sender.send_task("rollout.tick", queue="control")

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        world.start_beat()  # and beat's own ticks on top
        finish(world, rid)
        with world.ledger.rollouts() as store:
            repushed = [t for t in store.targets(rid).values() if t.push_count > 1]
        assert repushed == []
        assert (
            pushes(world)
            == expected_end(world)["acknowledged"] + expected_end(world)["unreachable"]
        )


def test_a_rollout_over_rabbitmq(tmp_path: Path, postgres_url: str, rabbitmq_url: str) -> None:
    from kombu import Connection

    with Connection(rabbitmq_url) as conn:  # leftovers from an earlier run would be replayed
        for queue in ("control", "fanout"):
            channel = conn.channel()
            try:
                channel.queue_purge(queue)
            except conn.channel_errors:
                pass  # the queue does not exist yet
            finally:
                channel.close()
    with make_world(tmp_path, postgres_url, rabbitmq_url, devices=120) as world:
        world.enroll()
        rid = world.open_rollout()
        world.start_worker("w1")
        world.start_beat()
        finish(world, rid)


def test_a_staged_verified_rollout_on_real_workers_redis_and_postgres(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer
) -> None:
    from rollout.spec import Gate, StageSpec

    gate = Gate(min_success_rate=0.9, min_final_share=0.9)
    stages = (
        StageSpec(share=0.1, gate=gate),
        StageSpec(share=0.5, gate=gate),
        StageSpec(share=1.0, gate=gate),
    )
    with make_world(tmp_path, postgres_url, redis_server.url, devices=160) as world:
        world.enroll()
        rid = world.open_rollout(stages=stages, verify=True)
        world.start_worker("w1")
        world.start_worker("w2")
        world.start_beat()
        summary = world.wait(rid, 150)
        assert summary["rollout"]["state"] == "completed"
        assert [s["state"] for s in summary["stages"]] == ["passed", "passed", "passed"]
        states = assert_ledger_consistent(world, rid)
        end = expected_end(world)
        assert states == {"verified": end["acknowledged"], "unreachable": end["unreachable"]}
        assert world.ledger is not None
        with world.ledger.rollouts() as store:
            promoted = [e.data["stage"] for e in store.events(kind="rollout.promoted")]
        assert sorted(promoted) == [1, 2]
