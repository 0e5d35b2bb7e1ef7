"""The push client: ``AsyncPushClient`` (asyncio) and ``PushClient`` (sync, for Celery tasks).

Flow of one batch: ask the shared circuit breaker; turn every item into a ``Job`` with its
headers pre-encoded; put the jobs on one queue; the pump hands them to the first connection with
free streams (opening another connection, up to ``max_connections``, only when every open one is
full) within the shared rate limit; each answer is classified (``errors.classify``): final
outcomes fill the result slot, transient ones are re-queued after a jittered exponential backoff
until ``max_attempts``. Streams a GOAWAY says the server never processed are re-sent without
counting an attempt, so no result is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from rollout.apns.certs import PushCertificate
from rollout.apns.config import PushConfig
from rollout.apns.connection import (
    ApnsConnection,
    ClosedBeforeSettings,
    Job,
    is_handshake_rejection,
)
from rollout.apns.coordination import (
    BreakerDecision,
    CircuitBreaker,
    InProcessCircuitBreaker,
    InProcessRateLimiter,
    Permit,
    RateLimiter,
)
from rollout.apns.errors import (
    CertificateRejectedError,
    CircuitOpenError,
    Outcome,
    classify,
    error_for,
)
from rollout.apns.hpack_codec import PRE_ENCODED, hpack_indexed, hpack_literal
from rollout.apns.models import PushRequest, PushResult

log = logging.getLogger("rollout.apns")

AlertHook = Callable[[CertificateRejectedError], None]

_HEX = frozenset(string.hexdigits)
_CERT_REASONS_IN_GOAWAY = ("BadCertificate", "BadCertificateEnvironment", "Forbidden")


class _Batch:
    __slots__ = ("future", "remaining", "results")

    def __init__(self, size: int, future: asyncio.Future[None]) -> None:
        self.results: list[PushResult | None] = [None] * size
        self.remaining = size
        self.future = future


class AsyncPushClient:
    """APNs MDM push client over a small pool of multiplexed HTTP/2 connections.

    Bound to the event loop it is first used on; connections stay open between calls (idle
    ones get a PING every ``config.ping_interval``). ``on_alert`` is called (in the loop) when
    APNs refuses the certificate; the breaker is opened for every worker sharing it.
    """

    def __init__(
        self,
        certificate: PushCertificate,
        config: PushConfig | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        on_alert: AlertHook | None = None,
    ) -> None:
        self.config = config or PushConfig()
        self.certificate = certificate
        self.topic = certificate.require_topic()
        self._ssl = certificate.ssl_context(self.config.ca_file)
        self.host, self.port = self.config.endpoint()
        authority = self.host if self.port == 443 else f"{self.host}:{self.port}"
        self._authority = authority.encode()
        if rate_limiter is None and self.config.rate_limit is not None:
            rate_limiter = InProcessRateLimiter(self.config.rate_limit, self.config.burst())
        self.rate_limiter = rate_limiter
        self.breaker: CircuitBreaker = breaker or InProcessCircuitBreaker(
            self.config.breaker_cooldown
        )
        self.on_alert = on_alert
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: list[ApnsConnection] = []
        self._connecting = 0
        self._queue: deque[Job] = deque()
        self._tokens = 0
        self._acquiring = False
        self._blocked_reason: str | None = None
        self._housekeeper: asyncio.TimerHandle | None = None
        self._closing = False
        self.connections_opened = 0
        self.pings_acked = 0
        self._early_closes = 0
        self._breaker_writes: set[asyncio.Task[None]] = set()
        self.pushes_sent = 0
        self.alerts: list[CertificateRejectedError] = []

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
        self._closing = False
        decision = await self._check_breaker()
        if decision.permit is Permit.DENY:
            return [self._not_sent(item, decision) for item in items]
        self._blocked_reason = None
        loop = self._loop
        assert loop is not None
        batch = _Batch(len(items), loop.create_future())
        jobs = self._make_jobs(batch, items)
        if decision.permit is Permit.PROBE:
            jobs = await self._probe(batch, jobs)
        if jobs:
            self._queue.extend(jobs)
            self._pump()
        if batch.remaining:
            await batch.future
        return [r for r in batch.results if r is not None]

    def stats(self) -> dict[str, int]:
        """Counters: open connections, connections opened so far, streams sent, queued jobs,
        PINGs answered."""
        return {
            "connections": len(self._conns),
            "connections_opened": self.connections_opened,
            "pushes_sent": self.pushes_sent,
            "queued": len(self._queue),
            "pings_acked": self.pings_acked + sum(c.pings_acked for c in self._conns),
        }

    async def ping(self) -> None:
        """PING every open connection now."""
        for conn in self._conns:
            conn.ping()

    async def aclose(self) -> None:
        """Close every connection (graceful GOAWAY) and stop upkeep."""
        self._closing = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            self._housekeeper = None
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        await asyncio.sleep(0)

    def replace_certificate(self, certificate: PushCertificate) -> None:
        """Use a renewed certificate: new connections present it, open ones drain and close.

        A renewal keeps the topic; a different topic is accepted too (the caller decides).
        """
        self._ssl = certificate.ssl_context(self.config.ca_file)
        self.topic = certificate.require_topic()
        self.certificate = certificate
        self._blocked_reason = None
        self.drain_connections()

    def drain_connections(self) -> None:
        """Stop using the open connections (they close once their streams finish)."""
        for conn in self._conns:
            conn.draining = True
            if not conn.in_flight:
                conn.close()

    # ---- batch preparation -------------------------------------------------------------------

    def _make_jobs(self, batch: _Batch, items: Sequence[PushRequest]) -> list[Job]:
        """One ``Job`` per valid item, its HPACK header block built here once (see connection)."""
        cfg = self.config
        now = int(time.time())
        if cfg.expiration is None:
            default_exp: bytes | None = None
        elif cfg.expiration == 0:
            default_exp = b"0"
        else:
            default_exp = str(now + cfg.expiration).encode()
        topic = self.topic.encode()
        prio = str(cfg.priority).encode()
        # :method POST (static 3), :scheme https (static 7), :authority (static name 1)
        lead = hpack_indexed(3) + hpack_indexed(7) + hpack_literal(1, self._authority)
        common = hpack_literal(b"apns-push-type", b"mdm")
        shared_tail: dict[tuple[bytes, bytes, bytes | None], bytes] = {}
        jobs: list[Job] = []
        dumps = json.dumps
        for i, item in enumerate(items):
            apns_id = item.apns_id or str(uuid.uuid4())
            token = item.token.lower()
            if not token or not _HEX.issuperset(token):
                self._finish_raw(
                    batch, i, token, apns_id, Outcome.DEAD_TOKEN, None, "BadDeviceToken", None, 0
                )
                continue
            body = dumps({"mdm": item.push_magic}, separators=(",", ":")).encode()
            exp = str(item.expiration).encode() if item.expiration is not None else default_exp
            key = (
                item.topic.encode() if item.topic else topic,
                str(item.priority).encode() if item.priority else prio,
                exp,
            )
            tail = shared_tail.get(key)
            if tail is None:
                tail = (
                    common
                    + hpack_literal(b"apns-topic", key[0])
                    + hpack_literal(b"apns-priority", key[1])
                )
                if exp is not None:
                    tail += hpack_literal(b"apns-expiration", exp)
                shared_tail[key] = tail
            block = b"".join(
                (
                    lead,
                    hpack_literal(4, b"/3/device/" + token.encode()),  # :path (static name 4)
                    hpack_literal(b"apns-id", apns_id.encode()),
                    tail,
                    hpack_literal(28, str(len(body)).encode()),  # content-length (static 28)
                )
            )
            jobs.append(Job(batch, i, token, apns_id, [(PRE_ENCODED, block)], body))
        return jobs

    async def _probe(self, batch: _Batch, jobs: list[Job]) -> list[Job]:
        """Half-open: send one push; its fate decides whether the rest go."""
        if not jobs:
            await self.breaker.release_probe()
            return jobs
        first, rest = jobs[0], jobs[1:]
        probe_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        probe_batch = _Batch(1, probe_future)
        first_batch, first_index = first.batch, first.index
        first.batch, first.index = probe_batch, 0
        self._queue.append(first)
        self._pump()
        await probe_future
        result = probe_batch.results[0]
        assert result is not None
        first_batch.results[first_index] = result
        first_batch.remaining -= 1
        if result.outcome is Outcome.CERTIFICATE:
            for job in rest:
                self._finish(job, Outcome.CIRCUIT_OPEN, None, result.reason or "certificate")
            return []
        if result.status is not None:
            await self.breaker.record_success()
            log.info("apns circuit closed after a successful probe")
            return rest
        await self.breaker.release_probe()
        for job in rest:
            self._finish(job, Outcome.CIRCUIT_OPEN, None, "probe inconclusive")
        return []

    def _not_sent(self, item: PushRequest, decision: BreakerDecision) -> PushResult:
        reason = decision.reason or "circuit open"
        err = CircuitOpenError(reason, decision.retry_after)
        return PushResult(
            item.token,
            item.apns_id or str(uuid.uuid4()),
            Outcome.CIRCUIT_OPEN,
            None,
            reason,
            None,
            0,
            err,
        )

    # ---- results ----------------------------------------------------------------------------

    def _finish_raw(
        self,
        batch: _Batch,
        index: int,
        token: str,
        apns_id: str,
        outcome: Outcome,
        status: int | None,
        reason: str | None,
        ts: int | None,
        attempts: int,
    ) -> None:
        err = error_for(outcome, status, reason or "", ts)
        batch.results[index] = PushResult(
            token, apns_id, outcome, status, reason, ts, attempts, err
        )
        batch.remaining -= 1
        if batch.remaining == 0 and not batch.future.done():
            batch.future.set_result(None)

    def _finish(
        self,
        job: Job,
        outcome: Outcome,
        status: int | None,
        reason: str | None,
        ts: int | None = None,
    ) -> None:
        if job.done:
            return
        job.done = True
        self._finish_raw(
            job.batch, job.index, job.token, job.apns_id, outcome, status, reason, ts, job.attempts
        )

    def _retry(self, job: Job, status: int | None, reason: str) -> None:
        job.last_status, job.last_reason = status, reason
        if job.attempts >= self.config.max_attempts:
            self._finish(job, Outcome.TRANSIENT, status, reason)
            return
        cfg = self.config
        ceiling = min(cfg.backoff_cap, cfg.backoff_base * (2 ** (job.attempts - 1)))
        delay = random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread, never zero
        assert self._loop is not None
        self._loop.call_later(delay, self._requeue, job)

    def _requeue(self, job: Job) -> None:
        if job.done:
            return
        if self._blocked_reason is not None:
            self._finish(job, Outcome.CIRCUIT_OPEN, job.last_status, self._blocked_reason)
            return
        self._queue.append(job)
        self._pump()

    async def _record_failure(self, reason: str) -> None:
        try:
            await self.breaker.record_failure(reason)
        except Exception as exc:  # the local block still holds; other workers will see 403s
            log.error("apns could not open the shared circuit breaker: %r", exc)

    async def _check_breaker(self) -> BreakerDecision:
        if self._breaker_writes:  # a failure seen here must be visible before we ask
            await asyncio.gather(*self._breaker_writes, return_exceptions=True)
        try:
            return await self.breaker.check()
        except Exception as exc:  # breaker store down: fail open, APNs still guards the cert
            log.warning("apns circuit breaker unavailable (%r); pushing anyway", exc)
            return BreakerDecision(Permit.ALLOW)

    def _certificate_failure(self, reason: str) -> None:
        if self._blocked_reason is not None:
            return
        self._blocked_reason = reason
        alert = CertificateRejectedError(reason)
        self.alerts.append(alert)
        log.error("apns certificate rejected: %s; circuit opened", reason)
        assert self._loop is not None
        task = self._loop.create_task(self._record_failure(reason))
        self._breaker_writes.add(task)
        task.add_done_callback(self._breaker_writes.discard)
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:  # an alert hook must never break pushing
                log.exception("apns alert hook failed")
        while self._queue:
            job = self._queue.popleft()
            self._finish(job, Outcome.CIRCUIT_OPEN, None, reason)
        self.drain_connections()

    # ---- ConnectionOwner callbacks -------------------------------------------------------------

    def on_ready(self, conn: ApnsConnection) -> None:
        """See ``ConnectionOwner``."""

    def on_answer(self, job: Job, status: int, body: bytes) -> None:
        """See ``ConnectionOwner``."""
        if status == 200:
            self._finish(job, Outcome.SUCCESS, 200, None)
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
            self._retry(job, status, reason)
        elif outcome is Outcome.CERTIFICATE:
            self._finish(job, outcome, status, reason)
            self._certificate_failure(reason)
        else:
            self._finish(job, outcome, status, reason, ts)

    def on_lost(self, job: Job, reason: str, processed: bool) -> None:
        """See ``ConnectionOwner``."""
        if job.done:
            return
        if not processed:
            job.attempts -= 1  # the server never saw it: send again, no attempt used
            if self._blocked_reason is not None:
                self._finish(job, Outcome.CIRCUIT_OPEN, None, self._blocked_reason)
            else:
                self._queue.appendleft(job)
            return
        self._retry(job, None, reason)

    def on_goaway(self, conn: ApnsConnection, reason: str) -> None:
        """See ``ConnectionOwner``."""
        log.info("apns GOAWAY (%s); %d streams to finish", reason, conn.in_flight)
        if reason.startswith(_CERT_REASONS_IN_GOAWAY):
            self._certificate_failure(reason)

    def on_closed(self, conn: ApnsConnection, exc: BaseException | None) -> None:
        """See ``ConnectionOwner``."""
        if conn in self._conns:
            self._conns.remove(conn)
            self.pings_acked += conn.pings_acked
        if not conn.ready and is_handshake_rejection(exc):
            self._certificate_failure(f"TLS handshake failed: {exc}")

    def after_events(self) -> None:
        """See ``ConnectionOwner``."""
        if self._queue:
            self._pump()

    # ---- the pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        queue = self._queue
        if self._blocked_reason is not None:
            while queue:
                self._finish(queue.popleft(), Outcome.CIRCUIT_OPEN, None, self._blocked_reason)
            return
        now = time.monotonic()
        while queue:
            conn = None
            for candidate in self._conns:
                if candidate.free > 0:
                    conn = candidate
                    break
            if conn is None:
                self._maybe_connect()
                return
            n = min(conn.free, len(queue))
            if self.rate_limiter is not None:
                if self._tokens <= 0:
                    self._start_acquire()
                    return
                n = min(n, self._tokens)
                self._tokens -= n
            jobs = [queue.popleft() for _ in range(n)]
            self.pushes_sent += n
            conn.send_jobs(jobs, now)

    def _start_acquire(self) -> None:
        if self._acquiring or self.rate_limiter is None:
            return
        self._acquiring = True
        assert self._loop is not None
        self._loop.create_task(self._acquire())

    async def _acquire(self) -> None:
        assert self.rate_limiter is not None
        try:
            want = max(1, min(len(self._queue), self.config.burst()))
            self._tokens += await self.rate_limiter.acquire(want)
        except Exception as exc:  # Redis down: do not hang the batch, fail it as transient
            log.warning("apns rate limiter failed: %s", exc)
            await asyncio.sleep(self.config.backoff_base)
            while self._queue:
                job = self._queue.popleft()
                job.attempts += 1
                self._retry(job, None, f"RateLimiterError: {exc}")
        finally:
            self._acquiring = False
        self._pump()

    def _maybe_connect(self) -> None:
        if self._connecting or self._closing:
            return
        if sum(1 for c in self._conns if not c.draining) >= self.config.max_connections:
            return  # draining connections do not count: they are on their way out
        self._connecting += 1
        assert self._loop is not None
        self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn = ApnsConnection(self, self.config.max_streams, self.config.timeout)
        try:
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn,
                        self.host,
                        self.port,
                        ssl=self._ssl,
                        server_hostname=self.host,
                    ),
                    self.config.connect_timeout,
                )
                self._conns.append(conn)
                self.connections_opened += 1
                await asyncio.wait_for(conn.wait_ready(), self.config.connect_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                conn.abort("connect failed")
                self._on_connect_failed(exc)
                return
        finally:
            self._connecting -= 1
        self._early_closes = 0
        self._ensure_housekeeper()
        self._pump()

    def _on_connect_failed(self, exc: BaseException) -> None:
        if is_handshake_rejection(exc):
            self._certificate_failure(f"TLS handshake failed: {exc}")
            return
        if isinstance(exc, ClosedBeforeSettings):
            self._early_closes += 1
            if self._early_closes >= 2:
                self._early_closes = 0
                self._certificate_failure(
                    "TLS handshake failed: server closed every connection before HTTP/2 "
                    "started (client certificate refused?)"
                )
                return
        log.warning("apns connect to %s:%s failed: %r", self.host, self.port, exc)
        if any(c.ready and not c.draining for c in self._conns):
            return  # the other connections carry on with the queue
        # Nothing can carry the queue: each waiting push spends an attempt and backs off.
        while self._queue:
            job = self._queue.popleft()
            job.attempts += 1
            self._retry(job, None, f"ConnectError: {exc!r}")

    # ---- upkeep -------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            # Transports belong to their loop: a new loop means new connections.
            for conn in self._conns:
                if conn.transport is not None:
                    with contextlib.suppress(Exception):
                        conn.transport.abort()
            self._conns.clear()
            self._queue.clear()
            self._connecting = 0
            self._housekeeper = None
        self._loop = loop
        self._closing = False

    def _ensure_housekeeper(self) -> None:
        if self._housekeeper is None and self._loop is not None and not self._closing:
            interval = max(0.05, min(1.0, self.config.timeout / 4))
            self._housekeeper = self._loop.call_later(interval, self._housekeep)

    def _housekeep(self) -> None:
        self._housekeeper = None
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.closed:
                continue
            if conn.streams:
                conn.expire(now)
            if conn.draining and not conn.streams:
                conn.close()
                continue
            if conn.ping_sent_at is not None:
                if now - conn.ping_sent_at > self.config.timeout:
                    conn.abort("PING unanswered")
            elif not conn.streams and now - conn.last_activity > self.config.ping_interval:
                conn.ping()
        if self._conns:
            self._ensure_housekeeper()


class PushClient:
    """Synchronous facade for Celery tasks and scripts.

    Design: the client owns one event loop running in a daemon thread for the life of the
    process, and ``push_many`` submits the batch to it with ``run_coroutine_threadsafe``. Why
    not ``asyncio.run`` per batch: a transport is bound to the loop that created it, so closing
    the loop after each batch would close the TLS connections too, and every Celery task would pay
    a TCP + TLS handshake and a cold HTTP/2 window. With a long-lived loop, every task in a worker
    process reuses the same connections. After ``fork`` (Celery prefork) the thread does not
    exist in the child: the client notices the pid change and starts a fresh loop and fresh
    connections there, never touching the parent's sockets. Use one instance per process
    (``shared()``), created lazily inside the worker.
    """

    _instances: dict[tuple[Any, ...], PushClient] = {}
    _instances_lock = threading.Lock()

    def __init__(
        self,
        certificate: PushCertificate,
        config: PushConfig | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        on_alert: AlertHook | None = None,
    ) -> None:
        self.certificate = certificate
        self.config = config or PushConfig()
        self._kw: dict[str, Any] = {
            "rate_limiter": rate_limiter,
            "breaker": breaker,
            "on_alert": on_alert,
        }
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: AsyncPushClient | None = None

    @classmethod
    def shared(
        cls, certificate: PushCertificate, config: PushConfig | None = None, **kw: Any
    ) -> PushClient:
        """One client per (certificate, config) per process."""
        key = (certificate.cert.fingerprint(_sha256()), config)
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = cls(certificate, config, **kw)
                cls._instances[key] = inst
            return inst

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, AsyncPushClient]:
        with self._lock:
            if self._pid != os.getpid() or self._loop is None or self._client is None:
                self._pid = os.getpid()
                loop = _new_loop()
                thread = threading.Thread(target=loop.run_forever, name="apns-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._client = AsyncPushClient(self.certificate, self.config, **self._kw)
            return self._loop, self._client

    @property
    def async_client(self) -> AsyncPushClient:
        """The client running inside the background loop."""
        return self._ensure()[1]

    def push_many(
        self, items: Sequence[PushRequest], timeout: float | None = None
    ) -> list[PushResult]:
        """Push every item and block until each has a result (see ``AsyncPushClient``)."""
        loop, client = self._ensure()
        fut = asyncio.run_coroutine_threadsafe(client.push_many(items), loop)
        return fut.result(timeout)

    def push(self, item: PushRequest) -> PushResult:
        """Push one notification."""
        return self.push_many([item])[0]

    def stats(self) -> dict[str, int]:
        """See ``AsyncPushClient.stats``."""
        loop, client = self._ensure()

        async def _stats() -> dict[str, int]:
            return client.stats()

        return asyncio.run_coroutine_threadsafe(_stats(), loop).result(5)

    def close(self) -> None:
        """Close the connections and stop the loop thread."""
        with self._lock:
            loop, client, thread = self._loop, self._client, self._thread
            self._loop = self._client = self._thread = None
        if loop is None or client is None or self._pid != os.getpid():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        loop.close()

    def __enter__(self) -> PushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _new_loop() -> asyncio.AbstractEventLoop:
    """The stock asyncio loop: the push connection was measured and tested on it (with uvloop
    installed, a batch handed over from another thread was seen never to complete)."""
    return asyncio.new_event_loop()
