"""Thin Celery tasks: each calls a function in ``rollout`` that tests can call without Celery."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from celery import Task
from sqlalchemy.exc import DBAPIError, OperationalError

from rollout import controller, inventory_sweep, renewal_setup, retention
from rollout.apns import PushClient
from rollout.clock import SYSTEM_CLOCK
from rollout.config import get_settings
from rollout.delivery import BESIDE, MDMServer, server_from_settings
from rollout.delivery.handover import hand_over_batch
from rollout.delivery.sweep import sweep as delivery_sweep_once
from rollout.ledger import Ledger
from rollout.niced import run_niced
from rollout.pushing import push_client_from_settings
from rollout.renewal_setup import run_scan
from workers import metrics
from workers.app import FANOUT_QUEUE, app

log = logging.getLogger(__name__)

_lock = threading.Lock()
_resources: dict[str, Any] = {}


def _per_process(name: str, build: Any) -> Any:
    """One engine / push client per worker process, made after fork, never shared across it."""
    key = f"{name}:{os.getpid()}"
    with _lock:
        if key not in _resources:
            _resources[key] = build()
        return _resources[key]


def ledger() -> Ledger:
    """This process's ledger (its connection pool lives as long as the process)."""
    opened: Ledger = _per_process(
        "ledger",
        lambda: Ledger.open(get_settings().resolved_database_url(), get_settings().sealer()),
    )
    return opened


def push_client() -> PushClient:
    """This process's push client (its connections live as long as the process)."""
    client: PushClient = _per_process(
        "push", lambda: push_client_from_settings(get_settings(), metrics.record_pushes)
    )
    return client


def mdm_server() -> MDMServer:
    """This process's client of the MDM server it works beside (delivery ``nanomdm`` or
    ``micromdm``)."""
    client: MDMServer = _per_process("mdm_server", lambda: server_from_settings(get_settings()))
    return client


def _completed(task: str) -> None:
    """A periodic task completed now: its metric, and its heartbeat in the ledger (which
    ``rollout check`` reads from any host); a heartbeat that cannot be written is logged, never
    a reason to run the task again."""
    metrics.task_succeeded(task)
    try:
        with ledger().heartbeats() as store:
            store.beat(task, SYSTEM_CLOCK.now())
    except DBAPIError as exc:
        log.warning("cannot record the %s heartbeat: %s", task, exc)


class CeleryDispatcher:
    """Sends fan-out batches as ``rollout.push_batch`` tasks over one producer connection."""

    def push_batches(self, batches: Sequence[tuple[int, Sequence[int]]]) -> None:
        """One task per batch, sent in a burst."""
        with app.producer_or_acquire() as producer:
            for rollout_id, ids in batches:
                push_batch.apply_async(
                    (rollout_id, list(ids)), queue=FANOUT_QUEUE, producer=producer
                )


RETRYABLE = (OperationalError, DBAPIError, ConnectionError, TimeoutError)


@app.task(name="rollout.tick", bind=True, autoretry_for=RETRYABLE, retry_backoff=True,
          max_retries=5)  # fmt: skip
def tick(self: Task) -> dict[str, Any]:
    """Advance every running rollout by one tick."""
    report = controller.tick(
        ledger(), CeleryDispatcher(), get_settings().engine_policy(), SYSTEM_CLOCK.now()
    )
    _completed("tick")
    return report.__dict__


@app.task(name="rollout.sweep", bind=True, autoretry_for=RETRYABLE, retry_backoff=True,
          max_retries=5)  # fmt: skip
def sweep(self: Task) -> dict[str, Any]:
    """Re-push or time out targets whose wait is over, and complete finished rollouts."""
    report = controller.sweep(
        ledger(), CeleryDispatcher(), get_settings().engine_policy(), SYSTEM_CLOCK.now()
    )
    _completed("sweep")
    return report.__dict__


@app.task(name="rollout.push_batch", bind=True, autoretry_for=RETRYABLE, retry_backoff=2,
          retry_backoff_max=60, max_retries=20)  # fmt: skip
def push_batch(self: Task, rollout_id: int, target_ids: list[int]) -> dict[str, int]:
    """Push one batch of targets and record every result (beside NanoMDM or MicroMDM: its
    commands handed over, its devices woken)."""
    settings = get_settings()
    if settings.delivery in BESIDE:
        pusher = push_client() if settings.nanomdm_push == "rollout" else None
        out = hand_over_batch(
            ledger(),
            mdm_server(),
            rollout_id,
            target_ids,
            settings.engine_policy(),
            SYSTEM_CLOCK,
            pusher=pusher,
        )
    else:
        out = controller.push_batch(
            ledger(),
            push_client(),
            rollout_id,
            target_ids,
            settings.engine_policy(),
            SYSTEM_CLOCK,
        )
    metrics.batch_pushed()
    return out


@app.task(name="rollout.delivery_sweep", bind=True, autoretry_for=RETRYABLE,
          retry_backoff=True, max_retries=3)  # fmt: skip
def delivery_sweep(self: Task) -> dict[str, int]:
    """Beside NanoMDM or MicroMDM: recover answers whose webhook was lost and clear aborted
    rollouts' commands from its queue (nothing to do with the built-in delivery)."""
    settings = get_settings()
    if settings.delivery not in BESIDE:
        return {}
    out = delivery_sweep_once(
        ledger(),
        mdm_server(),
        SYSTEM_CLOCK.now(),
        dt.timedelta(seconds=settings.delivery_sweep_after_s),
        push=settings.nanomdm_push != "rollout",
    )
    _completed("delivery_sweep")
    return out


@app.task(name="rollout.expiry_scan", bind=True, autoretry_for=RETRYABLE, retry_backoff=True,
          max_retries=3)  # fmt: skip
def expiry_scan(self: Task) -> dict[str, Any]:
    """The renewal scan: open renewal rollouts for expiring held profiles, alert otherwise;
    open the inventory sweep when one is due; then send the alerts raised."""
    settings = get_settings()
    out = run_scan(ledger(), settings, SYSTEM_CLOCK).as_dict()
    out["inventory"] = inventory_sweep.sweep_if_due(
        ledger(), SYSTEM_CLOCK.now(), settings.sweep_every(), server_wakes=settings.server_wakes
    )
    deliver_alerts.delay()
    _completed("expiry_scan")
    return out


@app.task(name="rollout.deliver_alerts", bind=True, autoretry_for=RETRYABLE,
          retry_backoff=True, max_retries=3)  # fmt: skip
def deliver_alerts(self: Task) -> dict[str, int]:
    """Send the alert notifications that are due (webhook, mail), with back-off."""
    out = renewal_setup.deliver_alerts(ledger(), get_settings(), SYSTEM_CLOCK)
    _completed("deliver_alerts")
    return out


@app.task(name="rollout.prune", bind=True, autoretry_for=RETRYABLE, retry_backoff=True,
          max_retries=3)  # fmt: skip
def prune(self: Task) -> dict[str, Any]:
    """Archive what the retention policy says is due, then delete it in small batches, for at
    most ``ROLLOUT_RETENTION_MAX_MINUTES`` (the next run goes on from there)."""
    settings = get_settings()
    report = run_niced(  # at a lower CPU priority than the fan-out beside it
        lambda: retention.prune(
            ledger(), settings.archive_folder(), settings.retention_policy(), SYSTEM_CLOCK.now()
        )
    )
    _completed("prune")
    return report.as_json()
