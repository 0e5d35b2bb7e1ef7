"""The operator API's rollout routes: read rollouts, plan and create them from a spec, and the
controls (start, pause, resume, abort, approve, retry).

Every route calls the same operations the CLI calls (``rollout.operations``); this module maps
HTTP onto them and their errors onto status codes: a spec that is invalid or a rollout that must
not happen is 422, an unknown rollout 404, a control the rollout's state does not allow 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from rollout.access import Role
from rollout.clock import Clock
from rollout.ledger import Ledger
from rollout.operations import (
    NotFoundError,
    OperationError,
    abort_rollout,
    approve_stage,
    create_rollout,
    list_rollouts,
    pause_rollout,
    plan_rollout,
    resume_rollout,
    retry_targets,
    rollout_report,
    start_rollout,
)
from rollout.planning import PlanningError
from rollout.spec import RolloutSpec, SpecError, spec_from_mapping
from rollout.web.api_access import (
    BAD_BODY,
    BEARER,
    CONFLICT,
    NOT_FOUND,
    REFUSALS,
    Access,
    json_object,
)
from rollout.web.api_models import (
    INVALID,
    SPEC_BODY,
    ControlOut,
    PlanOut,
    RolloutDevicePage,
    RolloutListed,
    RolloutReport,
    RolloutSummaryOut,
)

T = TypeVar("T")
CONTROL = {**NOT_FOUND, **CONFLICT, **INVALID}


def rollouts_router(
    ledger: Ledger, clock: Clock, access: Access, *, server_wakes: bool = False
) -> APIRouter:
    """The ``/api/v1/rollouts`` routes over ``ledger``: reads for viewers, the rest for
    operators (``server_wakes``: the MDM server rollout delivers through wakes the devices,
    for planning)."""
    router = APIRouter(
        prefix="/api/v1/rollouts", tags=["rollouts"], dependencies=[BEARER], responses=REFUSALS
    )

    async def allowed(request: Request, need: Role) -> str:
        return await run_in_threadpool(access.require, request, need)

    @router.get("", response_model=list[RolloutListed])
    def rollouts(request: Request) -> list[dict[str, Any]]:
        """Every rollout, newest first."""
        access.require(request, Role.VIEWER)
        return [
            {
                "id": r.id,
                "name": r.name,
                "state": r.state,
                "profile": r.profile_uuid,
                "created_at": r.created_at.isoformat(),
            }
            for r in list_rollouts(ledger)
        ]

    @router.get("/{rollout_id}", response_model=RolloutReport, responses={**NOT_FOUND, **INVALID})
    def rollout(request: Request, rollout_id: int) -> dict[str, Any]:
        """A rollout: its targets by state and reason, each stage with its counts and its gate's
        verdict now (what ``rollout rollouts show --json`` prints)."""
        access.require(request, Role.VIEWER)
        return _answer(lambda: rollout_report(ledger, rollout_id, clock.now()))

    @router.get(
        "/{rollout_id}/devices",
        response_model=RolloutDevicePage,
        responses={**NOT_FOUND, **INVALID},
    )
    def devices(
        request: Request,
        rollout_id: int,
        state: str | None = None,
        reason: str | None = None,
        after: Annotated[int, Query(ge=0, lt=2**63)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The rollout's devices, a page at a time (``next`` is the ``after`` of the next
        page, null on the last): each with its state, stage, reason, pushes and error chain;
        ``state`` (comma-separated) and ``reason`` (a prefix, e.g. an error code) filter."""
        access.require(request, Role.VIEWER)
        states = [s.strip() for s in state.split(",") if s.strip()] if state else None
        with ledger.rollouts() as store:
            if not 0 < rollout_id < 2**63 or store.get(rollout_id) is None:
                raise HTTPException(status_code=404, detail=f"no rollout {rollout_id}")
            page = store.target_page(
                rollout_id, after_id=after, limit=limit, states=states, reason_prefix=reason
            )
        items = [
            {
                "target": t.id,
                "device": key,
                "stage": t.stage,
                "state": t.state,
                "reason": t.reason,
                "pushes": t.push_count,
                "notnow": t.notnow_count,
                "error_chain": t.error_chain,
            }
            for t, key in page
        ]
        return {"items": items, "next": page[-1][0].id if len(page) == limit else None}

    @router.post(
        "/plan",
        response_model=PlanOut,
        responses={**BAD_BODY, **INVALID},
        openapi_extra={"requestBody": SPEC_BODY},
    )
    async def plan(request: Request) -> dict[str, Any]:
        """A dry run of the spec in the body: per stage how many devices, per exclusion reason
        how many. Writes nothing."""
        await allowed(request, Role.OPERATOR)
        spec = _spec(await json_object(request))
        planned = await run_in_threadpool(
            _refusing, lambda: plan_rollout(ledger, spec, clock.now(), server_wakes=server_wakes)
        )
        return planned.as_json()

    @router.post(
        "",
        status_code=201,
        response_model=RolloutSummaryOut,
        responses={**BAD_BODY, **INVALID},
        openapi_extra={"requestBody": SPEC_BODY},
    )
    async def create(request: Request, response: Response, start: bool = False) -> dict[str, Any]:
        """Plan and write a rollout of the spec in the body: a draft, or running with
        ``?start=true``."""
        actor = await allowed(request, Role.OPERATOR)
        spec = _spec(await json_object(request))
        summary = await run_in_threadpool(
            _refusing,
            lambda: create_rollout(
                ledger, spec, actor=actor, now=clock.now(), start=start, server_wakes=server_wakes
            ),
        )
        response.headers["Location"] = f"/api/v1/rollouts/{summary.rollout.id}"
        return summary.as_json()

    async def control(
        request: Request, rollout_id: int, action: Callable[[str], object]
    ) -> dict[str, Any]:
        actor = await allowed(request, Role.OPERATOR)
        result = await run_in_threadpool(_answer, lambda: action(actor))
        report = await run_in_threadpool(rollout_report, ledger, rollout_id, clock.now())
        return {"done": result is not False, "result": result, **report}

    @router.post("/{rollout_id}/start", response_model=ControlOut, responses=CONTROL)
    async def start_(request: Request, rollout_id: int) -> dict[str, Any]:
        """Start a draft rollout."""
        return await control(
            request,
            rollout_id,
            lambda actor: start_rollout(ledger, rollout_id, actor=actor, now=clock.now()),
        )

    @router.post("/{rollout_id}/pause", response_model=ControlOut, responses=CONTROL)
    async def pause(request: Request, rollout_id: int) -> dict[str, Any]:
        """Push nothing more until resumed (``done`` is false when it was paused already)."""
        return await control(
            request,
            rollout_id,
            lambda actor: pause_rollout(ledger, rollout_id, actor=actor, now=clock.now()),
        )

    @router.post("/{rollout_id}/resume", response_model=ControlOut, responses=CONTROL)
    async def resume(request: Request, rollout_id: int, override: bool = False) -> dict[str, Any]:
        """Go on after a pause; a rollout its gate halted needs ``?override=true``."""
        return await control(
            request,
            rollout_id,
            lambda actor: resume_rollout(
                ledger, rollout_id, actor=actor, now=clock.now(), override=override
            ),
        )

    @router.post("/{rollout_id}/abort", response_model=ControlOut, responses=CONTROL)
    async def abort(request: Request, rollout_id: int) -> dict[str, Any]:
        """Stop for good: undelivered commands are cancelled and never served."""
        return await control(
            request,
            rollout_id,
            lambda actor: abort_rollout(ledger, rollout_id, actor=actor, now=clock.now()),
        )

    @router.post("/{rollout_id}/approve", response_model=ControlOut, responses=CONTROL)
    async def approve(request: Request, rollout_id: int) -> dict[str, Any]:
        """Promote a stage that passed its gate and waits for approval (``result``: the stage
        opened)."""
        return await control(
            request,
            rollout_id,
            lambda actor: approve_stage(ledger, rollout_id, actor=actor, now=clock.now()),
        )

    @router.post(
        "/{rollout_id}/retry", response_model=ControlOut, responses={**CONTROL, **BAD_BODY}
    )
    async def retry(request: Request, rollout_id: int) -> dict[str, Any]:
        """Queue failed and timed-out targets again; a body ``{"reasons": [...]}`` keeps only
        those that ended for one of them (``result``: how many)."""
        body = await json_object(request, required=False)
        reasons = body.get("reasons")
        unknown = sorted(set(body) - {"reasons"})
        if unknown or (
            reasons is not None
            and not (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons))
        ):
            raise HTTPException(
                status_code=422, detail='the body is {"reasons": [text, ...]} or empty'
            )
        return await control(
            request,
            rollout_id,
            lambda actor: retry_targets(
                ledger,
                rollout_id,
                actor=actor,
                now=clock.now(),
                reasons=tuple(reasons or ()) or None,
            ),
        )

    return router


def _spec(data: dict[str, Any]) -> RolloutSpec:
    try:
        return spec_from_mapping(data)
    except SpecError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


def _refusing(action: Callable[[], T]) -> T:
    """``action()``, a rollout that must not happen answering 422 with the reason."""
    try:
        return action()
    except (OperationError, PlanningError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


def _answer(action: Callable[[], T]) -> T:
    """``action()`` on one rollout: 404 when there is no such rollout, 409 when its state does
    not allow what is asked."""
    try:
        return action()
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except OperationError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
