"""INSERT … ON CONFLICT for both backends, in one statement per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def upsert(
    session: Session,
    table: Any,  # a Table (a model's __table__)
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert ``rows``; where ``keys`` already exist, overwrite the ``update`` columns.

    All rows must have the same columns. An empty ``update`` means "insert or leave alone".
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    ins: Any
    if dialect == "postgresql":
        ins = postgresql.insert(table)
    elif dialect == "sqlite":
        ins = sqlite.insert(table)
    else:  # pragma: no cover - the ledger supports these two
        raise NotImplementedError(f"no upsert for {dialect}")
    if update:
        stmt = ins.on_conflict_do_update(
            index_elements=list(keys), set_={c: ins.excluded[c] for c in update}
        )
    else:
        stmt = ins.on_conflict_do_nothing(index_elements=list(keys))
    # Chunk so SQLite's bound-parameter limit is never reached.
    width = max(1, len(rows[0]))
    chunk = max(1, 30000 // width)
    for start in range(0, len(rows), chunk):
        session.execute(stmt, list(rows[start : start + chunk]))
