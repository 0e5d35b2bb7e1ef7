"""The daily prune as beat sends it: ``rollout.prune`` run by a real Celery worker process."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rollout import archive
from rollout.bench.ledger import seed_finished_rollout
from rollout.clock import SYSTEM_CLOCK
from rollout.config import Settings
from rollout.ledger import Ledger, db
from workers.app import make_app


def test_a_worker_runs_the_prune_task_and_leaves_its_heartbeat(
    postgres_url: str, tmp_path: Path
) -> None:
    db.upgrade(postgres_url)
    ledger = Ledger.open(postgres_url)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(home),
        ROLLOUT_DATABASE_URL=postgres_url,
        ROLLOUT_BROKER_URL="filesystem://",  # the embedded broker, under this test's home
        ROLLOUT_RETENTION_TARGETS_DAYS="30",
        # the recent rollout shares the old one's partition block: do not wait for it
        ROLLOUT_RETENTION_PARTITION_WAIT_DAYS="0",
        PYTHONUNBUFFERED="1",
    )
    worker = None
    log = (tmp_path / "worker.log").open("wb")
    try:
        old = seed_finished_rollout(ledger, 500, SYSTEM_CLOCK.now() - dt.timedelta(days=31))
        recent = seed_finished_rollout(
            ledger, 200, SYSTEM_CLOCK.now() - dt.timedelta(days=29), first=1001
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "fanout",
             "-P", "solo", "--without-mingle", "--without-gossip", "-l", "WARNING"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        app = make_app(Settings(home=home, broker_url="filesystem://"))
        app.send_task("rollout.prune")  # routed as beat sends it
        deadline = time.monotonic() + 120
        beats: dict[str, dt.datetime] = {}
        while time.monotonic() < deadline and "prune" not in beats:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
            with ledger.heartbeats() as store:
                beats = store.heartbeats()
        assert "prune" in beats, (tmp_path / "worker.log").read_text()
        with ledger.retention() as store:
            assert store.count_rollout_rows(old) == {"targets": 0, "commands": 0, "events": 0}
            assert store.count_rollout_rows(recent)["targets"] == 200
            [done] = store.archives()
        assert done.rollout_id == old and done.state == "pruned"
        archive.verify(home / "archive" / f"{done.name}{archive.SUFFIX}", done.sha256)
    finally:
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        ledger.dispose()
