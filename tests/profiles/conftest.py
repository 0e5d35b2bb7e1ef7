"""Shared fixtures: test chains are made once per session (RSA key generation is the slow part)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rollout.sim.pki import issue_leaf, make_ca
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain

NOW = dt.datetime.now(dt.UTC)
CHAIN_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
REALWORLD = Path(__file__).parents[2].parent / "shared" / "realworld"


@pytest.fixture(scope="session")
def chain() -> AppleLikeChain:
    """Valid 2024-01-01 to 2043: covers the fixed dates the tests use and today."""
    return make_apple_like_chain(not_before=CHAIN_START, days=7300)


@pytest.fixture(scope="session")
def ec_chain() -> AppleLikeChain:
    return make_apple_like_chain(key_kind="ec")


@pytest.fixture(scope="session")
def other_chain() -> AppleLikeChain:
    """A second, unrelated chain whose root has the same name as ``chain``'s."""
    return make_apple_like_chain()


@pytest.fixture(scope="session")
def old_chain() -> AppleLikeChain:
    """Valid from ~11 years ago for ~8 years: expired today."""
    return make_apple_like_chain(not_before=NOW - dt.timedelta(days=4000), days=3000)


@pytest.fixture(scope="session")
def short_signer_chain() -> AppleLikeChain:
    """The signer certificate lived 30 days, starting 400 days ago."""
    return make_apple_like_chain(not_before=NOW - dt.timedelta(days=400), signer_days=30)


@pytest.fixture(scope="session")
def non_ca_chain(chain: AppleLikeChain) -> AppleLikeChain:
    """The 'intermediate' is an end-entity certificate (basicConstraints cA=FALSE)."""
    root = make_ca("Test Apple Root CA")
    not_a_ca = issue_leaf(root, "Test Apple iPhone Certification Authority")
    signer = issue_leaf(not_a_ca, "Test Apple iPhone OS Provisioning Profile Signing")
    return AppleLikeChain(
        root=root, intermediate=not_a_ca, signer=signer, developer=chain.developer
    )


@pytest.fixture(scope="session")
def realworld() -> Path:
    if not (REALWORLD / "profiles").is_dir():
        pytest.skip(f"real-world fixtures not found at {REALWORLD}")
    return REALWORLD
