"""Schemathesis against the served app's own OpenAPI document, with an admin's token: every
route, hundreds of generated requests, never a server error (5xx)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rollout.web.server import BackgroundServer

TOKEN = "fuzz-token-for-the-operator-api-0001"
ST = Path(sys.executable).with_name("st")  # installed with the dev tools


def test_no_generated_request_makes_a_server_error(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(api_token=TOKEN)
    res = subprocess.run(
        [
            str(ST),
            "run",
            f"{server.base_url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-4000:]
    assert "passed" in res.stdout.split("Test cases:")[-1], res.stdout[-2000:]
