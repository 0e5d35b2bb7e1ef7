"""The README's main job, small: ``rollout demo --fast --json`` on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_small_fast_demo_completes_and_its_states_add_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env["ROLLOUT_HOME"] = str(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "rollout", "demo", "--devices", "300", "--fast", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    fleet = out["fleet"]
    assert out["devices"] == 300 and sum(fleet.values()) == 300
    assert out["rollout"]["state"] == "completed"
    assert sum(out["states"].values()) == 300  # every device counted exactly once
    assert sum(out["stages"][0]["states"].values()) == 300
    # dead tokens are unreachable, and only they are
    assert out["states"].get("unreachable") == fleet["dead_token"]
    assert out["unreachable"] == {"token_dead:Unregistered": fleet["dead_token"]}
    # offline devices never answer: they time out (slow answers may add a few)
    assert out["states"].get("timed_out", 0) >= fleet["offline"]
    # error and format-error devices fail; the rest acknowledge
    assert out["states"].get("failed") == fleet["error"] + fleet["format_error"]
    settled = out["states"].get("acknowledged", 0) + out["states"].get("timed_out", 0)
    assert settled == fleet["ok"] + fleet["notnow_then_ok"] + fleet["offline"]
