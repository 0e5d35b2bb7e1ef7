"""Shared fixtures: ledgers on SQLite and PostgreSQL, Redis, and the real-world sample files.

PostgreSQL and Redis tests skip when the local servers are not reachable, unless
``ROLLOUT_REQUIRE_SERVICES=1`` (set by CI), in which case they fail instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import unavailable

REPO = Path(__file__).resolve().parents[1]
REALWORLD = REPO.parent / "shared" / "realworld"
PG_ADMIN_URL = os.environ.get(
    "ROLLOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ROLLOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The folder of real files made by others; tests using it skip when it is absent."""
    if not REALWORLD.is_dir():
        pytest.skip("../shared/realworld is not present")
    return REALWORLD


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """The URL of the local server's maintenance database."""
    from rollout.ledger import db

    why = db.server_reachable(PG_ADMIN_URL)
    if why is not None:
        unavailable("PostgreSQL", why)
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from rollout.ledger import db

    url = db.create_database(postgres_admin, "rollout_test")
    try:
        yield url
    finally:
        db.drop_database(postgres_admin, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite ledger file for one test."""
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """An empty, migrated ledger on each backend: the same tests run on both."""
    from rollout.ledger.db import upgrade

    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url


TEST_LEDGER_KEY = "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"""The ledger key of the tests' PostgreSQL ledgers: there, every push secret is sealed."""


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[object]:
    """A migrated ledger on each backend: on SQLite push secrets are stored as they are (a
    deployment without a key), on PostgreSQL sealed with :data:`TEST_LEDGER_KEY`."""
    from rollout.ledger import Ledger
    from rollout.ledger.sealing import PLAIN, Sealer, parse_keys

    sealer = Sealer(parse_keys(TEST_LEDGER_KEY)) if ledger_url.startswith("postgres") else PLAIN
    opened = Ledger.open(ledger_url, sealer)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def clock() -> object:
    """The one clock of a test: moved forward by the test, never slept on."""
    from rollout.clock import ManualClock

    return ManualClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis URL (database 15); tests clean their own keys."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return REDIS_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the services their fixtures use, so CI can count them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "postgres_url" in names or "postgres_admin" in names:
            item.add_marker(pytest.mark.postgres)
        if "redis_url" in names:
            item.add_marker(pytest.mark.redis)
