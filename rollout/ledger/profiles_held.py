"""What profiles devices hold, learned from the devices themselves.

An acknowledged ``InstallProvisioningProfile`` of a rollout means the device now holds the
rollout's profile; a ``ProvisioningProfileList`` answer is the device's own list. Both keep the
``installed_profiles`` facts (the inventory the expiry scan reads) up to date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rollout.ledger.models import InstalledProfileRow, ProfileRow, RolloutRow
from rollout.ledger.records import ProfileFact
from rollout.ledger.upsert import upsert

_UPDATE = ["name", "expires_at", "source", "seen_at"]


def record_installs(
    session: Session, installs: Sequence[tuple[int, int]], now: dt.datetime
) -> None:
    """``(device_id, rollout_id)`` pairs whose install was acknowledged: one fact each."""
    if not installs:
        return
    rollouts = sorted({r for _, r in installs})
    profiles = {
        rid: (uuid, name, expires)
        for rid, uuid, name, expires in session.execute(
            select(RolloutRow.id, ProfileRow.uuid, ProfileRow.name, ProfileRow.expires_at)
            .join(ProfileRow, ProfileRow.uuid == RolloutRow.profile_uuid)
            .where(RolloutRow.id.in_(rollouts))
        )
    }
    rows = []
    for device_id, rollout_id in sorted(set(installs)):
        if rollout_id not in profiles:
            continue
        uuid, name, expires = profiles[rollout_id]
        rows.append(
            {
                "device_id": device_id,
                "profile_uuid": uuid,
                "name": name,
                "expires_at": expires,
                "source": "rollout",
                "seen_at": now,
            }
        )
    upsert(
        session,
        InstalledProfileRow.__table__,
        rows,
        keys=["device_id", "profile_uuid"],
        update=_UPDATE,
    )


def record_profile_lists(
    session: Session, lists: Sequence[tuple[int, Sequence[ProfileFact]]], now: dt.datetime
) -> None:
    """Replace what each device reported holding with its ProvisioningProfileList answer.

    Facts learned from devices (a list or an acknowledged install) that the new list no longer
    names are dropped; facts from an inventory import are kept, since a ``ManagedOnly`` list
    does not name unmanaged profiles.
    """
    for device_id, items in lists:
        listed = [item.uuid for item in items]
        session.execute(
            delete(InstalledProfileRow).where(
                InstalledProfileRow.device_id == device_id,
                InstalledProfileRow.source.in_(["rollout", "profile_list"]),
                InstalledProfileRow.profile_uuid.not_in(listed),
            )
        )
        upsert(
            session,
            InstalledProfileRow.__table__,
            [
                {
                    "device_id": device_id,
                    "profile_uuid": item.uuid,
                    "name": item.name,
                    "expires_at": item.expires_at,
                    "source": "profile_list",
                    "seen_at": now,
                }
                for item in items
            ],
            keys=["device_id", "profile_uuid"],
            update=_UPDATE,
        )


def record_removals(session: Session, removals: Sequence[tuple[int, str]]) -> None:
    """``(device_id, profile uuid)`` pairs a device acknowledged removing: the facts go."""
    for device_id, uuid in removals:
        session.execute(
            delete(InstalledProfileRow).where(
                InstalledProfileRow.device_id == device_id,
                InstalledProfileRow.profile_uuid == uuid.lower(),
            )
        )
