"""The stored push secrets as they are (sealed or plain), for key rotation and its census.

Rotation reads pages of devices whose secrets are not sealed with the current key, has them
re-sealed by its caller, and writes them back only where the row still holds what was read:
a TokenUpdate that lands in between (already sealed with the current key) is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, case, func, not_, or_, select, update
from sqlalchemy.orm import Session

from rollout.ledger.models import DeviceRow
from rollout.ledger.sealing import PREFIX

SECRET_COLUMNS = ("push_token", "push_magic")


@dataclass(frozen=True)
class SealedRow:
    """One device's push secrets as stored."""

    device_id: int
    owner: str  # the enrollment id the values are bound to
    push_token: str | None
    push_magic: str | None


class SealedLedger:
    """Push secrets as stored, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def census(self) -> dict[str, dict[str, int]]:
        """For each secret column, how many values are sealed with each key id (``plain``
        for values stored as they are); absent values are not counted."""
        out: dict[str, dict[str, int]] = {}
        for name in SECRET_COLUMNS:
            col = getattr(DeviceRow, name)
            kid = case(
                (col.like(f"{PREFIX}%"), func.substr(col, len(PREFIX) + 1, 8)), else_="plain"
            )
            rows = self._session.execute(
                select(kid, func.count()).where(col.is_not(None)).group_by(kid)
            ).all()
            out[name] = {str(k): int(n) for k, n in rows}
        return out

    def not_sealed_with(self, key_id: str | None, *, after_id: int, limit: int) -> list[SealedRow]:
        """A page (id order, after ``after_id``) of devices holding a secret that is not
        sealed with ``key_id``; with ``key_id`` None, of devices holding a sealed secret."""
        conds = []
        for name in SECRET_COLUMNS:
            col = getattr(DeviceRow, name)
            if key_id is None:
                conds.append(col.like(f"{PREFIX}%"))
            else:
                conds.append(and_(col.is_not(None), not_(col.like(f"{PREFIX}{key_id}.%"))))
        rows = self._session.execute(
            select(
                DeviceRow.id, DeviceRow.enrollment_id, DeviceRow.push_token, DeviceRow.push_magic
            )
            .where(DeviceRow.id > after_id, or_(*conds))
            .order_by(DeviceRow.id)
            .limit(limit)
        ).all()
        return [SealedRow(*r) for r in rows]

    def rewrite(self, pairs: Sequence[tuple[SealedRow, SealedRow]]) -> int:
        """Write each ``(was, now)``'s new values where the row still holds ``was``'s; how
        many rows were written."""
        if not pairs:
            return 0
        stmt = (
            update(DeviceRow)
            .where(
                DeviceRow.id == bindparam("b_id"),
                DeviceRow.push_token.is_not_distinct_from(bindparam("b_token")),
                DeviceRow.push_magic.is_not_distinct_from(bindparam("b_magic")),
            )
            .values(push_token=bindparam("v_token"), push_magic=bindparam("v_magic"))
            .execution_options(synchronize_session=False)
        )
        result = self._session.connection().execute(
            stmt,
            [
                {
                    "b_id": was.device_id,
                    "b_token": was.push_token,
                    "b_magic": was.push_magic,
                    "v_token": now.push_token,
                    "v_magic": now.push_magic,
                }
                for was, now in pairs
            ],
        )
        return int(result.rowcount or 0)
