"""The push benchmark runs end to end (small sizes) with nginx and with the stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.bench import push


def _check(result: dict[str, object], size: int) -> dict[str, object]:
    assert result["bench"] == "push" and result["size"] == size
    metrics = result["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["pushes_per_s"] > 0 and metrics["aioapns_pushes_per_s"] > 0
    assert metrics["cpu_us_per_push"] > 0
    return metrics


@pytest.mark.skipif(not Path(push.NGINX).exists(), reason="nginx is not installed")
def test_bench_against_nginx() -> None:
    assert _check(push.run_push_bench(200), 200)["server"] == "nginx"


def test_bench_falls_back_to_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "NGINX", "/nonexistent/nginx")
    assert _check(push.run_push_bench(100), 100)["server"] == "stand-in"
