"""Transient failures: another attempt after a jittered exponential backoff, up to a limit.

The delay before attempt n+1 is drawn from [c/2, c] with c = min(cap, base * 2**(n-1)) ("equal
jitter"): spread out, so that the pushes a 503 hit together do not all come back together, and
never zero, so that a failing server is not hammered.

When a backoff is over is the client's clock's call. One loop timer is armed for the earliest
due time and hands every job then due back to the pump; with a clock that is not the machine's
(a test's ``ManualClock``) the timer finds nothing due until the clock moves, and ``wake()``
acts at once after it moved.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable

from rollout.apns.config import PushConfig
from rollout.apns.errors import Outcome
from rollout.apns.jobs import Job, finish
from rollout.clock import Clock


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts (see the module docstring)."""
    ceiling = min(cap, base * (2 ** (attempts - 1)))
    return random.uniform(ceiling / 2, ceiling)


class Retries:
    """Pushes waiting out their backoff; ``requeue(jobs)`` receives them when it is over."""

    def __init__(
        self, config: PushConfig, clock: Clock, *, requeue: Callable[[list[Job]], None]
    ) -> None:
        self.config = config
        self.clock = clock
        self.requeue = requeue
        self._waiting: list[tuple[float, int, Job]] = []  # a heap of (due, order, job)
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    def __len__(self) -> int:
        return len(self._waiting)

    def retry(self, job: Job, status: int | None, reason: str) -> None:
        """Try ``job`` again later, or finish it as transient when its attempts are used up."""
        job.last_status, job.last_reason = status, reason
        cfg = self.config
        if job.attempts >= cfg.max_attempts:
            finish(job, Outcome.TRANSIENT, status, reason)
            return
        delay = backoff_delay(job.attempts, cfg.backoff_base, cfg.backoff_cap)
        due = self.clock.monotonic() + delay
        heapq.heappush(self._waiting, (due, next(self._order), job))
        if due < self._timer_due:
            self._arm(due)

    def wake(self) -> None:
        """Hand every job whose backoff the clock says is over to ``requeue``."""
        now = self.clock.monotonic()
        waiting = self._waiting
        due: list[Job] = []
        while waiting and waiting[0][0] <= now:
            due.append(heapq.heappop(waiting)[2])
        if waiting and waiting[0][0] < self._timer_due:
            self._arm(waiting[0][0])
        if due:
            self.requeue(due)

    def clear(self) -> None:
        """Forget every waiting job (their batches belonged to an event loop no longer used)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = math.inf
        self._waiting.clear()

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, due - self.clock.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
        self._timer_due = due

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        self.wake()
