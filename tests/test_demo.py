"""The README's main job, small: ``rollout demo --fast --json`` on the embedded default, with
real Celery worker and beat processes: beat's renewal scan fetches the renewal from Apple's API
stand-in and opens a staged renewal rollout that completes; and a bad canary that halts it
before its second stage is pushed, which the next scan alerts on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def demo(tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env["ROLLOUT_HOME"] = str(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "rollout", "demo", "--devices", "300", "--fast", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout)
    return out


@pytest.mark.slow
def test_small_fast_demo_completes_and_its_states_add_up(tmp_path: Path) -> None:
    out = demo(tmp_path)
    fleet = out["fleet"]
    assert out["devices"] == 300 and sum(fleet.values()) == 300
    assert out["rollout"]["state"] == "completed"
    renewal = out["renewal"]  # opened by the scan, of a profile Apple's stand-in made
    assert renewal["days_left"] == 20 and renewal["old"] != renewal["new"]
    # the devices the renewal did not reach still hold only the old profile: the next scan
    # says so
    unreached = 300 - out["states"].get("verified", 0) - out["states"].get("acknowledged", 0)
    [alert] = out["alerts"]
    assert alert["kind"] == "renewal.incomplete"
    assert alert["title"].startswith(f"{unreached} device(s) hold Field App In-House")
    assert sum(out["states"].values()) == 300  # every device counted exactly once
    # a canary of about 10%, then the rest; both passed their gates
    canary, rest = out["stages"]
    assert 15 <= sum(canary["states"].values()) <= 50
    assert sum(canary["states"].values()) + sum(rest["states"].values()) == 300
    assert [canary["state"], rest["state"]] == ["passed", "passed"]
    assert canary["gate"]["verdict"] == "pass"
    # dead tokens are unreachable, and only they are
    assert out["states"].get("unreachable") == fleet["dead_token"]
    assert out["unreachable"] == {"token_dead:Unregistered": fleet["dead_token"]}
    # offline devices never answer: they time out (slow answers may add a few)
    assert out["states"].get("timed_out", 0) >= fleet["offline"]
    # error and format-error devices fail; the rest install, and list the profile when asked
    assert out["states"].get("failed") == fleet["error"] + fleet["format_error"]
    settled = out["states"].get("verified", 0) + out["states"].get("timed_out", 0)
    assert settled == fleet["ok"] + fleet["notnow_then_ok"] + fleet["offline"]


@pytest.mark.slow
def test_a_bad_canary_halts_the_demo_before_its_second_stage(tmp_path: Path) -> None:
    out = demo(tmp_path, "--scenario", "bad-canary")
    assert out["rollout"]["state"] == "halted"
    canary, rest = out["stages"]
    assert canary["state"] == "failed" and canary["gate"]["verdict"] == "fail"
    assert canary["states"].get("failed", 0) >= 1 and "verified" not in canary["states"]
    assert rest["states"] == {"planned": sum(rest["states"].values())}  # nothing pushed
    [alert] = out["alerts"]
    assert alert["kind"] == "renewal.halted" and "gate failed" in alert["title"]


@pytest.mark.slow
def test_the_demo_runs_beside_nanomdm(tmp_path: Path) -> None:
    """The fleet is enrolled in the NanoMDM stand-in: the workers hand commands to its enqueue
    API, its webhook brings enrollments and answers back, and the renewal completes with the
    same outcome per kind of device as on the built-in endpoint."""
    out = demo(tmp_path, "--backend", "nanomdm")
    fleet = out["fleet"]
    assert out["backend"] == "nanomdm" and out["rollout"]["state"] == "completed"
    assert sum(out["states"].values()) == 300
    assert [s["state"] for s in out["stages"]] == ["passed", "passed"]
    # NanoMDM's push answers name the dead tokens (APNs' 410), so rollout marks them
    assert out["unreachable"] == {"token_dead:Unregistered": fleet["dead_token"]}
    assert out["states"].get("failed") == fleet["error"] + fleet["format_error"]
    settled = out["states"].get("verified", 0) + out["states"].get("timed_out", 0)
    assert settled == fleet["ok"] + fleet["notnow_then_ok"] + fleet["offline"]
    # installs are verified through NanoMDM too (on a loaded machine a slow device may time
    # out in --fast mode, so not all of them are asked in time)
    assert out["states"].get("verified", 0) >= (fleet["ok"] + fleet["notnow_then_ok"]) // 2
