"""What the benches share: the local servers they need, and a scratch database of their own."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from sqlalchemy.engine import make_url

from rollout.ledger import db


def pg_admin_url() -> str:
    """The local server's maintenance database (read when a bench starts, so it can be set)."""
    return os.environ.get("ROLLOUT_BENCH_POSTGRES_URL") or os.environ.get(
        "ROLLOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def check_postgres(admin_url: str) -> str:
    """A psycopg conninfo for the maintenance database, or RuntimeError saying why not."""
    import psycopg

    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {admin_url}: {exc}") from exc
    return conninfo


def check_redis(url: str) -> None:
    """RuntimeError unless Redis answers at ``url``."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis is not reachable at {url}: {exc}") from exc


@contextlib.contextmanager
def scratch_database(admin_conninfo: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (SQLAlchemy URL), migrated, dropped on the way out."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_conninfo).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        db.upgrade(rendered)
        yield rendered
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
