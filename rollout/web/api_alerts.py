"""The operator API's alert routes: list them, acknowledge one, resolve one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from rollout import alerts
from rollout.access import Role
from rollout.alerts import AlertPolicy
from rollout.clock import Clock
from rollout.ledger import AlertInfo, Ledger
from rollout.web.api_access import BEARER, CONFLICT, NOT_FOUND, REFUSALS, Access
from rollout.web.api_models import INVALID, AlertOut


def alerts_router(ledger: Ledger, clock: Clock, access: Access, policy: AlertPolicy) -> APIRouter:
    """``/api/v1/alerts``: reads for viewers, acknowledge and resolve for operators."""
    router = APIRouter(
        prefix="/api/v1/alerts", tags=["alerts"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("", response_model=list[AlertOut], responses=INVALID)
    def list_(
        request: Request, state: str = "live", limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> list[dict[str, Any]]:
        """Alerts, newest first: ``state`` live (open or acknowledged, the default), open,
        acknowledged, resolved or all; at most ``limit`` (1 to 1000)."""
        access.require(request, Role.VIEWER)
        wanted = {"live": alerts.LIVE_STATES, "all": None}.get(state, (state,))
        if wanted is not None and not set(wanted) <= set(alerts.STATES):
            raise HTTPException(status_code=422, detail=f"state: {state!r} is not an alert state")
        with ledger.alerts() as store:
            return [alerts.as_json(a) for a in store.alerts(states=wanted, limit=limit)]

    async def change(request: Request, alert_id: int, resolve: bool) -> dict[str, Any]:
        actor = await run_in_threadpool(access.require, request, Role.OPERATOR)

        def act() -> AlertInfo:
            if resolve:
                return alerts.resolve(ledger, alert_id, actor=actor, now=clock.now(), policy=policy)
            return alerts.acknowledge(ledger, alert_id, actor=actor, now=clock.now())

        try:
            return alerts.as_json(await run_in_threadpool(act))
        except alerts.AlertError as exc:
            status = 404 if str(exc).startswith("no alert") else 409
            raise HTTPException(status_code=status, detail=str(exc)) from None

    @router.post(
        "/{alert_id}/ack", response_model=AlertOut, responses={**NOT_FOUND, **CONFLICT, **INVALID}
    )
    async def ack(request: Request, alert_id: int) -> dict[str, Any]:
        """Acknowledge a live alert: not sent again unless it escalates."""
        return await change(request, alert_id, resolve=False)

    @router.post(
        "/{alert_id}/resolve",
        response_model=AlertOut,
        responses={**NOT_FOUND, **CONFLICT, **INVALID},
    )
    async def resolve(request: Request, alert_id: int) -> dict[str, Any]:
        """Resolve a live alert (raised again by a later scan if still true)."""
        return await change(request, alert_id, resolve=True)

    return router
