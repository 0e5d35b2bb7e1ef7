"""Shared fixtures for the simulator tests: a device CA, an Apple-like chain, profiles, servers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from rollout.sim.identity import make_device_ca
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile
from tests.sim.servers import MiniMDM, UvicornThread


@pytest.fixture(scope="session")
def device_ca() -> Issued:
    """The CA that issues the simulated devices' identities."""
    return make_device_ca("Sim Test Device CA")


@pytest.fixture(scope="session")
def apple_chain() -> AppleLikeChain:
    """A test profile-signing chain shaped like Apple's."""
    return make_apple_like_chain()


@pytest.fixture(scope="session")
def enterprise_profile(apple_chain: AppleLikeChain) -> bytes:
    """A signed enterprise profile for all devices, valid for a year."""
    return make_profile(
        apple_chain, name="Sim Enterprise", uuid="0F2C8A1E-3B4D-4C5E-9F60-718293A4B5C6"
    )


@pytest.fixture(scope="session")
def now() -> dt.datetime:
    """The test clock."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def mdm_server(device_ca: Issued) -> Iterator[MiniMDM]:
    """A tiny MDM server (Starlette on uvicorn, in a thread) trusting ``device_ca``."""
    mdm = MiniMDM(device_ca)
    with UvicornThread(mdm.app) as server:
        mdm.base_url = server.base_url
        yield mdm
