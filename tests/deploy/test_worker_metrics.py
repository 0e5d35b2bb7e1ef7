"""The workers' metrics count for real: pushes through the worker's push client (built from the
settings, as ``workers.tasks`` builds it) against the APNs stand-in move the outcome counters
and the latency histogram; each process serves them over HTTP; and a real Celery worker's pool
process serves its own on the configured port, with the tick and batch figures its tasks set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollout.apns import PushRequest
from rollout.config import Settings
from rollout.ledger.db import upgrade
from rollout.pushing import push_client_from_settings
from rollout.sim.apns_server import ApnsStandIn
from workers import metrics
from workers.app import make_app

REPO = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    got = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_pushes_are_counted_by_outcome_and_served(
    standin: ApnsStandIn, push_cert_file: Path, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path,
        broker_url="filesystem://",
        apns_cert=str(push_cert_file),
        apns_url=standin.base_url,
        apns_ca=standin.ca_file,
    )
    client = push_client_from_settings(settings, metrics.record_pushes)
    outcomes = ("accepted", "bad_token", "rejected")
    before = {o: value("rollout_pushes_total", outcome=o) for o in outcomes}
    observed = value("rollout_push_seconds_count")
    try:
        good, gone = "ab" * 32, "cd" * 32
        standin.unregister(gone)  # 410 Unregistered
        results = client.push_many([PushRequest(good, "magic"), PushRequest(gone, "magic")])
        assert [r.status for r in results] == [200, 410]
        standin.fail_next(400, "BadExpirationDate")  # a permanent refusal
        assert client.push(PushRequest(good, "magic")).status == 400
    finally:
        client.close()
    moved = {o: value("rollout_pushes_total", outcome=o) - before[o] for o in outcomes}
    assert moved == {"accepted": 1, "bad_token": 1, "rejected": 1}
    assert value("rollout_push_seconds_count") - observed == 3
    assert all(r.seconds is not None and 0 < r.seconds < 10 for r in results)

    port = metrics.serve(0, "127.0.0.1")  # this process's exposition, as a worker's
    assert port is not None
    served = scrape(f"http://127.0.0.1:{port}/metrics")
    for o in outcomes:
        assert served[("rollout_pushes_total", (("outcome", o),))] == value(
            "rollout_pushes_total", outcome=o
        )
    assert served[("rollout_pushes_total", (("outcome", "throttled"),))] >= 0  # all exported


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.celery
def test_a_celery_pool_process_serves_its_metrics_on_its_port(
    standin: ApnsStandIn, push_cert_file: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, broker_url="filesystem://")
    upgrade(settings.resolved_database_url())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(home),
        ROLLOUT_BROKER_URL="filesystem://",
        ROLLOUT_APNS_CERT=str(push_cert_file),
        ROLLOUT_APNS_URL=standin.base_url,
        ROLLOUT_APNS_CA=standin.ca_file,
        ROLLOUT_WORKER_METRICS_PORT=str(port),  # one pool process: index 0, this port
        ROLLOUT_WORKER_METRICS_ADDR="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
             "control,fanout", "-c", "1", "-P", "prefork", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        app = make_app(settings)
        app.send_task("rollout.tick", queue="control")
        app.send_task("rollout.push_batch", (1, [424242]), queue="fanout")  # nothing to push
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            try:
                got = scrape(url)
            except httpx.HTTPError:
                got = {}
            tick = got.get(("rollout_tick_last_success_timestamp_seconds", (("task", "tick"),)))
            if tick and got.get(("rollout_push_batches_total", ())) == 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the worker's metrics never showed its tasks: {got}\n{log.read_text()}")
        assert abs(tick - time.time()) < 60
        assert got[("rollout_pushes_total", (("outcome", "accepted"),))] == 0
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool: nothing left to finish
        worker.wait()
