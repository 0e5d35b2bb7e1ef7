"""A running web app on a loopback port, on each ledger backend, with a device CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout.ledger import Ledger
from rollout.sim.identity import make_device_ca
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain
from rollout.web.server import BackgroundServer
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


@pytest.fixture
def started(
    ledger: Ledger, tmp_path: Path, device_ca: Issued
) -> Iterator[Callable[..., BackgroundServer]]:
    """Start apps with settings of the test's choosing (see :func:`serve`); all stopped at the
    end."""
    servers: list[BackgroundServer] = []

    def start(**settings: Any) -> BackgroundServer:
        server = serve(ledger, tmp_path, device_ca, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
