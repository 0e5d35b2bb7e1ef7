"""The pump: hands queued jobs to connections with free streams, within the shared rate limit.

It runs whenever something may have changed (jobs queued, a connection opened, answers read and
streams freed, tokens granted) and does as much as it can at once: as many jobs as the first
connection with room can start go out in one write, and the pool grows only when every
connection is full. No task or future per push: this is the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from rollout.apns.certificate_guard import CertificateGuard
from rollout.apns.config import PushConfig
from rollout.apns.coordination import RateLimiter
from rollout.apns.errors import Outcome
from rollout.apns.jobs import Job, finish
from rollout.apns.pool import ConnectionPool
from rollout.clock import Clock

log = logging.getLogger("rollout.apns")

RetryHook = Callable[[Job, int | None, str], None]


class Pump:
    """The queue of jobs waiting for a stream, and the loop that empties it."""

    def __init__(
        self,
        pool: ConnectionPool,
        guard: CertificateGuard,
        rate_limiter: RateLimiter | None,
        config: PushConfig,
        clock: Clock,
        *,
        retry: RetryHook,
    ) -> None:
        self.queue: deque[Job] = deque()
        self.pool = pool
        self.guard = guard
        self.rate_limiter = rate_limiter
        self.config = config
        self.clock = clock
        self.retry = retry
        self.sent = 0
        self._tokens = 0
        self._acquiring = False

    def run(self) -> None:
        """Send what can be sent now; ask for a connection or rate tokens when short of them."""
        queue = self.queue
        blocked = self.guard.blocked_reason
        if blocked is not None:
            self.fail_all(blocked)
            return
        now = self.clock.monotonic()  # stream deadlines count from here
        pool = self.pool
        while queue:
            conn = pool.with_room()
            if conn is None:
                pool.grow()
                return
            n = min(conn.free, len(queue))
            if self.rate_limiter is not None:
                if self._tokens <= 0:
                    self._start_acquire()
                    return
                n = min(n, self._tokens)
                self._tokens -= n
            jobs = [queue.popleft() for _ in range(n)]
            self.sent += n
            conn.send_jobs(jobs, now)

    def enqueue(self, jobs: Iterable[Job]) -> None:
        """Queue ``jobs`` (skipping finished ones) and pump; when pushing is blocked, finish
        them as circuit-open instead."""
        blocked = self.guard.blocked_reason
        if blocked is not None:
            for job in jobs:
                finish(job, Outcome.CIRCUIT_OPEN, job.last_status, blocked)
            return
        self.queue.extend(job for job in jobs if not job.done)
        self.run()

    def fail_all(self, reason: str) -> None:
        """Finish every queued job as circuit-open: the certificate was refused."""
        queue = self.queue
        while queue:
            finish(queue.popleft(), Outcome.CIRCUIT_OPEN, None, reason)

    def back_off_all(self, reason: str) -> None:
        """Nothing can carry the queue now: each waiting job spends an attempt and backs off."""
        queue = self.queue
        while queue:
            job = queue.popleft()
            job.attempts += 1
            self.retry(job, None, reason)

    def _start_acquire(self) -> None:
        if self._acquiring or self.rate_limiter is None:
            return
        self._acquiring = True
        asyncio.get_running_loop().create_task(self._acquire())

    async def _acquire(self) -> None:
        assert self.rate_limiter is not None
        try:
            want = max(1, min(len(self.queue), self.config.burst()))
            self._tokens += await self.rate_limiter.acquire(want)
        except Exception as exc:  # Redis down: do not hang the batch, fail it as transient
            log.warning("apns rate limiter failed: %s", exc)
            await asyncio.sleep(self.config.backoff_base)
            self.back_off_all(f"RateLimiterError: {exc}")
        finally:
            self._acquiring = False
        self.run()
