"""The fan-out and status benchmarks at tiny sizes: result shape and end state, no timings."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from rollout.bench.fanout import run_fanout_bench
from rollout.bench.metrics import run_metrics_bench
from rollout.bench.status import PAGES, run_status_bench

pytestmark = pytest.mark.slow

FANOUT_METRICS = {"seconds_to_pushed", "seconds_to_acknowledged", "devices_per_s", "peak_rss_mb"}


def _own_db(redis_url: str, number: int = 10) -> str:
    """The same Redis server, another database number: the bench flushes its database."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.mark.celery
def test_fanout_bench_acknowledges_every_target(postgres_admin: str, redis_url: str) -> None:
    result = run_fanout_bench(200, postgres_admin=postgres_admin, redis_url=_own_db(redis_url))
    assert result["bench"] == "fanout" and result["size"] == 200
    metrics = result["metrics"]
    assert set(metrics) >= FANOUT_METRICS
    assert metrics["states"] == {"acknowledged": 200}
    assert metrics["ack_path"] in ("http", "ledger")
    assert metrics["seconds_to_pushed"] <= metrics["seconds_to_acknowledged"]
    assert metrics["devices_per_s"] > 0
    # two worker processes, each with its pool children, all measured
    assert len(metrics["rss_mb"]) >= 4 and 0 < metrics["peak_rss_mb"] == max(metrics["rss_mb"])


@pytest.mark.celery
def test_fanout_bench_in_stages_promotes_each_and_acknowledges_every_target(
    postgres_admin: str, redis_url: str
) -> None:
    result = run_fanout_bench(
        300, postgres_admin=postgres_admin, redis_url=_own_db(redis_url, 14), stages="5%,25%,100%"
    )
    metrics = result["metrics"]
    assert metrics["stages"] == ["5%", "25%", "100%"]
    assert metrics["states"] == {"acknowledged": 300}


@pytest.mark.celery
def test_fanout_bench_beside_nanomdm_hands_every_command_over(
    postgres_admin: str, redis_url: str
) -> None:
    result = run_fanout_bench(
        200, postgres_admin=postgres_admin, redis_url=_own_db(redis_url, 13), backend="nanomdm"
    )
    metrics = result["metrics"]
    assert metrics["backend"] == "nanomdm"
    assert metrics["states"] == {"acknowledged": 200}
    assert metrics["seconds_to_pushed"] <= metrics["seconds_to_acknowledged"]


def test_status_bench_reads_the_kept_counters(postgres_admin: str) -> None:
    result = run_status_bench(1000, postgres_admin=postgres_admin, reads=50)
    assert result["bench"] == "status" and result["size"] == 1000
    metrics = result["metrics"]
    assert {"p50_ms", "p99_ms"} <= set(metrics)
    assert 0 < metrics["p50_ms"] <= metrics["p99_ms"]
    assert sum(metrics["states"].values()) == 1000
    assert len(metrics["states"]) >= 8  # a mix, not one state
    assert set(metrics["pages"]) == {name for name, _, _ in PAGES}  # every page shape timed
    for figures in metrics["pages"].values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["rows_per_page"] > 0


def test_metrics_bench_scrapes_what_it_seeded(postgres_admin: str) -> None:
    result = run_metrics_bench(12, postgres_admin=postgres_admin, scrapes=5, fleet=300, profiles=3)
    metrics = result["metrics"]
    assert result["bench"] == "metrics" and result["size"] == 12
    assert 0 < metrics["p50_ms"] <= metrics["p99_ms"]
    assert metrics["series"] > 12 and metrics["bytes"] > 1000


def test_benches_say_clearly_when_postgresql_is_missing() -> None:
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with pytest.raises(RuntimeError, match="PostgreSQL is not reachable"):
        run_fanout_bench(10, postgres_admin=dead)
    with pytest.raises(RuntimeError, match="PostgreSQL is not reachable"):
        run_status_bench(10, postgres_admin=dead)
    proc = subprocess.run(
        [sys.executable, "-c", "from rollout.cli import main; main()", "bench", "status",
         "--size", "10", "--json"],
        env={"ROLLOUT_BENCH_POSTGRES_URL": dead, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "PostgreSQL is not reachable" in proc.stdout + proc.stderr


def test_fanout_bench_says_clearly_when_redis_is_missing(postgres_admin: str) -> None:
    with pytest.raises(RuntimeError, match="Redis is not reachable"):
        run_fanout_bench(10, postgres_admin=postgres_admin, redis_url="redis://127.0.0.1:1/0")
