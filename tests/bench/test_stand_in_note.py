"""Without nginx the push and fan-out benches measure the Python APNs stand-in: they say so in
one line on stderr, and stdout stays what it was (one JSON object with ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollout.bench import push
from rollout.bench.fanout import endpoint as fanout_endpoint
from rollout.cli import app

NOTE = "note: nginx not found at"


def _bench_push(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["bench", "push", "--size", "20", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_push_bench_says_on_stderr_that_it_measures_the_stand_in(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setattr(push, "NGINX", "/nonexistent/nginx")
    stdout, stderr = _bench_push(*(["--json"] if as_json else []))
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(NOTE), stderr
    assert "/nonexistent/nginx" in lines[0] and "stand-in" in lines[0]
    assert NOTE not in stdout
    if as_json:
        assert json.loads(stdout)["metrics"]["server"] == "stand-in"
    else:
        assert "stand-in" in stdout and stdout.startswith("bench push, size 20")


@pytest.mark.skipif(not Path(push.NGINX).exists(), reason="nginx is not installed")
def test_push_bench_says_nothing_with_nginx() -> None:
    stdout, stderr = _bench_push("--json")
    assert stderr == ""
    assert json.loads(stdout)["metrics"]["server"] == "nginx"


def test_fanout_endpoint_says_when_it_is_the_stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notes: list[str] = []
    monkeypatch.setattr(fanout_endpoint, "NGINX", "/nonexistent/nginx")
    fanout_endpoint.apns_endpoint(tmp_path, notes.append)  # chosen, not started
    assert len(notes) == 1 and "bench fanout" in notes[0] and "stand-in" in notes[0]
