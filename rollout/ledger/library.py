"""The profile library: signed provisioning profiles and what was read from them."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.ledger.journal import Journaled
from rollout.ledger.models import ProfileRow
from rollout.ledger.records import ProfileEntry

if TYPE_CHECKING:
    from rollout.profiles import Profile


class ProfileConflictError(ValueError):
    """A different file is already stored under the same profile UUID."""


def _entry(row: ProfileRow) -> ProfileEntry:
    return ProfileEntry(
        uuid=row.uuid,
        sha256=row.sha256,
        name=row.name,
        app_id=row.app_id,
        team_id=row.team_id,
        kind=row.kind,
        platforms=tuple(row.platforms or ()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        signature_valid=row.signature_valid,
        chain_trusted=row.chain_trusted,
        metadata=dict(row.metadata_json or {}),
        added_at=row.added_at,
    )


class LibraryLedger(Journaled):
    """The profile library, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, profile: Profile, content: bytes, now: dt.datetime) -> tuple[ProfileEntry, bool]:
        """Store ``content`` (already parsed into ``profile``); the entry and whether it is new.

        Adding the same file twice is a no-op. A different file under a UUID that is already in
        the library is refused with :class:`ProfileConflictError`, and nothing is written.
        """
        s = self._session
        existing = s.get(ProfileRow, profile.uuid)
        if existing is not None:
            if existing.sha256 == profile.sha256:
                return _entry(existing), False
            raise ProfileConflictError(
                f"profile {profile.uuid} is already in the library with a different file "
                f"(sha256 {existing.sha256[:12]}…, new file {profile.sha256[:12]}…)"
            )
        data = profile.to_json()
        row = ProfileRow(
            uuid=profile.uuid,
            sha256=profile.sha256,
            name=profile.name,
            app_id_name=profile.app_id_name,
            app_id=profile.app_id,
            team_id=profile.team_id,
            team_name=profile.team_name,
            kind=str(data["kind"]),
            platforms=list(profile.platforms),
            created_at=profile.created_at,
            expires_at=profile.expires_at,
            provisions_all_devices=profile.provisions_all_devices,
            provisioned_devices=list(profile.provisioned_devices),
            signature_valid=profile.signature.valid,
            chain_trusted=profile.signature.chain_trusted,
            signer=profile.signature.signer,
            metadata_json=data,
            size=len(content),
            content=content,
            added_at=now,
        )
        s.add(row)
        s.flush()
        return _entry(row), True

    def profiles(self) -> list[ProfileEntry]:
        """Every profile in the library, soonest expiry first."""
        rows = self._session.scalars(
            select(ProfileRow).order_by(ProfileRow.expires_at, ProfileRow.uuid)
        )
        return [_entry(r) for r in rows]

    def get(self, uuid: str) -> ProfileEntry | None:
        """The profile with ``uuid`` (case-insensitive), or None."""
        row = self._session.get(ProfileRow, uuid.strip().lower())
        return _entry(row) if row is not None else None

    def find(self, prefix: str) -> list[ProfileEntry]:
        """Profiles whose UUID starts with ``prefix`` (case-insensitive), at most a few."""
        key = prefix.strip().lower()
        if not key:
            return []
        rows = self._session.scalars(
            select(ProfileRow)
            .where(ProfileRow.uuid >= key, ProfileRow.uuid < key + "\uffff")
            .order_by(ProfileRow.uuid)
            .limit(10)
        )
        return [_entry(r) for r in rows]

    def content(self, uuid: str) -> bytes | None:
        """The signed file of a profile in the library."""
        return self._session.scalar(select(ProfileRow.content).where(ProfileRow.uuid == uuid))

    def like(self, *, app_id: str, team_id: str) -> list[ProfileEntry]:
        """The library's profiles for one application identifier and team, longest-lived
        first."""
        rows = self._session.scalars(
            select(ProfileRow)
            .where(ProfileRow.app_id == app_id, ProfileRow.team_id == team_id)
            .order_by(ProfileRow.expires_at.desc(), ProfileRow.uuid)
        )
        return [_entry(r) for r in rows]
