"""Engines, sessions and schema upgrades for the ledger."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")
_DB_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the web app read while a worker writes; busy_timeout waits out short write locks.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def normalise_url(url: str) -> str:
    """Make ``postgresql://`` URLs use psycopg 3, the driver the product ships with."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, connect_timeout: int | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, foreign keys and a busy timeout.

    ``connect_timeout`` (seconds) bounds how long opening a server connection may take (a
    deployment check must not hang on an unreachable server); SQLite opens a file, at once.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The driver's own transaction handling is turned off so every transaction can start
        # with BEGIN IMMEDIATE: SQLite then has one writer at a time, and a read that decides a
        # write (claiming targets) can never be overtaken by another writer.
        kwargs.setdefault("connect_args", {"timeout": 30, "isolation_level": None})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if connect_timeout is not None:
        kwargs.setdefault("connect_args", {"connect_timeout": max(1, connect_timeout)})
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def alembic_config(url: str) -> Any:
    """The Alembic configuration for the ledger's migrations against ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the ledger's schema at ``url`` up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str, *, connect_timeout: int | None = None) -> str | None:
    """The schema revision the database at ``url`` is at, or None when it is empty."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, connect_timeout=connect_timeout)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest schema revision this version of the product knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


# ---- scratch databases on a PostgreSQL server (tests and benchmarks) ---------------------


def _admin_engine(admin_url: str) -> Engine:
    return make_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def server_reachable(admin_url: str, timeout_s: int = 3) -> str | None:
    """None when the PostgreSQL server at ``admin_url`` answers, else why not (one line)."""
    engine = make_engine(admin_url, poolclass=NullPool, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    finally:
        engine.dispose()
    return None


def create_database(admin_url: str, prefix: str) -> str:
    """Create a fresh, empty database named ``<prefix>_<random>`` on the server of
    ``admin_url`` (a maintenance database such as ``postgres``); its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"not a safe database name: {name!r}")
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return (
        make_url(normalise_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    )


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database ``url`` names (closing its connections), if it exists."""
    name = make_url(url).database or ""
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"not a safe database name: {name!r}")
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def backend_pids(admin_url: str, database: str) -> list[int]:
    """The process ids of the PostgreSQL backends serving ``database`` (to measure its CPU)."""
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
            ).all()
    finally:
        engine.dispose()
    return [int(r[0]) for r in rows]
