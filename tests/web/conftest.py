"""A running web app on a loopback port, on each ledger backend, with a device CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from rollout.config import Settings
from rollout.ledger import db
from rollout.sim.identity import make_device_ca
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer


@dataclass
class Served:
    """The app under test and what the test needs to talk to it."""

    base_url: str
    engine: Engine
    device_ca: Issued
    server: BackgroundServer


@pytest.fixture(scope="session")
def device_ca() -> Issued:
    return make_device_ca()


@pytest.fixture(scope="session")
def profile_chain() -> AppleLikeChain:
    return make_apple_like_chain(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))


def serve(
    engine: Engine, tmp_path: Path, device_ca: Issued, **overrides: object
) -> BackgroundServer:
    ca_file = tmp_path / "device-ca.pem"
    ca_file.write_bytes(device_ca.cert_pem())
    settings = Settings(
        home=tmp_path,
        device_ca=str(ca_file),
        max_body_bytes=64 * 1024,
        **overrides,  # type: ignore[arg-type]
    )
    return BackgroundServer(create_app(settings, engine)).start()


@pytest.fixture
def web(ledger_url: str, tmp_path: Path, device_ca: Issued) -> Iterator[Served]:
    engine = db.make_engine(ledger_url)
    server = serve(engine, tmp_path, device_ca)
    try:
        yield Served(server.base_url, engine, device_ca, server)
    finally:
        server.stop()
        engine.dispose()
