"""The fan-out bench's Celery workers: real ``celery worker`` processes, started, awaited and
stopped by the bench."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rollout.bench.fanout.endpoint import Endpoint
from rollout.bench.processes import stop_processes

WORKERS = 2


def worker_env(
    database_url: str, broker_url: str, ep: Endpoint, home: Path, ledger_keys: str
) -> dict[str, str]:
    """The workers' environment: this one's, with the bench's own ``ROLLOUT_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        {
            "ROLLOUT_HOME": str(home),
            "ROLLOUT_DATABASE_URL": database_url,
            "ROLLOUT_BROKER_URL": broker_url,
            "ROLLOUT_APNS_CERT": ep.cert_file,
            "ROLLOUT_APNS_URL": ep.base_url,
            "ROLLOUT_APNS_CA": ep.ca_file,
            "ROLLOUT_LEDGER_KEYS": ledger_keys,
            # Nothing is re-pushed or timed out while the bench runs: it measures the first wave.
            "ROLLOUT_DISPATCH_GRACE_S": "3600",
            "ROLLOUT_RESPONSE_TIMEOUT_S": "3600",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key in ("ROLLOUT_BATCH_SIZE",):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def start_workers(
    env: dict[str, str], home: Path, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    """:data:`WORKERS` ``celery worker`` processes (prefork) on the control and fan-out queues,
    each logging to ``home/workerN.log``."""
    procs = []
    for i in range(WORKERS):
        log = open(home / f"worker{i + 1}.log", "ab")  # noqa: SIM115 - lives with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.app",
                    "worker",
                    "-n",
                    f"bench{i + 1}@%h",
                    "-Q",
                    "control,fanout",
                    "-c",
                    str(concurrency),
                    "-P",
                    "prefork",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "-l",
                    "WARNING",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers and their pool children (SIGTERM, SIGKILL after 15 s)."""
    stop_processes(procs, grace=15, group=True)


def wait_ready(app: Any, procs: list[subprocess.Popen[bytes]], home: Path) -> None:
    """Return once every worker answers a ping; RuntimeError when one exits or 60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a Celery worker exited with {proc.returncode}; see {home}")
        replies = app.control.ping(timeout=0.5)
        if len(replies) >= len(procs):
            return
    raise RuntimeError(f"Celery workers did not answer a ping within 60 s; see {home}")
