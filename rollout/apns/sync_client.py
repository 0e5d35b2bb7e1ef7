"""``PushClient``: the push client for synchronous callers (Celery tasks, scripts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rollout.apns.certificate_guard import AlertHook
from rollout.apns.certs import PushCertificate
from rollout.apns.client import AsyncPushClient
from rollout.apns.config import PushConfig
from rollout.apns.coordination import CircuitBreaker, RateLimiter
from rollout.apns.models import PushRequest, PushResult
from rollout.apns.reload import CertificateFile
from rollout.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("rollout.apns")

ResultsHook = Callable[[Sequence[PushResult]], None]
"""Called with every batch's results in the calling thread (a worker's metrics)."""


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
    (``shared()``), created lazily inside the worker. ``on_results`` sees every batch's
    results once they are all in (a failing hook is logged, never raised). With
    ``certificate_file``, the file is looked at before each batch (see ``CertificateFile``): a
    renewal with the same topic is presented by the connections opened from then on.
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
        clock: Clock = SYSTEM_CLOCK,
        on_results: ResultsHook | None = None,
        certificate_file: CertificateFile | None = None,
    ) -> None:
        self.certificate = certificate
        self.certificate_file = certificate_file
        self.config = config or PushConfig()
        self.on_results = on_results
        self._kw: dict[str, Any] = {
            "rate_limiter": rate_limiter,
            "breaker": breaker,
            "on_alert": on_alert,
            "clock": clock,
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
        renewed = self.certificate_file.poll() if self.certificate_file is not None else None
        if renewed is not None:
            self.certificate = renewed  # a forked child's fresh client starts with it too

        async def push() -> list[PushResult]:
            if renewed is not None:
                client.replace_certificate(renewed)
            return await client.push_many(items)

        fut = asyncio.run_coroutine_threadsafe(push(), loop)
        results = fut.result(timeout)
        if self.on_results is not None:
            try:
                self.on_results(results)
            except Exception:  # what watches pushing must never break it
                log.exception("apns results hook failed")
        return results

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
