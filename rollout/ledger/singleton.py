"""A lock at most one process holds, for as long as it lives: what keeps a second Celery beat
from scheduling beside the first.

- PostgreSQL: a session-level advisory lock on a connection of the holder's own (no open
  transaction). The server releases it when that connection ends: the process exits, is
  killed, or its host stops answering (TCP keepalives, asked for on both sides, find a dead
  peer within about 25 seconds).
- SQLite (one host): an exclusive ``flock`` on a file beside the ledger, released by the
  kernel when the process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from rollout.ledger.db import make_engine, normalise_url

# Client side: libpq's keepalives; server side: the session's own keepalive settings.
_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
_SERVER_KEEPALIVE = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
)


def lock_key(name: str) -> int:
    """The 64-bit advisory-lock key of ``name`` (signed, as PostgreSQL's bigint)."""
    return int.from_bytes(
        hashlib.sha256(f"rollout:{name}".encode()).digest()[:8], "big", signed=True
    )


class SingletonLock:
    """``name``'s lock on the ledger at ``url``: :meth:`try_acquire`, then :meth:`alive` now and
    then while holding it, :meth:`release` (or the process's end) to give it up."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self._url = normalise_url(url)
        self._sqlite = make_url(self._url).get_backend_name() == "sqlite"
        self._conn: Connection | None = None
        self._engine: Any = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (as far as it knows: see :meth:`alive`)."""
        return self._conn is not None or self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it; True when this process now holds it.

        Raises :class:`OSError` or :class:`sqlalchemy.exc.DBAPIError` when the ledger cannot be
        reached (then no one can be sure who holds it: the caller waits).
        """
        if self.held:
            return True
        if self._sqlite:
            return self._try_file()
        engine = make_engine(
            self._url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=_KEEPALIVE
        )
        conn = engine.connect()
        try:
            for statement in _SERVER_KEEPALIVE:
                conn.execute(text(statement))
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)}
            ).scalar_one()
        except BaseException:
            conn.close()
            engine.dispose()
            raise
        if not got:
            conn.close()
            engine.dispose()
            return False
        self._conn, self._engine = conn, engine
        return True

    def alive(self) -> bool:
        """Whether the lock is still held: on PostgreSQL, its connection still answers (if it
        does not, the server has released the lock or soon will; this process gives it up)."""
        if self._fd is not None:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
        except DBAPIError:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Give the lock up (closing its connection or file)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):  # dead: the server has let go already
                self._conn.close()
            self._conn = None
            self._engine.dispose()
            self._engine = None

    def holder_file(self) -> Path | None:
        """On SQLite, the file whose lock is the lock."""
        if not self._sqlite:
            return None
        database = make_url(self._url).database or "ledger"
        return Path(f"{database}.{self.name}.lock")

    def _try_file(self) -> bool:
        path = self.holder_file()
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True
