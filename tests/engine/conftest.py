"""Engine fixtures: an APNs stand-in, a push client for it, and a fleet in the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollout.apns import PushClient, PushConfig, load_pem
from rollout.sim.apns_server import ApnsStandIn
from tests.support import TOPIC


@pytest.fixture(scope="session")
def standin() -> Iterator[ApnsStandIn]:
    with ApnsStandIn(topic=TOPIC) as server:
        yield server


@pytest.fixture
def apns(standin: ApnsStandIn) -> Iterator[PushClient]:
    standin.reset()
    issued = standin.issue_push_certificate(TOPIC)
    config = PushConfig(
        base_url=standin.base_url,
        ca_file=standin.ca_file,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=3.0,
        max_attempts=4,
    )
    client = PushClient(load_pem(issued.cert_pem() + issued.key_pem()), config)
    try:
        yield client
    finally:
        client.close()
