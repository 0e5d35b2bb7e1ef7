"""The profile library in the ledger: add, list and fetch signed provisioning profiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.ledger.events import record_event
from rollout.ledger.models import ProfileRow

if TYPE_CHECKING:
    from rollout.profiles import Profile


class ProfileConflictError(ValueError):
    """A different file is already stored under the same profile UUID."""


def add_profile(session: Session, profile: Profile, content: bytes) -> tuple[ProfileRow, bool]:
    """Store ``content`` (already parsed into ``profile``); return the row and whether it is new.

    Adding the same file twice is a no-op. A different file under a UUID that is already in
    the library is refused with :class:`ProfileConflictError`, and nothing is written.
    """
    existing = session.get(ProfileRow, profile.uuid)
    if existing is not None:
        if existing.sha256 == profile.sha256:
            return existing, False
        raise ProfileConflictError(
            f"profile {profile.uuid} is already in the library with a different file "
            f"(sha256 {existing.sha256[:12]}…, new file {profile.sha256[:12]}…)"
        )
    same_file = session.scalar(select(ProfileRow).where(ProfileRow.sha256 == profile.sha256))
    if same_file is not None:  # pragma: no cover - same bytes always carry the same UUID
        return same_file, False
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
    )
    session.add(row)
    session.flush()
    record_event(session, "profile.added", data={"uuid": profile.uuid, "name": profile.name})
    return row, True


def list_profiles(session: Session) -> Sequence[ProfileRow]:
    """Every profile in the library, soonest expiry first."""
    return session.scalars(
        select(ProfileRow).order_by(ProfileRow.expires_at, ProfileRow.uuid)
    ).all()


def get_profile(session: Session, uuid: str) -> ProfileRow | None:
    """The profile with ``uuid`` (case-insensitive), or None."""
    return session.get(ProfileRow, uuid.strip().lower())
