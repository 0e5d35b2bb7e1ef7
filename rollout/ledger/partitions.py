"""The partitions of the high-volume tables on PostgreSQL: blocks of rollouts that retention
drops whole (it stores and applies; whether a block may go is decided in
:mod:`rollout.retention`).

``targets``, ``commands`` and ``events`` are partitioned by range of rollout: ``targets`` on
``rollout_id``, the other two on ``part``, which is the rollout of a per-device row and 0
for everything else (commands of no rollout, journal records of no rollout, and a rollout's
own events, which are kept forever). Each table has:

* ``<table>_rollouts_<lo>``: the per-device rows of rollouts ``lo`` to ``lo + SPAN - 1``;
* ``<table>_loose``: the rows of partition key 0 (``commands`` and ``events``), kept by age;
* ``<table>_rest``: the default partition, for a row whose block is missing (a rollout made
  while its block could not be created, or a late report for a rollout already dropped).
  It is normally empty, so creating a block never has much to scan.

A block is created ahead of the rollouts that will fill it, in its own short transaction,
and dropped once every rollout in it is archived: detached first (a short lock), then
checked against the archives, then dropped. SQLite has no partitions: every method here is a
no-op there, and retention deletes rows in batches.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

_log = logging.getLogger(__name__)

#: Rollouts per block. A fleet renewing a few profiles a month fills one in a season; the
#: tables keep a handful of blocks, so a check-in's lookups by device visit a handful of
#: small indexes.
SPAN = 8
#: The partition key of each partitioned table.
KEYS = {"targets": "rollout_id", "commands": "part", "events": "part"}
#: The times that say when a row was last written, per table (a row written after its
#: archive was read must not be dropped on the strength of that archive).
WRITTEN = {
    "targets": ("updated_at",),
    "commands": ("created_at", "sent_at", "result_at", "first_notnow_at"),
    "events": ("at",),
}
#: How long creating or detaching a block may wait for its lock before giving up (it waits
#: behind open transactions, and while it waits, new ones wait behind it).
LOCK_TIMEOUT = "2s"

_BLOCK = re.compile(r"^(targets|commands|events)_rollouts_([0-9]+)$")


def block_of(rollout_id: int) -> int:
    """The first rollout id of the block that holds ``rollout_id``."""
    return ((max(rollout_id, 1) - 1) // SPAN) * SPAN + 1


def block_name(table: str, lo: int) -> str:
    """The partition of ``table`` that holds block ``lo``."""
    return f"{table}_rollouts_{lo}"


def create_block_sql(table: str, lo: int) -> str:
    """The statement that creates block ``lo`` of ``table`` (if it is not there)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {block_name(table, lo)} PARTITION OF {table} "
        f"FOR VALUES FROM ({lo}) TO ({lo + SPAN})"
    )


@dataclass
class Block:
    """One block of rollouts: which tables have it attached, and which hold it detached
    (a drop that stopped between its detach and its drop)."""

    lo: int
    attached: set[str] = field(default_factory=set)
    detached: set[str] = field(default_factory=set)

    @property
    def hi(self) -> int:
        """One past the last rollout id of the block."""
        return self.lo + SPAN


@dataclass(frozen=True)
class DetachedRows:
    """What a detached block of one table holds, per rollout: rows, and the latest time any
    of them was written."""

    table: str
    rows: dict[int, int]
    written: dict[int, dt.datetime | None]


