"""The operator API's profile routes: the library, and one profile with who holds it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from rollout.access import Role
from rollout.clock import Clock
from rollout.ledger import Ledger, ProfileEntry, RolloutInfo
from rollout.web.api_access import BEARER, NOT_FOUND, REFUSALS, Access


def profile_json(p: ProfileEntry) -> dict[str, Any]:
    """A library profile as the API shows it (its own description and when it was added)."""
    return {**p.metadata, "added_at": p.added_at.isoformat()}


CALENDAR_HORIZON = dt.timedelta(days=3650)


def profiles_router(ledger: Ledger, clock: Clock, access: Access) -> APIRouter:
    """``/api/v1/profiles`` and ``/api/v1/calendar``: reads for viewers."""
    router = APIRouter(
        prefix="/api/v1/profiles", tags=["profiles"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("/calendar")
    def calendar(request: Request) -> list[dict[str, Any]]:
        """Every profile devices hold, soonest expiry first: days left, how many devices hold
        it, and its latest renewal rollout (if any)."""
        access.require(request, Role.VIEWER)
        now = clock.now()
        with ledger.unit() as unit:
            held = unit.registry.expiring(now + CALENDAR_HORIZON)
            renewals: dict[str, RolloutInfo] = {}
            for found in unit.rollouts.renewing([h.profile_uuid for h in held]):
                renewals[found.replaces_uuid or ""] = found  # the latest wins (oldest first)
        out = []
        for h in held:
            r = renewals.get(h.profile_uuid)
            out.append(
                {
                    "profile": h.profile_uuid,
                    "name": h.name,
                    "app_id": h.app_id,
                    "expires_at": h.expires_at.isoformat(),
                    "days_left": (h.expires_at - now) // dt.timedelta(days=1),
                    "devices": h.devices,
                    "renewal": (
                        {"rollout": r.id, "state": r.state, "profile": r.profile_uuid}
                        if r
                        else None
                    ),
                }
            )
        return out

    @router.get("")
    def list_(request: Request) -> list[dict[str, Any]]:
        """The library, soonest expiry first."""
        access.require(request, Role.VIEWER)
        with ledger.library() as store:
            return [profile_json(p) for p in store.profiles()]

    @router.get("/{uuid}", responses=NOT_FOUND)
    def show(request: Request, uuid: str) -> dict[str, Any]:
        """One profile, with how many devices hold it (and the first of them) and the renewal
        rollouts that replace it."""
        access.require(request, Role.VIEWER)
        with ledger.unit() as unit:
            entry = unit.library.get(uuid.strip().lower()[:64])
            if entry is None:
                raise HTTPException(status_code=404, detail=f"no profile {uuid[:64]}")
            holders, sample = unit.registry.lacking(entry.uuid, None, sample=20)
            renewals = unit.rollouts.renewing([entry.uuid])
        return {
            **profile_json(entry),
            "held_by": {"devices": holders, "sample": sample},
            "renewals": [
                {"rollout": r.id, "state": r.state, "profile": r.profile_uuid} for r in renewals
            ],
        }

    return router
