"""Fixtures for the MDM wire-protocol tests: the real-world samples and a small device PKI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rollout.sim.identity import issue_device_identity, make_device_ca
from rollout.sim.pki import Issued

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld"


def realworld_file(*parts: str) -> Path:
    """A file under the shared real-world folder; skips the test when it is absent."""
    path = REALWORLD.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-world sample {path} is not available")
    return path


@pytest.fixture(scope="session")
def device_ca() -> Issued:
    return make_device_ca(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=365))


@pytest.fixture(scope="session")
def other_ca() -> Issued:
    return make_device_ca("Somebody Else's CA")


@pytest.fixture(scope="session")
def device(device_ca: Issued) -> Issued:
    return issue_device_identity(device_ca, "00008020-000915083C80012E")


@pytest.fixture(scope="session")
def rsa_device(device_ca: Issued) -> Issued:
    return issue_device_identity(device_ca, "RSA-DEVICE-0001", key_kind="rsa")


@pytest.fixture(scope="session")
def foreign_device(other_ca: Issued) -> Issued:
    return issue_device_identity(other_ca, "00008020-000915083C80012E")


@pytest.fixture(scope="session")
def expired_device(device_ca: Issued) -> Issued:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return issue_device_identity(device_ca, "EXPIRED-DEVICE", not_before=start, days=10)
