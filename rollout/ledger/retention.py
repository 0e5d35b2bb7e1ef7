"""Retention in the ledger: old rows read and deleted in small batches, archive files on
record, pins, sizes (it stores and applies; what is due is decided in :mod:`rollout.retention`).

Rows cross the boundary as JSON-ready dicts (times as ISO 8601 text, bytes as base64), so an
archive file holds exactly what a restore writes back, column for column.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    LargeBinary,
    Table,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import (
    ArchiveRow,
    Base,
    CommandRow,
    EventRow,
    RolloutRow,
    TargetRow,
)
from rollout.ledger.partitions import partitioned
from rollout.ledger.records import (
    ArchiveInfo,
    BlockRollout,
    FinishedRollout,
    NewArchive,
    TableSize,
)
from rollout.ledger.types import UTCDateTime

#: The tables whose rows retention archives and deletes.
PRUNED_TABLES: dict[str, Table] = {
    "targets": TargetRow.__table__,  # type: ignore[dict-item]
    "commands": CommandRow.__table__,  # type: ignore[dict-item]
    "events": EventRow.__table__,  # type: ignore[dict-item]
}


class UnknownTableError(ValueError):
    """A table retention does not handle was named (an archive file from elsewhere)."""


def _table(name: str) -> Table:
    try:
        return PRUNED_TABLES[name]
    except KeyError:
        raise UnknownTableError(f"not a table retention handles: {name!r}") from None


#: Columns an archive leaves out: they follow from the row's others (see :func:`_derived`).
DERIVED = frozenset({"part"})


def _derived(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """The derived columns of a row read back from an archive: the partition key of a
    command (its rollout, or 0) and of an event (its rollout when it names a device, or 0)."""
    if "part" not in table.columns:
        return {}
    if table.name == "events" and row.get("device_id") is None:
        return {"part": 0}
    return {"part": int(row.get("rollout_id") or 0)}


def _to_json(table: Table, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        if col.name in DERIVED:
            continue
        value = row._mapping[col]
        if value is not None and isinstance(col.type, UTCDateTime):
            value = value.isoformat()
        elif value is not None and isinstance(col.type, LargeBinary):
            value = base64.b64encode(value).decode("ascii")
        out[col.name] = value
    return out


def _from_json(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        if col.name in DERIVED:
            continue
        if col.name not in row:
            raise ValueError(f"{table.name}: a row lacks the column {col.name!r}")
        value = row[col.name]
        if value is not None and isinstance(col.type, UTCDateTime):
            value = dt.datetime.fromisoformat(value)
        elif value is not None and isinstance(col.type, LargeBinary):
            value = base64.b64decode(value)
        out[col.name] = value
    out.update(_derived(table, out))
    unknown = set(row) - {c.name for c in table.columns}
    if unknown:
        raise ValueError(f"{table.name}: unknown columns {sorted(unknown)}")
    return out


def _archive(r: ArchiveRow) -> ArchiveInfo:
    return ArchiveInfo(
        id=r.id,
        name=r.name,
        kind=r.kind,
        rollout_id=r.rollout_id,
        sha256=r.sha256,
        rows={k: int(v) for k, v in (r.rows or {}).items()},
        state=r.state,
        cutoff=r.cutoff,
        created_at=r.created_at,
        pruned_at=r.pruned_at,
    )


def _device_rows(rollout_id: Any) -> Any:
    """Whether a rollout still holds per-device rows: targets or device events, each read
    through an index that starts with the rollout. Commands are not looked at: they have no
    such index (the fan-out writes them, and pays for every index), and a rollout's commands
    go in the same archive as its targets."""
    return or_(
        exists().where(TargetRow.rollout_id == rollout_id),
        exists().where(EventRow.rollout_id == rollout_id, EventRow.device_id.is_not(None)),
    )


class RetentionLedger(Journaled):
    """See :class:`rollout.ledger.RetentionStore`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # ---- rollouts ------------------------------------------------------------------------

    def finished(
        self,
        states: Collection[str],
        before: dt.datetime,
        *,
        pinned: bool | None = False,
        limit: int = 1000,
    ) -> list[FinishedRollout]:
        """Rollouts in ``states`` that finished before ``before`` and still hold per-device
        rows, oldest first (only unpinned ones by default; ``pinned=None``: both)."""
        q = (
            select(
                RolloutRow.id,
                RolloutRow.name,
                RolloutRow.state,
                RolloutRow.finished_at,
                RolloutRow.pinned,
            )
            .where(
                RolloutRow.state.in_(list(states)),
                RolloutRow.finished_at < before,
                _device_rows(RolloutRow.id),
            )
            .order_by(RolloutRow.finished_at, RolloutRow.id)
            .limit(limit)
        )
        if pinned is not None:
            q = q.where(RolloutRow.pinned.is_(pinned))
        return [
            FinishedRollout(rid, name, state, finished_at, bool(is_pinned))
            for rid, name, state, finished_at, is_pinned in self._session.execute(q)
            if finished_at is not None
        ]

    def partitioned(self) -> bool:
        """Whether the per-device tables are partitioned by block of rollouts (PostgreSQL)."""
        return partitioned(self._session)

    def block_rollouts(self, lo: int, hi: int) -> list[BlockRollout]:
        """The rollouts with ids from ``lo`` to ``hi - 1``, each with whether it still holds
        per-device rows."""
        q = (
            select(
                RolloutRow.id,
                RolloutRow.state,
                RolloutRow.finished_at,
                RolloutRow.pinned,
                _device_rows(RolloutRow.id),
            )
            .where(RolloutRow.id >= lo, RolloutRow.id < hi)
            .order_by(RolloutRow.id)
        )
        return [
            BlockRollout(rid, state, finished_at, bool(is_pinned), bool(has_rows))
            for rid, state, finished_at, is_pinned, has_rows in self._session.execute(q)
        ]

    def set_pinned(self, rollout_id: int, pinned: bool) -> bool:
        """Pin (or unpin) a rollout; False when there is no such rollout."""
        result: CursorResult[Any] = self._session.execute(  # type: ignore[assignment]
            update(RolloutRow).where(RolloutRow.id == rollout_id).values(pinned=pinned)
        )
        return bool(result.rowcount)

    def pinned(self) -> list[int]:
        """The pinned rollouts' ids."""
        return list(
            self._session.scalars(
                select(RolloutRow.id).where(RolloutRow.pinned.is_(True)).order_by(RolloutRow.id)
            )
        )

    def rollout_rows(
        self, table: str, rollout_id: int, *, after_id: int = 0, limit: int = 2000
    ) -> list[dict[str, Any]]:
        """One keyset page of a rollout's per-device rows of ``table`` (targets, commands, or
        events that name a device), in id order."""
        t = _table(table)
        q = select(t).where(t.c.rollout_id == rollout_id, t.c.id > after_id)
        if table == "events":
            q = q.where(t.c.device_id.is_not(None))
        rows = self._session.execute(q.order_by(t.c.id).limit(limit))
        return [_to_json(t, r) for r in rows]

    def count_rollout_rows(self, rollout_id: int) -> dict[str, int]:
        """How many per-device rows of each table a rollout holds."""
        out: dict[str, int] = {}
        for name, t in PRUNED_TABLES.items():
            q = select(func.count()).select_from(t).where(t.c.rollout_id == rollout_id)
            if name == "events":
                q = q.where(t.c.device_id.is_not(None))
            out[name] = int(self._session.scalar(q) or 0)
        return out

    # ---- records of no rollout -----------------------------------------------------------

    def _loose_events(
        self, before: dt.datetime, kinds: Collection[str] | None, not_kinds: Collection[str]
    ) -> Any:
        cond = [EventRow.rollout_id.is_(None), EventRow.at < before]
        if kinds is not None:
            cond.append(EventRow.kind.in_(list(kinds)))
        if not_kinds:
            cond.append(EventRow.kind.not_in(list(not_kinds)))
        return and_(*cond)

    def loose_events(
        self,
        before: dt.datetime,
        *,
        kinds: Collection[str] | None = None,
        not_kinds: Collection[str] = (),
        after_id: int = 0,
        limit: int = 2000,
    ) -> list[dict[str, Any]]:
        """A keyset page of events of no rollout recorded before ``before`` (of ``kinds``
        when given, never of ``not_kinds``)."""
        t = PRUNED_TABLES["events"]
        q = (
            select(t)
            .where(self._loose_events(before, kinds, not_kinds), t.c.id > after_id)
            .order_by(t.c.id)
            .limit(limit)
        )
        return [_to_json(t, r) for r in self._session.execute(q)]

    def count_loose_events(
        self,
        before: dt.datetime,
        *,
        kinds: Collection[str] | None = None,
        not_kinds: Collection[str] = (),
    ) -> int:
        """How many events :meth:`loose_events` would page through."""
        q = select(func.count()).where(self._loose_events(before, kinds, not_kinds))
        return int(self._session.scalar(q) or 0)

    def _loose_commands(self, before: dt.datetime, statuses: Collection[str]) -> Any:
        return and_(
            CommandRow.rollout_id.is_(None),
            CommandRow.status.in_(list(statuses)),
            func.coalesce(CommandRow.result_at, CommandRow.created_at) < before,
        )

    def loose_commands(
        self,
        before: dt.datetime,
        statuses: Collection[str],
        *,
        after_id: int = 0,
        limit: int = 2000,
    ) -> list[dict[str, Any]]:
        """A keyset page of commands of no rollout in ``statuses`` answered (or, without an
        answer, created) before ``before``."""
        t = PRUNED_TABLES["commands"]
        q = (
            select(t)
            .where(self._loose_commands(before, statuses), t.c.id > after_id)
            .order_by(t.c.id)
            .limit(limit)
        )
        return [_to_json(t, r) for r in self._session.execute(q)]

    def count_loose_commands(self, before: dt.datetime, statuses: Collection[str]) -> int:
        """How many commands :meth:`loose_commands` would page through."""
        q = select(func.count()).where(self._loose_commands(before, statuses))
        return int(self._session.scalar(q) or 0)

    # ---- deletes and restores ------------------------------------------------------------

    def delete_rows(
        self, table: str, ids: Sequence[int], *, unchanged_since: dt.datetime | None = None
    ) -> int:
        """Delete rows of ``table`` by id; with ``unchanged_since``, only those not written
        after it (a target moved or a command answered since its archive was made stays, so
        what is deleted is exactly what the archive holds). How many went."""
        if not ids:
            return 0
        t = _table(table)
        stmt = delete(t).where(t.c.id.in_(list(ids)))
        if unchanged_since is not None and table == "targets":
            stmt = stmt.where(t.c.updated_at <= unchanged_since)
        elif unchanged_since is not None and table == "commands":
            for col in (t.c.created_at, t.c.sent_at, t.c.result_at, t.c.first_notnow_at):
                stmt = stmt.where(or_(col.is_(None), col <= unchanged_since))
        result: CursorResult[Any] = self._session.execute(stmt)  # type: ignore[assignment]
        return int(result.rowcount or 0)

    def changed_since(self, table: str, ids: Sequence[int], since: dt.datetime) -> list[int]:
        """Of ``ids``, those rows of ``table`` written after ``since`` (never for events)."""
        if not ids or table == "events":
            return []
        t = _table(table)
        q = select(t.c.id).where(t.c.id.in_(list(ids)))
        if table == "targets":
            q = q.where(t.c.updated_at > since)
        else:
            q = q.where(
                or_(
                    *(
                        c > since
                        for c in (t.c.created_at, t.c.sent_at, t.c.result_at, t.c.first_notnow_at)
                    )
                )
            )
        return list(self._session.scalars(q))

    def restore_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Write archived rows back with their own ids; a row whose id (or key) is already
        there is left alone. How many were written."""
        if not rows:
            return 0
        t = _table(table)
        values = [_from_json(t, r) for r in rows]
        dialect = self._session.get_bind().dialect.name
        ins: Any = postgresql.insert(t) if dialect == "postgresql" else sqlite.insert(t)
        stmt = ins.on_conflict_do_nothing()
        ids = [v["id"] for v in values]

        def present() -> int:
            n = 0
            for start in range(0, len(ids), 5000):
                q = select(func.count()).where(t.c.id.in_(ids[start : start + 5000]))
                n += int(self._session.scalar(q) or 0)
            return n

        # the driver's rowcount of a many-row insert is not reliable: count the ids instead
        before = present()
        step = max(1, 30000 // len(t.columns))
        for start in range(0, len(values), step):
            self._session.execute(stmt, values[start : start + step])
        written = present() - before
        if dialect == "postgresql":
            # the ids came back from the file: keep the id sequence ahead of them
            seq = self._session.scalar(text(f"SELECT pg_get_serial_sequence('{t.name}', 'id')"))
            top = self._session.scalar(select(func.max(t.c.id)))
            if seq and top:
                last = self._session.scalar(
                    text(
                        "SELECT COALESCE(last_value, 0) FROM pg_sequences "
                        "WHERE schemaname || '.' || sequencename = :seq"
                    ),
                    {"seq": str(seq)},
                )
                if int(top) > int(last or 0):
                    self._session.execute(
                        text("SELECT setval(CAST(:seq AS regclass), :top)"),
                        {"seq": str(seq), "top": int(top)},
                    )
        return written

    def missing_devices(self, device_ids: Collection[int]) -> list[int]:
        """Of ``device_ids``, those the ledger no longer has."""
        from rollout.ledger.models import DeviceRow

        wanted = sorted(set(device_ids))
        found: set[int] = set()
        for start in range(0, len(wanted), 5000):
            found.update(
                self._session.scalars(
                    select(DeviceRow.id).where(DeviceRow.id.in_(wanted[start : start + 5000]))
                )
            )
        return [d for d in wanted if d not in found]

    # ---- archives on record --------------------------------------------------------------

    def add_archive(self, new: NewArchive, now: dt.datetime) -> ArchiveInfo:
        """Record an archive file that is on disk and verified (state ``written``)."""
        row = ArchiveRow(
            name=new.name,
            kind=new.kind,
            rollout_id=new.rollout_id,
            sha256=new.sha256,
            rows=dict(new.rows),
            state="written",
            cutoff=new.cutoff,
            created_at=now,
        )
        self._session.add(row)
        self._session.flush()
        return _archive(row)

    def archives(
        self, *, rollout_id: int | None = None, state: str | None = None, kind: str | None = None
    ) -> list[ArchiveInfo]:
        """Archive files on record, oldest first."""
        q = select(ArchiveRow).order_by(ArchiveRow.id)
        if rollout_id is not None:
            q = q.where(ArchiveRow.rollout_id == rollout_id)
        if state is not None:
            q = q.where(ArchiveRow.state == state)
        if kind is not None:
            q = q.where(ArchiveRow.kind == kind)
        return [_archive(r) for r in self._session.scalars(q)]

    def archive_named(self, name: str) -> ArchiveInfo | None:
        """The archive file on record under ``name``."""
        row = self._session.scalar(select(ArchiveRow).where(ArchiveRow.name == name))
        return _archive(row) if row is not None else None

    def mark_pruned(self, archive_id: int, now: dt.datetime) -> None:
        """Every row of this archive has left the ledger."""
        self._session.execute(
            update(ArchiveRow)
            .where(ArchiveRow.id == archive_id)
            .values(state="pruned", pruned_at=now)
        )

    # ---- sizes ---------------------------------------------------------------------------

    def sizes(self) -> list[TableSize]:
        """Every ledger table's rows and bytes (heap and indexes), largest first."""
        s = self._session
        names = sorted(Base.metadata.tables)
        counts = {
            name: int(s.scalar(select(func.count()).select_from(Base.metadata.tables[name])) or 0)
            for name in names
        }
        heap: dict[str, int] = dict.fromkeys(names, 0)
        index: dict[str, int] = dict.fromkeys(names, 0)
        if s.get_bind().dialect.name == "postgresql":
            # a partitioned table holds nothing itself: add up its partitions (a partition
            # detached by a prune that stopped is counted by its own name, not here)
            q = text(
                "SELECT c.relname, sum(pg_table_size(t.oid)), sum(pg_indexes_size(t.oid)) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_class t ON t.oid = c.oid OR t.oid IN "
                "(SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf) "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
                "GROUP BY c.relname"
            )
            for name, table_bytes, index_bytes in s.execute(q):
                if name in heap:
                    heap[name], index[name] = int(table_bytes), int(index_bytes)
        else:
            owner = {
                name: table
                for name, table in s.execute(
                    text("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table','index')")
                )
            }
            try:
                pages = s.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
            except OperationalError:  # SQLite built without the dbstat table
                pages = []
            for name, size in pages:
                table = owner.get(name)
                if table in heap:
                    if name == table:
                        heap[table] += int(size)
                    else:
                        index[table] += int(size)
        out = [TableSize(n, counts[n], heap[n], index[n]) for n in names]
        return sorted(out, key=lambda t: (-(t.table_bytes + t.index_bytes), t.table))

    def oldest(self) -> dict[str, dt.datetime | None]:
        """The oldest row of each kind retention looks at."""
        s = self._session
        return {
            "event": s.scalar(select(func.min(EventRow.at))),
            "event_of_no_rollout": s.scalar(
                select(func.min(EventRow.at)).where(EventRow.rollout_id.is_(None))
            ),
            "command": s.scalar(select(func.min(CommandRow.created_at))),
            "target": s.scalar(select(func.min(TargetRow.updated_at))),
            "finished_rollout_with_rows": s.scalar(
                select(func.min(RolloutRow.finished_at)).where(
                    RolloutRow.finished_at.is_not(None), _device_rows(RolloutRow.id)
                )
            ),
        }
