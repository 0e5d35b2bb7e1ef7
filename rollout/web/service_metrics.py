"""What ``/metrics`` reports beside the ledger: MDM request latency, the Celery queues' depth
and the push certificate's expiry.

* ``rollout_checkin_seconds{endpoint}``: a histogram of the time from an MDM request's headers
  to its answer (``checkin``: Authenticate, TokenUpdate, CheckOut and other check-ins;
  ``connect``: command reports, group commit included; ``other``: refused before either).
* ``rollout_queue_depth{queue}``: messages waiting in each Celery queue, read from the broker
  at each scrape when it is Redis (``LLEN`` of each queue's lists, one pipelined round trip
  with a short time-out). The web app reads it, not the workers: it has the settings, and it is
  one series per queue, not one per worker process. Other brokers export no samples (use
  RabbitMQ's own exporter); a Redis that cannot be read leaves the family empty for that
  scrape (logged).
* ``rollout_push_certificate_expiry_timestamp_seconds``: when ``ROLLOUT_APNS_CERT`` expires
  (Unix time), read again only when the file changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollout.apns import CertificateError, load_push_certificate
from rollout.config import Settings
from rollout.queues import QUEUES

log = logging.getLogger(__name__)

CHECKIN_ENDPOINTS = ("checkin", "connect", "other")
CHECKIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# kombu's Redis transport keeps a queue's messages in one list per priority step: the queue's
# name for priority 0 (every message this product sends), "<name>\x06\x16<n>" for the others.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_REDIS_TIMEOUT_S = 0.5
_WARN_EVERY_S = 300.0


def checkin_histogram() -> Histogram:
    """A fresh (unregistered) ``rollout_checkin_seconds`` for one app."""
    return Histogram(
        "rollout_checkin_seconds",
        "Time from an MDM request's headers to its answer, by endpoint (checkin, connect, "
        "other: refused before either).",
        ["endpoint"],
        buckets=CHECKIN_BUCKETS,
        registry=None,
    )


def redis_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages."""
    return [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]


class QueueDepthCollector(Collector):
    """``rollout_queue_depth{queue}`` read from a Redis broker at scrape time."""

    def __init__(self, broker_url: str, queues: Sequence[str] = QUEUES) -> None:
        import redis

        self.queues = tuple(queues)
        self._redis = redis.Redis.from_url(
            broker_url,
            socket_timeout=_REDIS_TIMEOUT_S,
            socket_connect_timeout=_REDIS_TIMEOUT_S,
        )
        self._error = redis.RedisError
        self._warned_at = -_WARN_EVERY_S

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "rollout_queue_depth",
            "Messages waiting in a Celery queue (Redis broker, read at scrape).",
            labels=["queue"],
        )
        try:
            pipe = self._redis.pipeline(transaction=False)
            for queue in self.queues:
                for key in redis_keys(queue):
                    pipe.llen(key)
            lengths = pipe.execute()
        except (self._error, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning("metrics: cannot read the queues' depth from Redis: %s", exc)
        else:
            per = len(_PRIORITY_STEPS) + 1
            for i, queue in enumerate(self.queues):
                family.add_metric([queue], sum(int(n) for n in lengths[i * per : (i + 1) * per]))
        yield family


class PushCertificateCollector(Collector):
    """``rollout_push_certificate_expiry_timestamp_seconds`` from the configured certificate,
    loaded again only when its file changes (size or modification time)."""

    def __init__(self, path: str, password: str = "", key_path: str = "") -> None:
        self.path = path
        self.password = password or None
        self.key_path = key_path or None
        self._lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None
        self._expiry: float | None = None

    def expiry(self) -> float | None:
        """The certificate's expiry (Unix time), or None when it cannot be read."""
        try:
            stats = [os.stat(p) for p in (self.path, self.key_path) if p]
        except OSError as exc:
            self._forget(f"cannot read {self.path}: {exc.strerror or exc}")
            return None
        seen = tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)
        with self._lock:
            if seen == self._seen:
                return self._expiry
            try:
                cert = load_push_certificate(
                    self.path, password=self.password, key_path=self.key_path
                )
            except (CertificateError, OSError, ValueError) as exc:
                log.warning("metrics: cannot read the push certificate: %s", exc)
                self._seen, self._expiry = seen, None
                return None
            self._seen, self._expiry = seen, cert.not_after.timestamp()
            return self._expiry

    def _forget(self, why: str) -> None:
        with self._lock:
            if self._seen != ("missing",):
                log.warning("metrics: %s", why)
            self._seen, self._expiry = ("missing",), None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "rollout_push_certificate_expiry_timestamp_seconds",
            "When the MDM push certificate (ROLLOUT_APNS_CERT) expires, Unix time.",
        )
        expiry = self.expiry()
        if expiry is not None:
            family.add_metric([], expiry)
        yield family


def service_collectors(settings: Settings) -> list[Collector]:
    """The collectors the settings call for: the queues' depth when the broker is Redis, the
    push certificate's expiry when one is configured."""
    collectors: list[Collector] = []
    if settings.broker_url.startswith(("redis://", "rediss://")):
        collectors.append(QueueDepthCollector(settings.broker_url))
    if settings.apns_cert:
        collectors.append(
            PushCertificateCollector(settings.apns_cert, settings.apns_password, settings.apns_key)
        )
    return collectors
