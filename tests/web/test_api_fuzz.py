"""Schemathesis against the served app's own OpenAPI document, with an admin's token: every
route, hundreds of generated requests, never a server error (5xx), and every answer as the
document says: a documented status code and content type, a body that fits its schema.

The ledger holds a little of everything first (devices holding a profile, a rollout, an alert,
a token), and the read routes that take an id are given one that exists, so their answers are
real ones, checked against their models, not only 404s."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, NewAlert
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain
from rollout.web.server import BackgroundServer
from tests.web.support import Served, fleet_holding, install_rollout

TOKEN = "fuzz-token-for-the-operator-api-0001"
ST = Path(sys.executable).with_name("st")  # installed with the dev tools
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def config(rollout_id: int, udid: str, profile: str) -> str:
    """Schemathesis' settings: real ids for the reads."""
    enabled = "\n".join(f"{check}.enabled = true" for check in CHECKS)
    return f"""
[checks]
enabled = false
{enabled}

[[operations]]
include-path = "/api/v1/rollouts/{{rollout_id}}"
include-method = "GET"
parameters = {{ rollout_id = {rollout_id} }}

[[operations]]
include-path = "/api/v1/rollouts/{{rollout_id}}/devices"
parameters = {{ rollout_id = {rollout_id} }}

[[operations]]
include-path = "/api/v1/devices/{{key}}"
parameters = {{ key = "{udid}" }}

[[operations]]
include-path = "/api/v1/profiles/{{uuid}}"
parameters = {{ uuid = "{profile}" }}
"""


def test_generated_requests_get_documented_answers_never_a_server_error(
    started: Callable[..., BackgroundServer],
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
    tmp_path: Path,
) -> None:
    server = started(api_token=TOKEN)
    web = Served(server.base_url, ledger, device_ca, server)
    devices, profile = fleet_holding(web, profile_chain, 3, held_by=2)
    rollout_id = install_rollout(web, profile_chain, [d.udid for d in devices])
    now = SYSTEM_CLOCK.now()
    with ledger.alerts() as store:
        store.raise_new([NewAlert("fuzz:x", "renewal.missing", "warning", "no renewal")], now)
    access.issue(ledger, "reader", Role.VIEWER, actor="test", now=now)
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(config(rollout_id, devices[0].udid, profile.uuid))
    res = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(settings),
            "run",
            f"{server.base_url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "15",
            "--seed",
            "7",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its cache stays out of the work tree
    )
    assert res.returncode == 0, res.stdout[-6000:]
    assert "passed" in res.stdout.split("Test cases:")[-1], res.stdout[-2000:]
