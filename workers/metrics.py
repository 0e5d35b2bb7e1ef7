"""The workers' own Prometheus metrics, served over HTTP by each pool process.

What a worker does is counted in the process that does it: pushes by APNs outcome, the
latency of each push, fan-out batches, and when each periodic task last succeeded. Each pool
process (prefork) serves its figures on ``ROLLOUT_WORKER_METRICS_PORT`` + its index in the pool
(billiard gives a replacement child the index of the one it replaces, so the ports stay put);
a solo or threads pool serves them from the main process on the base port. Prometheus scrapes
every port and sums over them (``sum by (outcome) (rate(rollout_pushes_total[5m]))``); a
restarted process starts its counters from zero, which ``rate`` handles.

Why a port per process and not prometheus_client's multiprocess mode: no shared folder to
clean, nothing that must be set before the library is first imported, and each process's
figures can be read (and tested) on their own. The queue depth is not here: the web app reads
it from the broker at its own scrape (``rollout.web.service_metrics``), once, not once per
worker process.

Names follow Prometheus' rules (``rollout_`` prefix, ``_total`` counters, ``_seconds``
times); no label names a device. Counting is per batch: one increment per outcome a batch saw,
one histogram observation per push.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from rollout.apns import (
    ConnectionLostError,
    Outcome,
    PushResult,
    ServerError,
    ThrottledError,
)
from rollout.config import get_settings

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's worker metrics (what the HTTP port serves)."""

OUTCOMES = (
    "accepted",
    "bad_token",
    "rejected",
    "throttled",
    "server_error",
    "connection_error",
    "certificate_rejected",
    "circuit_open",
)
"""Every value of ``rollout_pushes_total{outcome}`` (all exported from the start, at 0)."""

PERIODIC_TASKS = ("tick", "sweep", "expiry_scan", "deliver_alerts")
"""The beat-driven tasks whose last success is exported (``task_succeeded``)."""

PUSHES = Counter(
    "rollout_pushes",
    "Pushes by final APNs outcome (after the client's retries): accepted (200), bad_token "
    "(410 Unregistered, BadDeviceToken, DeviceTokenNotForTopic), rejected (other 4xx), "
    "throttled (429), server_error (5xx), connection_error (no answer), "
    "certificate_rejected (403), circuit_open (not sent: the breaker was open).",
    ["outcome"],
    registry=REGISTRY,
)
PUSH_SECONDS = Histogram(
    "rollout_push_seconds",
    "Time from a batch entering the push client to each push's final answer (retries and "
    "rate-limit waits included); pushes never sent are not observed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
PUSH_BATCHES = Counter(
    "rollout_push_batches",
    "Fan-out batches (rollout.push_batch tasks) this process pushed.",
    registry=REGISTRY,
)
TICK_LAST_SUCCESS = Gauge(
    "rollout_tick_last_success_timestamp_seconds",
    "When a periodic task last completed in this process (Unix time): tick, sweep, "
    "expiry_scan, deliver_alerts.",
    ["task"],
    registry=REGISTRY,
)

_BY_OUTCOME = {name: PUSHES.labels(name) for name in OUTCOMES}
_FINAL = {
    Outcome.SUCCESS: "accepted",
    Outcome.DEAD_TOKEN: "bad_token",
    Outcome.PERMANENT: "rejected",
    Outcome.CERTIFICATE: "certificate_rejected",
    Outcome.CIRCUIT_OPEN: "circuit_open",
}


def outcome_label(result: PushResult) -> str:
    """The ``outcome`` label of one push result, from what the push client reports."""
    label = _FINAL.get(result.outcome)
    if label is not None:
        return label
    # transient, attempts used up: the client's error says which kind
    error = result.error
    if isinstance(error, ThrottledError):
        return "throttled"
    if isinstance(error, ServerError):
        return "server_error"
    if isinstance(error, ConnectionLostError):
        return "connection_error"
    return "server_error" if (result.status or 0) >= 500 else "connection_error"


def record_pushes(results: Sequence[PushResult]) -> None:
    """Count one batch's results (the push client's ``on_results`` hook)."""
    tally: Tally[str] = Tally()
    observe = PUSH_SECONDS.observe
    for result in results:
        tally[outcome_label(result)] += 1
        if result.attempts and result.seconds is not None:
            observe(result.seconds)
    for label, n in tally.items():
        _BY_OUTCOME[label].inc(n)


def batch_pushed() -> None:
    """One fan-out batch done."""
    PUSH_BATCHES.inc()


def task_succeeded(task: str) -> None:
    """A periodic task completed now. (A task's series appears with its first success, never
    at 0: a process that runs no ticks must not look like one whose ticks stopped.)"""
    TICK_LAST_SUCCESS.labels(task).set(time.time())


_served: list[Any] = []


def serve(port: int, addr: str = "0.0.0.0") -> int | None:
    """Serve ``REGISTRY`` on ``addr:port`` from a daemon thread (once per process); return the
    port, or None when it cannot be bound (logged: the worker works on without metrics)."""
    if _served:
        return int(_served[0].server_port)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as exc:
        log.warning("worker metrics: cannot listen on %s:%d (%s); not served", addr, port, exc)
        return None
    _served.append(server)
    return int(server.server_port)


def _pool_index() -> int:
    """This pool process's index (0 outside a billiard pool)."""
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0)
    return int(index) if isinstance(index, int) else 0


@signals.worker_process_init.connect
def _serve_from_pool_process(**_: Any) -> None:
    """A prefork child: serve on the base port + its index."""
    settings = get_settings()
    if settings.worker_metrics_port:
        port = settings.worker_metrics_port + _pool_index()
        if port <= 65535:
            serve(port, settings.worker_metrics_addr)
        else:
            log.warning("worker metrics: port %d is past 65535; not served", port)


@signals.worker_ready.connect
def _serve_from_main_process(sender: Any = None, **_: Any) -> None:
    """A pool without child processes (solo, threads): the main process serves, on the base
    port. A prefork pool's children serve their own (see above)."""
    from celery.concurrency.prefork import TaskPool

    settings = get_settings()
    pool_cls = getattr(getattr(sender, "controller", None), "pool_cls", None)
    if not settings.worker_metrics_port or pool_cls is None:
        return
    if isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool):
        return
    serve(settings.worker_metrics_port, settings.worker_metrics_addr)
