"""A running web app on a loopback port, on each ledger backend, with a device CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.ledger import Ledger
from rollout.sim.identity import make_device_ca
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain
from tests.web.support import Served, serve


@pytest.fixture(scope="session")
def device_ca() -> Issued:
    return make_device_ca()


@pytest.fixture(scope="session")
def profile_chain() -> AppleLikeChain:
    return make_apple_like_chain(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))


@pytest.fixture
def web(ledger: Ledger, tmp_path: Path, device_ca: Issued) -> Iterator[Served]:
    server = serve(ledger, tmp_path, device_ca)
    try:
        yield Served(server.base_url, ledger, device_ca, server)
    finally:
        server.stop()
