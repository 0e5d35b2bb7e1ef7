"""Fixtures for the APNs tests: one stand-in server per module, a push certificate, fast config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollout.apns import PushCertificate, PushConfig, load_pem
from rollout.clock import ManualClock
from rollout.sim.apns_server import ApnsStandIn

TOPIC = "com.apple.mgmt.External.6b1f4c2e-0d3a-4e55-9f7a-0c1d2e3f4a5b"


@pytest.fixture(scope="module")
def standin() -> Iterator[ApnsStandIn]:
    """A running stand-in (real TLS + HTTP/2) that records request headers."""
    with ApnsStandIn(record=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> None:
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()


@pytest.fixture(scope="module")
def push_cert(standin: ApnsStandIn) -> PushCertificate:
    """A push certificate from the stand-in's client CA, with the MDM topic as UID."""
    issued = standin.issue_push_certificate(TOPIC)
    return load_pem(issued.cert_pem() + issued.key_pem())


@pytest.fixture
def config(standin: ApnsStandIn) -> PushConfig:
    """Point at the stand-in; tiny backoff so retry tests stay fast."""
    return PushConfig(
        base_url=standin.base_url,
        ca_file=standin.ca_file,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=3.0,
        max_attempts=4,
    )


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()
