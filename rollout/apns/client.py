"""``AsyncPushClient``: the asyncio push client, put together from one piece per job.

Flow of one batch: ask the breaker (``certificate_guard``); turn every item into a ``Job`` with
its headers pre-encoded (``jobs``); queue the jobs; the ``pump`` hands them to the first
connection with free streams (the ``pool`` opens another, up to ``max_connections``, only when
every open one is full) within the shared rate limit; each answer is classified
(``errors.classify``): final outcomes fill the result slot, transient ones wait out a jittered
exponential backoff (``retries``) until ``max_attempts``. Streams a GOAWAY says the server never
processed are re-sent without counting an attempt, so no result is lost. This class is also the
connections' ``ConnectionOwner``: their callbacks land here and are routed to those pieces.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from rollout.apns.certificate_guard import AlertHook, CertificateGuard, not_sent
from rollout.apns.certs import PushCertificate
from rollout.apns.config import PushConfig
from rollout.apns.connection import ApnsConnection
from rollout.apns.coordination import (
    CircuitBreaker,
    InProcessCircuitBreaker,
    InProcessRateLimiter,
    Permit,
    RateLimiter,
)
from rollout.apns.errors import CertificateRejectedError, Outcome, classify
from rollout.apns.jobs import Batch, Job, build_jobs, finish
from rollout.apns.models import PushRequest, PushResult
from rollout.apns.pool import ConnectionPool
from rollout.apns.pump import Pump
from rollout.apns.retries import Retries
from rollout.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("rollout.apns")

_CERT_REASONS_IN_GOAWAY = ("BadCertificate", "BadCertificateEnvironment", "Forbidden")


class AsyncPushClient:
    """APNs MDM push client over a small pool of multiplexed HTTP/2 connections.

    Bound to the event loop it is first used on; connections stay open between calls (idle
    ones get a PING every ``config.ping_interval``). ``on_alert`` is called (in the loop) when
    APNs refuses the certificate; the breaker is opened for every worker sharing it.

    Every time-based decision (backoff, stream time-outs, idle PINGs, the apns-expiration
    header, and the default in-process limiter and breaker built from ``config``) reads
    ``clock``; see ``tick`` for driving a manual one.
    """

    def __init__(
        self,
        certificate: PushCertificate,
        config: PushConfig | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        on_alert: AlertHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = cfg = config or PushConfig()
        self._clock = clock
        self.certificate = certificate
        self.topic = certificate.require_topic()
        self.host, self.port = cfg.endpoint()
        authority = self.host if self.port == 443 else f"{self.host}:{self.port}"
        self._authority = authority.encode()
        if rate_limiter is None and cfg.rate_limit is not None:
            rate_limiter = InProcessRateLimiter(cfg.rate_limit, cfg.burst(), clock=clock)
        self._guard = CertificateGuard(
            breaker or InProcessCircuitBreaker(cfg.breaker_cooldown, clock=clock), on_alert
        )
        self._pool = ConnectionPool(
            self,
            cfg,
            certificate.ssl_context(cfg.ca_file),
            clock,
            on_open=self._on_open,
            on_refused=self._certificate_failure,
            on_stranded=self._on_stranded,
        )
        self._retries = Retries(cfg, clock, requeue=self._requeue)
        self._pump = Pump(
            self._pool, self._guard, rate_limiter, cfg, clock, retry=self._retries.retry
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- public API -------------------------------------------------------------------------

    async def push(self, item: PushRequest) -> PushResult:
        """Push one notification (see ``push_many``)."""
        return (await self.push_many([item]))[0]

    async def push_many(self, items: Sequence[PushRequest]) -> list[PushResult]:
        """Push every item; return one result per item, in order. Partial success is normal.

        Never raises for push failures: each result carries its outcome and error.
        """
        if not items:
            return []
        self._bind_loop()
        self._pool.closing = False
        decision = await self._guard.ask()
        if decision.permit is Permit.DENY:
            return not_sent(items, decision)
        self._guard.blocked_reason = None
        loop = self._loop
        assert loop is not None
        batch = Batch(len(items), loop.create_future())
        jobs = build_jobs(
            batch,
            items,
            config=self.config,
            authority=self._authority,
            topic=self.topic,
            now=int(self._clock.now().timestamp()),
        )
        if decision.permit is Permit.PROBE:
            jobs = await self._guard.probe(jobs, self._pump.enqueue)
        if jobs:
            self._pump.queue.extend(jobs)
            self._pump.run()
        if batch.remaining:
            await batch.future
        return [r for r in batch.results if r is not None]

    def stats(self) -> dict[str, int]:
        """Counters: open connections, connections opened so far, streams sent, queued jobs,
        PINGs answered, streams awaiting an answer, pushes waiting out a backoff."""
        return {
            "connections": len(self._pool.conns),
            "connections_opened": self._pool.opened,
            "pushes_sent": self._pump.sent,
            "queued": len(self._pump.queue),
            "pings_acked": self._pool.pings_acked(),
            "in_flight": self._pool.in_flight(),
            "retrying": len(self._retries),
        }

    def tick(self) -> None:
        """Do now what the clock has made due: re-send pushes whose backoff is over, time out
        unanswered streams, PING idle connections and drop those whose PING went unanswered.

        The client does this by itself on loop timers; after moving a manual clock, call it
        (from the client's event loop) to act at once instead of waiting for them.
        """
        self._pool.upkeep(self._clock.monotonic())
        self._retries.wake()

    async def ping(self) -> None:
        """PING every open connection now."""
        self._pool.ping()

    async def aclose(self) -> None:
        """Close every connection (graceful GOAWAY) and stop upkeep."""
        self._pool.close()
        await asyncio.sleep(0)

    def replace_certificate(self, certificate: PushCertificate) -> None:
        """Use a renewed certificate: new connections present it, open ones drain and close.

        A renewal keeps the topic; a different topic is accepted too (the caller decides).
        """
        self._pool.ssl_context = certificate.ssl_context(self.config.ca_file)
        self.topic = certificate.require_topic()
        self.certificate = certificate
        self._guard.blocked_reason = None
        self.drain_connections()

    def drain_connections(self) -> None:
        """Stop using the open connections (they close once their streams finish)."""
        self._pool.drain()

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter every push waits on (None: unlimited)."""
        return self._pump.rate_limiter

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker asked before every batch."""
        return self._guard.breaker

    @property
    def on_alert(self) -> AlertHook | None:
        """Called (in the loop) when APNs refuses the certificate."""
        return self._guard.on_alert

    @on_alert.setter
    def on_alert(self, hook: AlertHook | None) -> None:
        self._guard.on_alert = hook

    @property
    def alerts(self) -> list[CertificateRejectedError]:
        """Every certificate refusal this client has seen."""
        return self._guard.alerts

    @property
    def connections_opened(self) -> int:
        """Connections opened so far."""
        return self._pool.opened

    @property
    def pushes_sent(self) -> int:
        """Streams started so far (retries included)."""
        return self._pump.sent

    # ---- ConnectionOwner callbacks -------------------------------------------------------------

    def on_ready(self, conn: ApnsConnection) -> None:
        """See ``ConnectionOwner``."""

    def on_answer(self, job: Job, status: int, body: bytes) -> None:
        """See ``ConnectionOwner``."""
        if status == 200:
            finish(job, Outcome.SUCCESS, 200, None)
            return
        reason = f"HTTP {status}"
        ts: int | None = None
        if body:
            try:
                doc = json.loads(body)
                reason = str(doc.get("reason") or reason)
                raw_ts = doc.get("timestamp")
                ts = int(raw_ts) if raw_ts is not None else None
            except (ValueError, AttributeError, TypeError):
                pass
        outcome = classify(status, reason)
        if outcome is Outcome.TRANSIENT:
            self._retries.retry(job, status, reason)
        elif outcome is Outcome.CERTIFICATE:
            finish(job, outcome, status, reason)
            self._certificate_failure(reason)
        else:
            finish(job, outcome, status, reason, ts)

    def on_lost(self, job: Job, reason: str, processed: bool) -> None:
        """See ``ConnectionOwner``."""
        if job.done:
            return
        if not processed:
            job.attempts -= 1  # the server never saw it: send again, no attempt used
            blocked = self._guard.blocked_reason
            if blocked is not None:
                finish(job, Outcome.CIRCUIT_OPEN, None, blocked)
            else:
                self._pump.queue.appendleft(job)
            return
        self._retries.retry(job, None, reason)

    def on_goaway(self, conn: ApnsConnection, reason: str) -> None:
        """See ``ConnectionOwner``."""
        log.info("apns GOAWAY (%s); %d streams to finish", reason, conn.in_flight)
        if reason.startswith(_CERT_REASONS_IN_GOAWAY):
            self._certificate_failure(reason)

    def on_closed(self, conn: ApnsConnection, exc: BaseException | None) -> None:
        """See ``ConnectionOwner``."""
        self._pool.closed(conn, exc)

    def after_events(self) -> None:
        """See ``ConnectionOwner``."""
        if self._pump.queue:
            self._pump.run()

    # ---- routing between the pieces ------------------------------------------------------------

    def _on_open(self) -> None:
        self._pump.run()

    def _on_stranded(self, exc: BaseException) -> None:
        self._pump.back_off_all(f"ConnectError: {exc!r}")

    def _requeue(self, jobs: list[Job]) -> None:
        self._pump.enqueue(jobs)

    def _certificate_failure(self, reason: str) -> None:
        if self._guard.refused(reason):
            self._pump.fail_all(reason)
            self._pool.drain()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            # Transports belong to their loop: a new loop means new connections.
            self._pool.abandon()
            self._pump.queue.clear()
            self._retries.clear()
        self._loop = loop
        self._pool.closing = False
