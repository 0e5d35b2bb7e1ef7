"""The operator API's profile routes: the library, and one profile with who holds it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from rollout.access import Role
from rollout.ledger import Ledger, ProfileEntry
from rollout.web.api_access import Access


def profile_json(p: ProfileEntry) -> dict[str, Any]:
    """A library profile as the API shows it (its own description and when it was added)."""
    return {**p.metadata, "added_at": p.added_at.isoformat()}


def profiles_router(ledger: Ledger, access: Access) -> APIRouter:
    """``/api/v1/profiles``: reads for viewers."""
    router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"])

    @router.get("")
    def list_(request: Request) -> list[dict[str, Any]]:
        """The library, soonest expiry first."""
        access.require(request, Role.VIEWER)
        with ledger.library() as store:
            return [profile_json(p) for p in store.profiles()]

    @router.get("/{uuid}")
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
