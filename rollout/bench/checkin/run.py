"""The check-in bench's orchestration: the scratch database and its fleet, the two servers and
the load generator as child processes, the checks, and the figures.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rollout.bench.checkin.fleet import baseline_bodies, check_ledger, setup_ledger
from rollout.bench.processes import free_port, stop_processes, wait_port
from rollout.bench.services import check_postgres, pg_admin_url, scratch_database

CONCURRENCY = 256
"""Devices in flight at once (each on its own keep-alive connection)."""


@contextlib.contextmanager
def _child(role: str, cfg: dict[str, Any], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m rollout.bench.checkin <role> <cfg.json>``; stop it on the way out."""
    cfg_path = workdir / f"{role}.json"
    cfg_path.write_text(json.dumps(cfg))
    log = open(workdir / f"{role}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout.bench.checkin", role, str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(cfg["port"], proc, timeout=60, log=workdir / f"{role}.log")
        yield proc
    finally:
        stop_processes([proc], signal.SIGINT, grace=30)  # uvicorn's own clean shutdown
        log.close()


def _run_generator(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    job_path = workdir / f"job-{job['mode']}.pickle"
    out_path = workdir / f"result-{job['mode']}.json"
    job_path.write_bytes(pickle.dumps(job))
    proc = subprocess.run(
        [sys.executable, "-m", "rollout.bench.checkin", "generate", str(job_path), str(out_path)],
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def _job(
    mode: str,
    url: str,
    port: int,
    server: subprocess.Popen[bytes],
    concurrency: int,
    **extra: Any,
) -> dict[str, Any]:
    """What the load generator needs to drive and measure the server listening on ``port``."""
    from sqlalchemy.engine import make_url

    return {
        "mode": mode,
        "admin": pg_admin_url(),
        "database": make_url(url).database,
        "base_url": f"http://127.0.0.1:{port}",
        "server_pid": server.pid,
        "concurrency": concurrency,
        **extra,
    }


@contextlib.contextmanager
def _prune_running(
    url: str, rows: int, workdir: Path, by: str = "partition"
) -> Iterator[dict[str, Any]]:
    """With ``rows`` > 0: an old finished rollout of ``rows`` targets (with their commands and
    result events), and ``rollout ledger prune`` removing it in its own process for as long
    as the block runs; what it did is filled into the dict yielded.

    ``by="rows"``: the old rollout shares its partition block with the running one, so it is
    archived beforehand and the prune deletes its rows in batches. ``by="partition"``: it
    has a block of its own (empty aborted rollouts fill the running one's block first, as
    older rollouts would), and the prune archives it, then drops the block. ``by="none"``:
    the same ledger as ``partition``, and no prune: the figure to compare with."""
    out: dict[str, Any] = {}
    if rows <= 0:
        yield out
        return
    import datetime as dt

    from rollout import retention
    from rollout.bench.ledger import fill_block, seed_finished_rollout
    from rollout.clock import SYSTEM_CLOCK
    from rollout.ledger import Ledger

    folder = workdir / "archive"
    ledger = Ledger.open(url)
    try:
        now = SYSTEM_CLOCK.now()
        old = now - dt.timedelta(days=400)
        if by != "rows":
            fill_block(ledger, old)
        seed_finished_rollout(ledger, rows, old, first=10_000_001)
        if by == "rows":
            retention.archive_due(ledger, folder, retention.RetentionPolicy(), now)
    finally:
        ledger.dispose()
    if by == "none":
        out["prune_by"] = by
        yield out
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(workdir),
        ROLLOUT_DATABASE_URL=url,
        ROLLOUT_RETENTION_ARCHIVE_DIR=str(folder),
    )
    log = open(workdir / "prune.log", "wb")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout", "ledger", "prune", "--json"],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    try:
        yield out
        out["prune_still_running_at_end"] = proc.poll() is None
        stdout, _ = proc.communicate(timeout=3600)
        out["prune_s"] = round(time.perf_counter() - started, 1)
        if proc.returncode != 0:
            raise RuntimeError(f"the prune failed: {(workdir / 'prune.log').read_text()[-2000:]}")
        report = json.loads(stdout)
        out["prune_by"] = by
        out["prune_deleted_rows"] = sum(report["deleted"].values())
        out["prune_dropped_partitions"] = len(report["dropped"])
    finally:
        if proc.poll() is None:
            stop_processes([proc], signal.SIGINT, grace=30)
        log.close()


def run_checkin_bench(
    size: int,
    *,
    concurrency: int = CONCURRENCY,
    during_prune: int = 0,
    prune_by: str = "partition",
) -> dict[str, Any]:
    """Run ``size`` device cycles against the product and ``2 x size`` baseline requests;
    with ``during_prune`` (targets of an old rollout), the product's cycles run while
    ``rollout ledger prune`` deletes that rollout's rows in another process.

    Returns ``{"bench": "checkin", "size": N, "metrics": {...}}``. Raises ``RuntimeError``
    when PostgreSQL is unreachable or when the ledger does not end with every target
    acknowledged and the kept counters exact.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-checkin-"))
    try:
        with scratch_database(check_postgres(pg_admin_url()), "rollout_bench_checkin") as url:
            fleet = setup_ledger(url, size, workdir)
            concurrency = max(1, min(concurrency, size))
            port = free_port()
            cfg = {
                "port": port,
                "home": str(workdir),
                "database_url": url,
                "device_ca": str(workdir / "device-ca.pem"),
            }
            with (
                _prune_running(url, during_prune, workdir, prune_by) as prune,
                _child("serve-product", cfg, workdir) as server,
            ):
                ours = _run_generator(
                    _job(
                        "product",
                        url,
                        port,
                        server,
                        concurrency,
                        devices=fleet.devices,
                        key_pem=fleet.key_pem,
                        anchors=fleet.anchors,
                    ),
                    workdir,
                )
            ledger = check_ledger(url, fleet.rollout_id, size)
            port = free_port()
            with _child("serve-baseline", {"port": port, "database_url": url}, workdir) as base:
                bodies = baseline_bodies(fleet.devices, 2 * size)
                theirs = _run_generator(
                    _job("baseline", url, port, base, concurrency, bodies=bodies), workdir
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    metrics = _metrics(ours, theirs, ledger, concurrency)
    if during_prune:
        metrics.update(during_prune=during_prune, **prune)
        if prune_by != "none" and not prune.get("prune_still_running_at_end"):
            metrics["note"] = "the prune ended before the check-ins did: give it more rows"
    result = {"bench": "checkin", "size": size, "metrics": metrics}
    problems = []
    if ours["failures"]:
        problems.append(f"{ours['failures']} device cycles failed ({ours['first_failure']})")
    if theirs["failures"]:
        problems.append(f"{theirs['failures']} baseline requests failed")
    if not ledger["all_acknowledged"]:
        problems.append(f"not every target is acknowledged: {ledger['target_states']}")
    if not ledger["counters_exact"]:
        problems.append("the kept counters differ from the targets")
    if problems:
        raise RuntimeError("; ".join(problems) + f" -- {json.dumps(result)}")
    return result


def _metrics(
    ours: dict[str, Any], theirs: dict[str, Any], ledger: dict[str, Any], concurrency: int
) -> dict[str, Any]:
    """The figures, from what the generator measured on each server and the ledger's checks."""
    requests, base_requests = ours["requests"], theirs["requests"]

    def us_per_request(seconds: float, count: int = requests) -> float:
        return round(seconds / max(1, count) * 1e6, 1)

    return {
        "checkins_per_s": round(ours["cycles"] / ours["wall_s"], 1),
        "baseline_checkins_per_s": round(base_requests / theirs["wall_s"], 1),
        "requests_per_s": round(requests / ours["wall_s"], 1),
        "server_cpu_us_per_request": us_per_request(ours["server_cpu_s"]),
        "postgres_cpu_us_per_request": us_per_request(ours["postgres_cpu_s"]),
        "writer_cpu_us_per_report": us_per_request(ours["writer_cpu_s"]),
        "writer_busy": round(ours["writer_wall_s"] / ours["wall_s"], 2),
        "client_cpu_us_per_request": us_per_request(ours["client_cpu_s"]),
        "baseline_server_cpu_us_per_request": us_per_request(theirs["server_cpu_s"], base_requests),
        "p50_ms": ours["latencies_ms"]["p50"],
        "p99_ms": ours["latencies_ms"]["p99"],
        "baseline_postgres_cpu_us_per_request": us_per_request(
            theirs["postgres_cpu_s"], base_requests
        ),
        "baseline_p50_ms": theirs["latencies_ms"]["p50"],
        "baseline_p99_ms": theirs["latencies_ms"]["p99"],
        "batches": ours["server_batches"],
        "mean_batch": round((ours["server_reports"] or 0) / max(1, ours["server_batches"] or 0), 1),
        "concurrency": concurrency,
        "cycles": ours["cycles"],
        "failures": ours["failures"] + theirs["failures"],
        "sampled_devices_ok": f"{ours['sample_ok']}/{ours['sampled']}",
        "acknowledged": ledger["acknowledged"],
        "all_acknowledged": ledger["all_acknowledged"],
        "counters_exact": ledger["counters_exact"],
        "cores": os.cpu_count(),
        # uvicorn picks these up when they are importable (http="auto", loop="auto").
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }
