"""Fixtures for the APNs tests: one stand-in server per module, a push certificate, a config, a
manual clock, and two helpers that wait for I/O (never for time to pass)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from rollout.apns import AsyncPushClient, PushCertificate, PushConfig, load_pem
from rollout.clock import ManualClock
from rollout.sim.apns_server import ApnsStandIn

TOPIC = "com.apple.mgmt.External.6b1f4c2e-0d3a-4e55-9f7a-0c1d2e3f4a5b"

T = TypeVar("T")


@pytest.fixture(scope="module")
def standin() -> Iterator[ApnsStandIn]:
    """A running stand-in (real TLS + HTTP/2) that records request headers."""
    with ApnsStandIn(record=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> None:
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()


@pytest.fixture(scope="module")
def push_cert(standin: ApnsStandIn) -> PushCertificate:
    """A push certificate from the stand-in's client CA, with the MDM topic as UID."""
    issued = standin.issue_push_certificate(TOPIC)
    return load_pem(issued.cert_pem() + issued.key_pem())


@pytest.fixture
def config(standin: ApnsStandIn) -> PushConfig:
    """Point at the stand-in; the default backoff (tests move a clock past it, not wait)."""
    return PushConfig(
        base_url=standin.base_url, ca_file=standin.ca_file, timeout=3.0, max_attempts=4
    )


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until I/O (the stand-in's answers, a limiter's poll) makes ``condition`` true."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def on_clock(clock: ManualClock, client: AsyncPushClient, work: Awaitable[T]) -> T:
    """Await ``work``; whenever ``client`` waits on nothing but backoffs, jump ``clock`` past
    them (``backoff_cap``) and ``tick``, so a retry never costs real time."""
    task = asyncio.ensure_future(work)
    async with asyncio.timeout(30):
        while not task.done():
            stats = client.stats()
            if stats["retrying"] and not stats["queued"] and not stats["in_flight"]:
                clock.advance(client.config.backoff_cap)
                client.tick()
            await asyncio.wait([task], timeout=0.001)
    return task.result()
