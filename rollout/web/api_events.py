"""The operator API's journal route: events, newest first, a page at a time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from rollout.access import Role
from rollout.ledger import Ledger
from rollout.web.api_access import BEARER, REFUSALS, Access


def events_router(ledger: Ledger, access: Access) -> APIRouter:
    """``GET /api/v1/events`` for viewers."""
    router = APIRouter(
        prefix="/api/v1/events", tags=["events"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("")
    def events(
        request: Request,
        kind: str | None = None,
        rollout: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """The journal, newest first: every result, refusal, control and alert; ``kind`` and
        ``rollout`` filter, ``before`` (an event id; ``next`` of the previous page) pages
        back."""
        access.require(request, Role.VIEWER)
        if not 1 <= limit <= 1000:
            raise HTTPException(status_code=422, detail="limit: 1 to 1000")
        for name, value in (("rollout", rollout), ("before", before)):
            if value is not None and not 0 < value < 2**63:
                raise HTTPException(status_code=422, detail=f"{name}: a positive id")
        with ledger.rollouts() as store:
            found = store.events(
                kind=kind[:48] if kind else None, rollout_id=rollout, limit=limit, before_id=before
            )
        items = [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "kind": e.kind,
                "rollout": e.rollout_id,
                "device": e.enrollment_id,
                "command": e.command_uuid,
                "data": e.data,
            }
            for e in found
        ]
        return {"items": items, "next": found[-1].id if len(found) == limit else None}

    return router
