"""The check-in benchmark end to end at a tiny size: shape of the result, every device done.

No timing is asserted (the figures depend on the machine); what is checked is that the bench
really ran whole cycles and left the ledger exact.
"""

from __future__ import annotations

import pytest

from rollout.bench.checkin import run_checkin_bench


@pytest.mark.slow
def test_checkin_bench_runs_whole_cycles_and_every_device_ends_acknowledged(
    postgres_admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUT_BENCH_POSTGRES_URL", postgres_admin)
    result = run_checkin_bench(50)
    assert result["bench"] == "checkin" and result["size"] == 50
    m = result["metrics"]
    for key in (
        "checkins_per_s",
        "baseline_checkins_per_s",
        "requests_per_s",
        "server_cpu_us_per_request",
        "p50_ms",
        "p99_ms",
        "batches",
        "mean_batch",
    ):
        assert isinstance(m[key], int | float) and m[key] >= 0, key
    assert m["checkins_per_s"] > 0 and m["baseline_checkins_per_s"] > 0
    assert m["cycles"] == 50 and m["failures"] == 0
    assert m["acknowledged"] == 50 and m["all_acknowledged"] is True
    assert m["counters_exact"] is True
    assert m["sampled_devices_ok"] == "8/8"
    assert m["batches"] >= 1


def test_checkin_bench_fails_clearly_without_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(RuntimeError, match="PostgreSQL is not reachable"):
        run_checkin_bench(5)
