"""The fan-out bench's run: the services, the fleet, the endpoint, the workers and the
responder set up, then the fan-out driven and timed, and the figures."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from rollout.bench.fanout.celery_workers import (
    WORKERS,
    start_workers,
    stop_workers,
    wait_ready,
    worker_env,
)
from rollout.bench.fanout.endpoint import apns_endpoint
from rollout.bench.fanout.fleet import seed_rollout
from rollout.bench.fanout.responder import ChildResponder, Responder
from rollout.bench.measure import database_backends_cpu_s, peak_rss_mb, tree_cpu_s
from rollout.bench.processes import stop_processes
from rollout.bench.services import (
    check_postgres,
    check_redis,
    flushed_redis,
    pg_admin_url,
    scratch_database,
)
from rollout.ledger import Ledger
from rollout.ledger.sealing import Sealer, new_key, parse_keys
from rollout.spec import ONE_STAGE, spec_from_mapping
from rollout.states import TargetState
from rollout.web.server import free_port

REDIS_URL = os.environ.get("ROLLOUT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
TICK_EVERY_S = 2.0  # like beat's controller tick, while planned targets remain
RESPONDER_NICE = int(os.environ.get("ROLLOUT_BENCH_RESPONDER_NICE", "10"))
TRACE = os.environ.get("ROLLOUT_BENCH_TRACE") == "1"
CONCURRENCY = int(os.environ.get("ROLLOUT_BENCH_CONCURRENCY", "1"))
CONTROL_QUEUE = (
    "control"  # the queue workers.app routes rollout.tick to (rollout never imports workers)
)

_NOT_YET_PUSHED = (TargetState.PLANNED.value, TargetState.QUEUED.value)


def _progress(ledger: Ledger, rollout_id: int) -> tuple[int, int, int]:
    """(planned, not yet pushed, acknowledged) from the kept counters."""
    with ledger.rollouts() as store:
        states = store.state_counts(rollout_id)
    planned = states.get(TargetState.PLANNED.value, 0)
    waiting = sum(states.get(s, 0) for s in _NOT_YET_PUSHED)
    return planned, waiting, states.get(TargetState.ACKNOWLEDGED.value, 0)


def _states(ledger: Ledger, rollout_id: int) -> dict[str, int]:
    """Targets by state over every stage, from the kept counters."""
    with ledger.rollouts() as store:
        return store.state_counts(rollout_id)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM raises SystemExit here, so the workers, nginx and the database are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_fanout_bench(
    size: int,
    *,
    postgres_admin: str | None = None,
    redis_url: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    note: Callable[[str], None] | None = None,
    stages: str | None = None,
    backend: str = "builtin",
) -> dict[str, Any]:
    """Fan a rollout of ``size`` devices out and return ``{"bench", "size", "metrics"}``.

    ``note`` is given one line when the APNs endpoint is the Python stand-in (no nginx).
    ``stages`` (``1%,5%,25%,100%``) runs it in stages, each promoted automatically once its
    default gate passes; by default there is one stage. ``backend`` ``nanomdm`` hands every
    command to a NanoMDM stand-in (its own process) through its enqueue API (``nopush=1``),
    the workers pushing the devices themselves as with the built-in delivery, so the two
    figures differ by the hand-over alone.
    """
    if backend not in ("builtin", "nanomdm"):
        raise ValueError(f"backend {backend!r} is not builtin or nanomdm")
    plan = (
        ONE_STAGE
        if not stages
        else spec_from_mapping({"profile": "-", "targets": {"all": True}, "stages": stages}).stages
    )
    if size < 1:
        raise ValueError("size must be >= 1")
    from celery import Celery

    admin = check_postgres(postgres_admin or pg_admin_url())
    broker = redis_url or REDIS_URL
    check_redis(broker)
    concurrency = concurrency or CONCURRENCY
    timeout = timeout or max(120.0, size / 500)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-fanout-"))
    procs: list[subprocess.Popen[bytes]] = []
    done = False
    try:
        with (
            _terminate_cleanly(),
            scratch_database(admin, "rollout_bench_fanout") as url,
            flushed_redis(broker),
            apns_endpoint(workdir, note) as (ep, feed),
            _nanomdm(backend, workdir) as delivery_env,
        ):
            # Push secrets sealed, as in a deployment with a ledger key: workers open them.
            keys = new_key()
            ledger = Ledger.open(url, Sealer(parse_keys(keys)))
            app = Celery("rollout-bench", broker=broker)
            try:
                t_seed = time.perf_counter()
                rollout_id = seed_rollout(ledger, size, plan)
                seed_s = time.perf_counter() - t_seed
                env = {**worker_env(url, broker, ep, workdir, keys), **delivery_env}
                procs = start_workers(env, workdir, concurrency)
                wait_ready(app, procs, workdir)
                responder: Responder | ChildResponder
                if ep.pushed_log is not None and RESPONDER_NICE:
                    responder = ChildResponder(url, ep.pushed_log, RESPONDER_NICE).start()
                else:
                    responder = Responder(ledger, feed).start()
                try:
                    timings = _drive(
                        app, broker, ledger, rollout_id, size, procs, responder, timeout, workdir
                    )
                finally:
                    responder.stop()
                pids = [p.pid for p in procs]
                rss = peak_rss_mb(pids)
                cpu = (tree_cpu_s(pids), database_backends_cpu_s(str(make_url(url).database)))
                states = _states(ledger, rollout_id)
            finally:
                stop_workers(procs)
                with contextlib.suppress(Exception):
                    app.close()
                ledger.dispose()
        done = True
    finally:
        if done:
            shutil.rmtree(workdir, ignore_errors=True)  # else the worker logs stay for a look
    pushed_s, acked_s, ticks = timings
    return {
        "bench": "fanout",
        "size": size,
        "metrics": {
            "seconds_to_pushed": round(pushed_s, 2),
            "seconds_to_acknowledged": round(acked_s, 2),
            "devices_per_s": round(size / pushed_s, 1),
            "peak_rss_mb": round(max(rss.values()), 1) if rss else None,
            "rss_mb": sorted(round(v, 1) for v in rss.values()),
            "states": states,
            "stages": [s.label() for s in plan],
            "backend": backend,
            "ack_path": "ledger",
            "responder": (
                f"process, nice {RESPONDER_NICE}"
                if isinstance(responder, ChildResponder)
                else "thread"
            ),
            "apns_server": ep.kind,
            "workers": WORKERS,
            "concurrency": concurrency,
            "batch_size": int(os.environ.get("ROLLOUT_BATCH_SIZE", "500")),
            "ticks_sent": ticks,
            "worker_cpu_s": round(cpu[0], 1),
            "postgres_cpu_s": round(cpu[1], 1),
            "cores": os.cpu_count(),
            "seed_seconds": round(seed_s, 1),
        },
    }


@contextlib.contextmanager
def _nanomdm(backend: str, home: Path) -> Iterator[dict[str, str]]:
    """With ``nanomdm``: the NanoMDM stand-in in a process of its own and the workers'
    settings to hand their commands to it; nothing otherwise."""
    if backend != "nanomdm":
        yield {}
        return
    port = free_port()
    key = "bench-nanomdm-api-key"
    log = open(home / "nanomdm.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout.sim.nanomdm", "--port", str(port), "--api-key", key,
         "--any-enrollment"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the NanoMDM stand-in did not start; see {home}")
            time.sleep(0.05)
        yield {
            "ROLLOUT_DELIVERY": "nanomdm",
            "ROLLOUT_NANOMDM_URL": f"http://127.0.0.1:{port}",
            "ROLLOUT_NANOMDM_API_KEY": key,
            "ROLLOUT_NANOMDM_PUSH": "rollout",
            "ROLLOUT_WEBHOOK_SECRET": "bench-webhook-secret-0123456789",
        }
    finally:
        stop_processes([proc], grace=10, group=True)
        log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _drive(
    app: Any,
    broker: str,
    ledger: Ledger,
    rollout_id: int,
    size: int,
    procs: list[subprocess.Popen[bytes]],
    responder: Responder | ChildResponder,
    timeout: float,
    home: Path,
) -> tuple[float, float, int]:
    import redis

    r = redis.Redis.from_url(broker)
    t0 = time.perf_counter()
    app.send_task("rollout.tick", queue=CONTROL_QUEUE)
    ticks, last_tick = 1, t0
    pushed_at: float | None = None
    try:
        while True:
            now = time.perf_counter()
            if now - t0 > timeout:
                raise RuntimeError(
                    f"fan-out of {size} not done after {timeout:.0f} s "
                    f"(pushed {'yes' if pushed_at else 'no'}, "
                    f"acknowledged {responder.acknowledged}); see the logs in {home}"
                )
            if responder.error is not None:
                raise RuntimeError(f"the bench responder failed: {responder.error!r}")
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Celery worker exited with {proc.returncode}")
            planned, waiting, acked = _progress(ledger, rollout_id)
            if TRACE:
                print(
                    f"{now - t0:7.2f}s planned {planned} waiting {waiting} acked {acked}",
                    file=sys.stderr,
                )
            if pushed_at is None and waiting == 0:
                pushed_at = now
            if acked >= size:
                return (pushed_at or now) - t0, now - t0, ticks
            if planned and now - last_tick >= TICK_EVERY_S and not r.llen(CONTROL_QUEUE):
                app.send_task("rollout.tick", queue=CONTROL_QUEUE)
                ticks, last_tick = ticks + 1, now
            time.sleep(0.05)
    finally:
        r.close()
