"""What the CLI tests share: the real ``rollout`` command, run as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def rollout(
    *args: str, home: Path, db_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``rollout ARGS`` in a fresh process: its own home, ledger and ``env`` settings only."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(extra)
    env["ROLLOUT_HOME"] = str(home)
    if db_url:
        env["ROLLOUT_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "rollout", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
