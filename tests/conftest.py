"""Shared fixtures: ledgers on SQLite and PostgreSQL, Redis, and the real-world sample files.

PostgreSQL and Redis tests skip when the local servers are not reachable, unless
``ROLLOUT_REQUIRE_SERVICES=1`` (set by CI), in which case they fail instead of skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALWORLD = REPO.parent / "shared" / "realworld"
REQUIRE_SERVICES = os.environ.get("ROLLOUT_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get(
    "ROLLOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ROLLOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and ROLLOUT_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The folder of real files made by others; tests using it skip when it is absent."""
    if not REALWORLD.is_dir():
        pytest.skip("../shared/realworld is not present")
    return REALWORLD


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """A psycopg conninfo for the local server's maintenance database."""
    import psycopg

    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        _unavailable("PostgreSQL", exc)
    return conninfo


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"rollout_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


@pytest.fixture
def engine(ledger_url: str) -> Iterator[object]:
    """An engine on a migrated ledger (SQLite and PostgreSQL)."""
    from rollout.ledger.db import make_engine

    eng = make_engine(ledger_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis URL (database 15); tests clean their own keys."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the services their fixtures use, so CI can count them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "postgres_url" in names or "postgres_admin" in names:
            item.add_marker(pytest.mark.postgres)
        if "redis_url" in names:
            item.add_marker(pytest.mark.redis)
