"""State shared by every pushing worker: the push rate limit and the certificate circuit breaker.

Each comes behind a small interface with two implementations: an in-process one (the embedded
default, one process) and a Redis one (many processes on many hosts). The in-process ones take
their time from a ``Clock`` (tests move a ``ManualClock`` instead of sleeping). The Redis ones take
none on purpose: they are single Lua scripts using the Redis server's clock (``TIME`` and key
TTLs), the one clock every worker on every host shares, so workers on hosts with skewed clocks
still agree, and every decision is one atomic round trip.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from rollout.clock import SYSTEM_CLOCK, Clock


class RateLimiter(Protocol):
    """A pushes-per-second budget shared by everyone holding the same limiter."""

    async def acquire(self, want: int) -> int:
        """Wait until at least one push may go; return how many may (1..``want``)."""
        ...


class Permit(enum.Enum):
    """The breaker's answer before a batch."""

    ALLOW = "allow"  # closed: push freely
    PROBE = "probe"  # half-open and this caller holds the probe: push one and report
    DENY = "deny"  # open (or another caller is probing): push nothing


@dataclass(frozen=True)
class BreakerDecision:
    """A permit plus, when denied, why and for how long."""

    permit: Permit
    reason: str = ""
    retry_after: float = 0.0


class CircuitBreaker(Protocol):
    """Opens on a certificate failure; after ``cooldown`` one caller probes; success closes it."""

    async def check(self) -> BreakerDecision:
        """Ask before pushing."""
        ...

    async def record_failure(self, reason: str) -> None:
        """A certificate failure: open (again) for the cool-down."""
        ...

    async def record_success(self) -> None:
        """The probe passed: close."""
        ...

    async def release_probe(self) -> None:
        """The probe told nothing (e.g. network error): let another caller probe."""
        ...


class InProcessRateLimiter:
    """Token bucket in this process (``rate`` tokens/s, at most ``burst`` saved up)."""

    def __init__(
        self, rate: float, burst: int | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst if burst is not None else int(rate / 10))
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()

    def _take(self, want: int) -> tuple[int, float]:
        with self._lock:
            now = self._clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            granted = min(want, int(self._tokens))
            self._tokens -= granted
            wait = 0.0 if granted else (1 - self._tokens) / self.rate
            return granted, wait

    async def acquire(self, want: int) -> int:
        """See ``RateLimiter.acquire``."""
        while True:
            granted, wait = self._take(want)
            if granted:
                return granted
            # Tokens come back only as the clock moves; with a manual clock this polls until
            # the caller moves it.
            await asyncio.sleep(wait)


