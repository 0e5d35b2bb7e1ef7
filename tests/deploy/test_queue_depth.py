"""``rollout_queue_depth``: the web app's collector reads a Redis broker's queue lists, as
kombu's Redis transport keeps them (a list per queue, and one per priority step)."""

from __future__ import annotations

import uuid

import redis

from rollout.config import Settings
from rollout.web.service_metrics import QueueDepthCollector, redis_keys, service_collectors


def test_the_depth_of_each_queue_is_read_from_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queues = (f"t-control-{uuid.uuid4().hex}", f"t-fanout-{uuid.uuid4().hex}")
    keys = [k for q in queues for k in redis_keys(q)]
    try:
        client.rpush(queues[0], *(b"m" for _ in range(3)))
        client.rpush(redis_keys(queues[0])[2], b"m")  # a message sent with priority 6
        collected = list(QueueDepthCollector(redis_url, queues).collect())
    finally:
        client.delete(*keys)
        client.close()
    (family,) = collected
    assert family.name == "rollout_queue_depth"
    assert {s.labels["queue"]: s.value for s in family.samples} == {queues[0]: 4, queues[1]: 0}


def test_an_unreachable_broker_leaves_the_family_empty_and_others_have_none() -> None:
    (family,) = QueueDepthCollector("redis://127.0.0.1:1/0").collect()
    assert family.name == "rollout_queue_depth" and family.samples == []
    kinds = {type(c).__name__ for c in service_collectors(Settings(broker_url="filesystem://"))}
    assert "QueueDepthCollector" not in kinds
    amqp = Settings(broker_url="amqp://guest@127.0.0.1//")
    assert not any(isinstance(c, QueueDepthCollector) for c in service_collectors(amqp))
