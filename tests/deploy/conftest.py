"""Fixtures for the deployment files' tests: promtool (required in CI), an APNs stand-in and a
push certificate file it accepts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.sim.apns_server import ApnsStandIn

TOPIC = "com.apple.mgmt.External.5a1e0c1e-7e57-4d3e-9a11-0f0e0d0c0b0a"


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's ``promtool`` (package ``prometheus``): skips without it, unless
    ``ROLLOUT_REQUIRE_PROMTOOL=1`` (CI installs it), in which case the test fails."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("ROLLOUT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (ROLLOUT_REQUIRE_PROMTOOL=1)", pytrace=False)
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


@pytest.fixture(scope="module")
def standin() -> Iterator[ApnsStandIn]:
    """A running APNs stand-in (real TLS and HTTP/2)."""
    with ApnsStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def push_cert_file(standin: ApnsStandIn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEM push certificate with its key, from the stand-in's client CA."""
    issued = standin.issue_push_certificate(TOPIC)
    path = tmp_path_factory.mktemp("push") / "push.pem"
    path.write_bytes(issued.cert_pem() + issued.key_pem())
    return path
