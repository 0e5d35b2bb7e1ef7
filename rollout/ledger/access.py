"""Operator API tokens in the ledger: their hashes, roles and use (never the tokens)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import ApiTokenRow
from rollout.ledger.records import TokenInfo


class TokenConflictError(ValueError):
    """A token of that name exists already."""


def _info(r: ApiTokenRow) -> TokenInfo:
    return TokenInfo(r.id, r.name, r.role, r.created_by, r.created_at, r.last_used_at, r.revoked_at)


class AccessLedger(Journaled):
    """See :class:`rollout.ledger.AccessStore`."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add_token(
        self, name: str, role: str, token_hash: str, created_by: str, now: dt.datetime
    ) -> TokenInfo:
        """Keep a new token's hash; :class:`TokenConflictError` when the name is taken."""
        row = ApiTokenRow(
            name=name, role=role, token_hash=token_hash, created_by=created_by, created_at=now
        )
        try:
            with self._session.begin_nested():
                self._session.add(row)
        except IntegrityError:
            raise TokenConflictError(f"a token named {name!r} exists already") from None
        return _info(row)

    def by_hash(self, token_hash: str) -> TokenInfo | None:
        """The token with this hash, revoked or not."""
        row = self._session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))
        return _info(row) if row is not None else None

    def tokens(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        return [
            _info(r) for r in self._session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))
        ]

    def live_tokens(self) -> int:
        """How many tokens are not revoked."""
        return len(
            self._session.scalars(
                select(ApiTokenRow.id).where(ApiTokenRow.revoked_at.is_(None))
            ).all()
        )

    def revoke(self, token_id: int, now: dt.datetime) -> None:
        """The token no longer opens anything."""
        self._session.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def touch(self, token_id: int, now: dt.datetime) -> None:
        """Record that the token was used at ``now``."""
        self._session.execute(
            update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=now)
        )
