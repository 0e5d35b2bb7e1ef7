"""What the client does when APNs refuses its certificate, and the breaker that remembers it.

A refusal (403 BadCertificate / BadCertificateEnvironment / Forbidden, a GOAWAY saying so, a
failed TLS handshake) is not a per-push problem: every later push would be refused too. So
pushing stops in this process at once (``blocked_reason``), the shared circuit breaker opens for
every worker, and the alert hook fires once. Before each batch the breaker is asked; when it
is half-open one caller sends a single probe push, whose answer closes or re-opens it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

from rollout.apns.coordination import BreakerDecision, CircuitBreaker, Permit
from rollout.apns.errors import CertificateRejectedError, CircuitOpenError, Outcome
from rollout.apns.jobs import Batch, Job, finish
from rollout.apns.models import PushRequest, PushResult

log = logging.getLogger("rollout.apns")

AlertHook = Callable[[CertificateRejectedError], None]


class CertificateGuard:
    """The local block, the shared breaker and the alerts, for one client."""

    def __init__(self, breaker: CircuitBreaker, on_alert: AlertHook | None) -> None:
        self.breaker = breaker
        self.on_alert = on_alert
        self.alerts: list[CertificateRejectedError] = []
        self.blocked_reason: str | None = None
        """Set while this process knows the certificate is refused: nothing more is sent."""
        self._writes: set[asyncio.Task[None]] = set()

    async def ask(self) -> BreakerDecision:
        """The breaker's answer before a batch (allow when the breaker's store is down)."""
        if self._writes:  # a failure seen here must be visible before we ask
            await asyncio.gather(*self._writes, return_exceptions=True)
        try:
            return await self.breaker.check()
        except Exception as exc:  # breaker store down: fail open, APNs still guards the cert
            log.warning("apns circuit breaker unavailable (%r); pushing anyway", exc)
            return BreakerDecision(Permit.ALLOW)

    def refused(self, reason: str) -> bool:
        """APNs refused the certificate: block, open the breaker, alert. False if already done."""
        if self.blocked_reason is not None:
            return False
        self.blocked_reason = reason
        alert = CertificateRejectedError(reason)
        self.alerts.append(alert)
        log.error("apns certificate rejected: %s; circuit opened", reason)
        task = asyncio.get_running_loop().create_task(self._record_failure(reason))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:  # an alert hook must never break pushing
                log.exception("apns alert hook failed")
        return True

    async def _record_failure(self, reason: str) -> None:
        try:
            await self.breaker.record_failure(reason)
        except Exception as exc:  # the local block still holds; other workers will see 403s
            log.error("apns could not open the shared circuit breaker: %r", exc)

    async def probe(self, jobs: list[Job], send: Callable[[list[Job]], None]) -> list[Job]:
        """Half-open: ``send`` the first job alone; return the jobs that may follow it.

        The first job's result lands in its own batch as usual; when the probe fails or tells
        nothing, the others are finished as circuit-open and none may follow.
        """
        if not jobs:
            await self.breaker.release_probe()
            return jobs
        first, rest = jobs[0], jobs[1:]
        probe_batch = Batch(1, asyncio.get_running_loop().create_future())
        first_batch, first_index = first.batch, first.index
        first.batch, first.index = probe_batch, 0
        send([first])
        await probe_batch.future
        result = probe_batch.results[0]
        assert result is not None
        first_batch.results[first_index] = result
        first_batch.remaining -= 1
        if result.outcome is Outcome.CERTIFICATE:
            for job in rest:
                finish(job, Outcome.CIRCUIT_OPEN, None, result.reason or "certificate")
            return []
        if result.status is not None:
            await self.breaker.record_success()
            log.info("apns circuit closed after a successful probe")
            return rest
        await self.breaker.release_probe()
        for job in rest:
            finish(job, Outcome.CIRCUIT_OPEN, None, "probe inconclusive")
        return []


def not_sent(items: Sequence[PushRequest], decision: BreakerDecision) -> list[PushResult]:
    """The results of a batch the breaker refused: nothing was sent."""
    reason = decision.reason or "circuit open"
    return [
        PushResult(
            item.token,
            item.apns_id or str(uuid.uuid4()),
            Outcome.CIRCUIT_OPEN,
            None,
            reason,
            None,
            0,
            CircuitOpenError(reason, decision.retry_after),
        )
        for item in items
    ]
