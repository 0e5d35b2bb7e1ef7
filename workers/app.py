"""The Celery app: broker, queues, routing, reliability settings and the beat schedule.

Queues: ``control`` carries the controller tick, the time-out sweep and the expiry scan;
``fanout`` carries the push batches. Tasks are acknowledged after they run (``acks_late``) and
given back to the broker when their worker dies (``reject_on_worker_lost``); a worker takes one
message at a time (prefetch 1) because a fan-out task is long. There is no result backend: the
ledger holds every result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from rollout.config import EMBEDDED_BROKER_URL, Settings, SettingsError, get_settings
from rollout.queues import CONTROL_QUEUE, FANOUT_QUEUE


def embedded_broker(home: Path) -> tuple[str, dict[str, Any]]:
    """The broker the embedded default uses: kombu's filesystem transport under ``home``."""
    folder = (home / "broker").resolve()
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
    return "filesystem://", options


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (the environment by default)."""
    settings = settings or get_settings()
    transport: str | None = None
    if settings.broker_url.startswith(EMBEDDED_BROKER_URL):
        broker, options = embedded_broker(settings.home)
        transport = "workers.fstransport:Transport"
    else:
        broker, options = settings.broker_url, dict[str, Any]()
    app = Celery("rollout", broker=broker, include=["workers.tasks"])
    app.conf.update(
        broker_transport=transport,
        broker_transport_options={**options, "visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_backend=None,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=FANOUT_QUEUE,
        task_queues=[Queue(CONTROL_QUEUE), Queue(FANOUT_QUEUE)],
        task_routes={
            "rollout.tick": {"queue": CONTROL_QUEUE},
            "rollout.sweep": {"queue": CONTROL_QUEUE},
            "rollout.expiry_scan": {"queue": CONTROL_QUEUE},
            "rollout.deliver_alerts": {"queue": CONTROL_QUEUE},
            # minutes long: never on the control worker, whose ticks must not wait
            "rollout.prune": {"queue": FANOUT_QUEUE},
            "rollout.push_batch": {"queue": FANOUT_QUEUE},
            "rollout.delivery_sweep": {"queue": CONTROL_QUEUE},
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # Beat sends only while it holds the ledger's beat lock: a second one stands by.
        beat_scheduler="workers.beat:SingleBeat",
        beat_schedule={
            "controller-tick": {"task": "rollout.tick", "schedule": settings.tick_interval_s},
            "timeout-sweep": {"task": "rollout.sweep", "schedule": settings.sweep_interval_s},
            "expiry-scan": {
                "task": "rollout.expiry_scan",
                "schedule": settings.renewal_scan_interval_s,
            },
            "alert-delivery": {"task": "rollout.deliver_alerts", "schedule": 60.0},
            **_prune_schedule(settings),
        },
    )
    if settings.delivery != "builtin":
        app.conf.beat_schedule["delivery-sweep"] = {
            "task": "rollout.delivery_sweep",
            "schedule": settings.sweep_interval_s,
        }
    return app


def _prune_schedule(settings: Settings) -> dict[str, Any]:
    """The daily prune at the quiet hour (UTC), unless turned off."""
    if not settings.retention_prune:
        return {}
    # a few minutes past the hour, away from whatever else starts on the hour
    when = crontab(hour=settings.retention_hour, minute=17)
    return {"ledger-prune": {"task": "rollout.prune", "schedule": when}}


try:
    app = make_app()
except SettingsError as _exc:  # a bad setting stops the worker with one line, no traceback
    sys.stderr.write(f"error: {_exc}\n")
    raise SystemExit(2) from None
