"""What the benches share: the local servers they need, and a scratch database of their own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rollout.ledger import db


def pg_admin_url() -> str:
    """The local server's maintenance database (read when a bench starts, so it can be set)."""
    return os.environ.get("ROLLOUT_BENCH_POSTGRES_URL") or os.environ.get(
        "ROLLOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def check_postgres(admin_url: str) -> str:
    """``admin_url`` when the server answers, else RuntimeError saying why not."""
    why = db.server_reachable(admin_url)
    if why is not None:
        raise RuntimeError(f"PostgreSQL is not reachable at {admin_url}: {why}")
    return admin_url


def check_redis(url: str) -> None:
    """RuntimeError unless Redis answers at ``url``."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis is not reachable at {url}: {exc}") from exc


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), migrated, dropped on the way out."""
    url = db.create_database(admin_url, prefix)
    try:
        db.upgrade(url)
        yield url
    finally:
        db.drop_database(admin_url, url)


@contextlib.contextmanager
def flushed_redis(url: str) -> Iterator[None]:
    """The Redis database ``url`` names, emptied before and after (give a bench its own)."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()
