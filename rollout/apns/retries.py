"""Transient failures: another attempt after a jittered exponential backoff, up to a limit.

The delay before attempt n+1 is drawn from [c/2, c] with c = min(cap, base * 2**(n-1)) ("equal
jitter"): spread out, so that the pushes a 503 hit together do not all come back together, and
never zero, so that a failing server is not hammered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from rollout.apns.config import PushConfig
from rollout.apns.errors import Outcome
from rollout.apns.jobs import Job, finish


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts (see the module docstring)."""
    ceiling = min(cap, base * (2 ** (attempts - 1)))
    return random.uniform(ceiling / 2, ceiling)


class Retries:
    """Pushes waiting out their backoff; ``requeue(job)`` receives each one when it is over."""

    def __init__(self, config: PushConfig, *, requeue: Callable[[Job], None]) -> None:
        self.config = config
        self.requeue = requeue

    def retry(self, job: Job, status: int | None, reason: str) -> None:
        """Try ``job`` again later, or finish it as transient when its attempts are used up."""
        job.last_status, job.last_reason = status, reason
        cfg = self.config
        if job.attempts >= cfg.max_attempts:
            finish(job, Outcome.TRANSIENT, status, reason)
            return
        delay = backoff_delay(job.attempts, cfg.backoff_base, cfg.backoff_cap)
        asyncio.get_running_loop().call_later(delay, self.requeue, job)