class InProcessCircuitBreaker:
    """The breaker for one process (thread-safe); cool-down and probe time-out run on ``clock``."""

    def __init__(
        self, cooldown: float = 300.0, probe_timeout: float = 30.0, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.cooldown = cooldown
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._open_until: float | None = None
        self._reason = ""
        self._probe_until = 0.0
        self._lock = threading.Lock()

    async def check(self) -> BreakerDecision:
        """See ``CircuitBreaker.check``."""
        with self._lock:
            now = self._clock.monotonic()
            if self._open_until is None:
                return BreakerDecision(Permit.ALLOW)
            if now < self._open_until:
                return BreakerDecision(Permit.DENY, self._reason, self._open_until - now)
            if now >= self._probe_until:
                self._probe_until = now + self.probe_timeout
                return BreakerDecision(Permit.PROBE, self._reason)
            return BreakerDecision(Permit.DENY, self._reason, self._probe_until - now)

    async def record_failure(self, reason: str) -> None:
        """See ``CircuitBreaker.record_failure``."""
        with self._lock:
            self._open_until = self._clock.monotonic() + self.cooldown
            self._reason = reason
            self._probe_until = 0.0

    async def record_success(self) -> None:
        """See ``CircuitBreaker.record_success``."""
        with self._lock:
            self._open_until = None
            self._reason = ""
            self._probe_until = 0.0

    async def release_probe(self) -> None:
        """See ``CircuitBreaker.release_probe``."""
        with self._lock:
            self._probe_until = 0.0


class _RedisHolder:
    """One ``redis.asyncio`` client per event loop (its connections belong to a loop)."""

    def __init__(self, client: aioredis.Redis | str) -> None:
        self._url = client if isinstance(client, str) else None
        self._fixed = None if isinstance(client, str) else client
        self._clients: dict[int, aioredis.Redis] = {}

    def get(self) -> aioredis.Redis:
        if self._fixed is not None:
            return self._fixed
        assert self._url is not None
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = aioredis.Redis.from_url(self._url)
            self._clients[loop_id] = client
        return client


_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(st[1])
local ts = tonumber(st[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
local wait = 0
if granted == 0 then
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
return {granted, wait}
"""


class RedisRateLimiter:
    """Token bucket in Redis, shared by every process using the same ``key``.

    No ``Clock`` here: the refill runs on the Redis server's ``TIME`` (see the module docstring).
    """

    def __init__(
        self,
        redis: aioredis.Redis | str,
        rate: float,
        burst: int | None = None,
        key: str = "rollout:apns:rate",
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst if burst is not None else int(rate / 10))
        self.key = key
        self._redis = _RedisHolder(redis)

    async def acquire(self, want: int) -> int:
        """See ``RateLimiter.acquire``."""
        while True:
            reply: Any = await self._redis.get().eval(
                _BUCKET_LUA, 1, self.key, self.rate, self.burst, want
            )
            granted, wait_ms = int(reply[0]), int(reply[1])
            if granted:
                return granted
            await asyncio.sleep(max(wait_ms, 1) / 1000)


_CHECK_LUA = """
local st = redis.call('HMGET', KEYS[1], 'open_until', 'reason')
if not st[1] then
  return {0, 0, ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(st[1])
if now < open_until then
  return {2, open_until - now, st[2]}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, 0, st[2]}
end
return {2, redis.call('PTTL', KEYS[2]), st[2]}
"""

_FAIL_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'open_until', string.format('%d', now + tonumber(ARGV[1])),
           'reason', ARGV[2], 'opened_at', string.format('%d', now))
redis.call('DEL', KEYS[2])
return 1
"""


class RedisCircuitBreaker:
    """The breaker in Redis: every worker on every host sees the same open/closed state.

    No ``Clock`` here: cool-down and probe time-out are the Redis server's ``TIME`` and key TTLs,
    shared by every worker (see the module docstring).
    """

    def __init__(
        self,
        redis: aioredis.Redis | str,
        cooldown: float = 300.0,
        probe_timeout: float = 30.0,
        key: str = "rollout:apns:breaker",
    ) -> None:
        self.cooldown = cooldown
        self.probe_timeout = probe_timeout
        self.state_key = key
        self.probe_key = key + ":probe"
        self._redis = _RedisHolder(redis)
        self._me = uuid.uuid4().hex

    async def check(self) -> BreakerDecision:
        """See ``CircuitBreaker.check``."""
        reply: Any = await self._redis.get().eval(
            _CHECK_LUA,
            2,
            self.state_key,
            self.probe_key,
            self._me,
            int(self.probe_timeout * 1000),
        )
        code, wait_ms, reason = int(reply[0]), int(reply[1]), reply[2]
        text = reason.decode() if isinstance(reason, bytes) else str(reason)
        if code == 0:
            return BreakerDecision(Permit.ALLOW)
        if code == 1:
            return BreakerDecision(Permit.PROBE, text)
        return BreakerDecision(Permit.DENY, text, max(wait_ms, 0) / 1000)

    async def record_failure(self, reason: str) -> None:
        """See ``CircuitBreaker.record_failure``."""
        await self._redis.get().eval(
            _FAIL_LUA, 2, self.state_key, self.probe_key, int(self.cooldown * 1000), reason
        )

    async def record_success(self) -> None:
        """See ``CircuitBreaker.record_success``."""
        await self._redis.get().delete(self.state_key, self.probe_key)

    async def release_probe(self) -> None:
        """See ``CircuitBreaker.release_probe``."""
        await self._redis.get().delete(self.probe_key)
