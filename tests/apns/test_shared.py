"""State shared through Redis: the push rate limit across processes, and the circuit breaker."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rollout.apns import (
    AsyncPushClient,
    Outcome,
    PushCertificate,
    PushConfig,
    PushRequest,
    RedisCircuitBreaker,
    RedisRateLimiter,
    load_pem,
)
from rollout.sim.apns_server import ApnsStandIn

pytestmark = pytest.mark.redis


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"test:apns:{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def _pusher(
    pem: bytes,
    config: PushConfig,
    redis_url: str,
    key: str,
    rate: float,
    burst: int,
    count: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    cert = load_pem(pem)

    async def main() -> None:
        limiter = RedisRateLimiter(redis_url, rate, burst, key=key)
        client = AsyncPushClient(cert, config, rate_limiter=limiter)
        ready.put(os.getpid())
        go.wait(30)
        t0 = time.time()
        results = await client.push_many(
            [PushRequest(os.urandom(32).hex(), "m") for _ in range(count)]
        )
        t1 = time.time()
        await client.aclose()
        out.put((t0, t1, sum(r.ok for r in results)))

    asyncio.run(main())


def test_rate_limit_is_shared_by_two_processes(
    standin: ApnsStandIn,
    push_cert: PushCertificate,
    config: PushConfig,
    redis_url: str,
    key_prefix: str,
) -> None:
    rate, burst, per_process = 50.0, 5, 50
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    pem = push_cert.cert_pem() + push_cert.key_pem()
    procs = [
        ctx.Process(
            target=_pusher,
            args=(
                pem,
                config,
                redis_url,
                f"{key_prefix}:rate",
                rate,
                burst,
                per_process,
                ready,
                go,
                out,
            ),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=30)
        go.set()
        spans = [out.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert [s[2] for s in spans] == [per_process, per_process]
    elapsed = max(s[1] for s in spans) - min(s[0] for s in spans)
    floor = (2 * per_process - burst) / rate  # 1.9 s
    assert elapsed >= floor - 0.15, elapsed
    assert elapsed < floor + 2.0, elapsed
    # each process alone would have taken about half as long: the budget really was shared
    assert min(s[1] - s[0] for s in spans) > floor / 2


def test_breaker_state_is_shared_between_workers(
    standin: ApnsStandIn,
    push_cert: PushCertificate,
    config: PushConfig,
    redis_url: str,
    key_prefix: str,
) -> None:
    async def main() -> None:
        def worker() -> AsyncPushClient:
            breaker = RedisCircuitBreaker(redis_url, cooldown=0.6, key=f"{key_prefix}:breaker")
            return AsyncPushClient(push_cert, config, breaker=breaker)

        a, b = worker(), worker()
        standin.fail_next(403, "BadCertificate", 1)
        (ra,) = await a.push_many([PushRequest(os.urandom(32).hex(), "m")])
        assert ra.outcome is Outcome.CERTIFICATE
        # a's next batch asks the breaker only after its failure is written to Redis
        (again,) = await a.push_many([PushRequest(os.urandom(32).hex(), "m")])
        assert again.outcome is Outcome.CIRCUIT_OPEN
        sent = standin.counters()["requests"]
        rb = await b.push_many([PushRequest(os.urandom(32).hex(), "m") for _ in range(3)])
        assert {r.outcome for r in rb} == {Outcome.CIRCUIT_OPEN}
        assert rb[0].error is not None and "BadCertificate" in str(rb[0].error)
        assert standin.counters()["requests"] == sent
        # The cool-down runs on the Redis server's clock, shared by every worker: no process's
        # clock can move it, so this test waits for it.
        await asyncio.sleep(0.6)
        # half-open: worker b probes, succeeds, closes the breaker for everyone
        rb2 = await b.push_many([PushRequest(os.urandom(32).hex(), "m") for _ in range(3)])
        assert all(r.ok for r in rb2)
        ra2 = await a.push_many([PushRequest(os.urandom(32).hex(), "m")])
        assert ra2[0].ok
        await a.aclose()
        await b.aclose()

    asyncio.run(main())


def test_only_one_worker_gets_the_probe(redis_url: str, key_prefix: str) -> None:
    async def main() -> list[str]:
        b1 = RedisCircuitBreaker(redis_url, cooldown=0.05, key=f"{key_prefix}:b")
        b2 = RedisCircuitBreaker(redis_url, cooldown=0.05, key=f"{key_prefix}:b")
        await b1.record_failure("BadCertificate")
        first = [(await b.check()).permit.value for b in (b1, b2)]
        await asyncio.sleep(0.08)  # the cool-down is Redis time (see above)
        second = [(await b.check()).permit.value for b in (b1, b2)]
        await b1.release_probe()
        third = (await b2.check()).permit.value
        await b2.record_success()
        return [*first, *second, third, (await b1.check()).permit.value]

    assert asyncio.run(main()) == ["deny", "deny", "probe", "deny", "probe", "allow"]
