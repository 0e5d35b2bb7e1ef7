"""The operator API's journal route: events, newest first, a page at a time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from rollout.access import Role
from rollout.ledger import Ledger
from rollout.web.api_access import BEARER, REFUSALS, Access
from rollout.web.api_models import INVALID, EventPage

PositiveId = Annotated[int | None, Query(gt=0, lt=2**63)]


def events_router(ledger: Ledger, access: Access) -> APIRouter:
    """``GET /api/v1/events`` for viewers."""
    router = APIRouter(
        prefix="/api/v1/events", tags=["events"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("", response_model=EventPage, responses=INVALID)
    def events(
        request: Request,
        kind: str | None = None,
        rollout: PositiveId = None,
        before: PositiveId = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The journal, newest first: every result, refusal, control and alert; ``kind`` and
        ``rollout`` filter, ``before`` (an event id; ``next`` of the previous page) pages
        back."""
        access.require(request, Role.VIEWER)
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