def partitioned(session: Session) -> bool:
    """Whether this ledger's ``targets`` is a partitioned table (PostgreSQL, migrated)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    kind = session.scalar(
        text(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = 'targets'"
        )
    )
    return kind == "p"


class PartitionLedger:
    """Blocks of rollouts in the partitioned tables, inside one transaction (DDL included:
    each ``with ledger.partitions()`` block is short, and commits its DDL at its end)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.enabled = partitioned(session)

    def _lock_timeout(self) -> None:
        self._session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))

    def next_rollout_id(self) -> int:
        """The id the next rollout will get (no number is taken)."""
        seq = self._session.scalar(text("SELECT pg_get_serial_sequence('rollouts', 'id')"))
        last = self._session.scalar(
            text(
                "SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename = :seq"
            ),
            {"seq": str(seq)},
        )
        return int(last) + 1 if last is not None else 1

    def blocks(self) -> list[Block]:
        """Every block of any partitioned table, attached or detached, by first rollout id."""
        if not self.enabled:
            return []
        rows = self._session.execute(
            text(
                "SELECT c.relname, i.inhparent IS NOT NULL FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                "AND c.relname LIKE '%\\_rollouts\\_%'"
            )
        )
        found: dict[int, Block] = {}
        for name, attached in rows:
            m = _BLOCK.match(str(name))
            if m is None:
                continue
            table, lo = m.group(1), int(m.group(2))
            block = found.setdefault(lo, Block(lo))
            (block.attached if attached else block.detached).add(table)
        return [found[lo] for lo in sorted(found)]

    def outside_blocks(self) -> dict[str, int]:
        """How many rows each table's default partition holds (rows whose block was missing
        when they were written: pruned row by row, never dropped whole)."""
        if not self.enabled:
            return {}
        return {
            table: int(self._session.scalar(text(f"SELECT count(*) FROM {table}_rest")) or 0)
            for table in KEYS
        }

    def create(self, lo: int) -> list[str]:
        """Create block ``lo`` in every partitioned table that lacks it; the tables where it
        was created. A table whose default partition already holds rows of the block keeps
        them there (the block is left out for that table)."""
        if not self.enabled:
            return []
        self._lock_timeout()
        have = next((b.attached | b.detached for b in self.blocks() if b.lo == lo), set())
        made: list[str] = []
        for table in KEYS:
            if table in have:
                continue
            try:
                with self._session.begin_nested():
                    self._session.execute(text(create_block_sql(table, lo)))
            except DBAPIError as exc:
                if "would be violated" not in str(exc.orig):
                    raise
                continue
            made.append(table)
        return made

    def detach(self, lo: int) -> list[str]:
        """Detach block ``lo`` from every table that has it attached (a short exclusive lock
        on each table, waited for at most :data:`LOCK_TIMEOUT`); the tables detached. From
        then on nothing can write into the detached tables: a late row of those rollouts goes
        to the default partition. When a lock is not granted in time, nothing is detached and
        the answer is empty."""
        if not self.enabled:
            return []
        self._lock_timeout()
        block = next((b for b in self.blocks() if b.lo == lo), None)
        if block is None:
            return []
        try:
            with self._session.begin_nested():
                for table in sorted(block.attached):
                    self._session.execute(
                        text(f"ALTER TABLE {table} DETACH PARTITION {block_name(table, lo)}")
                    )
        except OperationalError as exc:
            _log.warning("partitions: block %d not detached now: %s", lo, exc.orig)
            return []
        return sorted(block.attached)

    def detached_rows(self, table: str, lo: int) -> DetachedRows:
        """Per rollout, how many rows detached block ``lo`` of ``table`` holds and when the
        latest of them was written."""
        key = KEYS[table]
        latest = ", ".join(f"max({c})" for c in WRITTEN[table])
        latest = f"greatest({latest})" if len(WRITTEN[table]) > 1 else latest
        rows: dict[int, int] = {}
        written: dict[int, dt.datetime | None] = {}
        q = text(f"SELECT {key}, count(*), {latest} FROM {block_name(table, lo)} GROUP BY {key}")
        for rollout_id, n, at in self._session.execute(q):
            rows[int(rollout_id)] = int(n)
            written[int(rollout_id)] = _aware(at)
        return DetachedRows(table, rows, written)

    def drop_detached(self, table: str, lo: int) -> None:
        """Drop a detached block (its rows are in an archive: the caller has checked)."""
        self._session.execute(text(f"DROP TABLE IF EXISTS {block_name(table, lo)}"))

    def return_detached(self, table: str, lo: int) -> int:
        """Put a detached block's rows back into ``table`` (the default partition takes them,
        where retention deletes them row by row) and drop the detached table; how many."""
        name = block_name(table, lo)
        cols = ", ".join(
            str(c)
            for c in self._session.scalars(
                text(
                    "SELECT quote_ident(attname) FROM pg_attribute "
                    "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped "
                    "ORDER BY attnum"
                ),
                {"t": name},
            )
        )
        result: Any = self._session.execute(
            text(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")
        )
        self._session.execute(text(f"DROP TABLE {name}"))
        return int(result.rowcount or 0)


def _aware(at: Any) -> dt.datetime | None:
    if at is None:
        return None
    if isinstance(at, dt.datetime) and at.tzinfo is None:
        return at.replace(tzinfo=dt.UTC)
    return at
