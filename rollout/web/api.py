"""The operator API: its own router, mounted by the app beside the MDM endpoints.

Today it serves liveness and the MDM writer's counters (``/healthz``), and read-only views of
rollouts; the controls and the dashboard land here as they are built.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from rollout.ledger import Ledger
from rollout.operations import NotFoundError, list_rollouts, rollout_summary
from rollout.web.batcher import LedgerBatcher
from rollout.web.connections import ConnectionStats
from rollout.web.refusals import RefusalLog


def operator_router(
    ledger: Ledger, batcher: LedgerBatcher, refusals: RefusalLog, connections: ConnectionStats
) -> APIRouter:
    """The operator API's routes over ``ledger``."""
    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness; how much the MDM endpoints' ledger writer has done (and how many of its
        batches one bad report split); the refusals by reason; what the connection guards
        did."""
        by_reason = refusals.counts()
        return {
            "ok": True,
            "batches": batcher.batches,
            "reports": batcher.reports,
            "split_batches": batcher.split_batches,
            "write_cpu_s": round(batcher.write_cpu_s, 6),
            "write_wall_s": round(batcher.write_wall_s, 6),
            "refusals": {"total": sum(by_reason.values()), "by_reason": by_reason},
            "connections": connections.as_json(),
        }

    @router.get("/api/v1/rollouts", tags=["rollouts"])
    def rollouts() -> list[dict[str, Any]]:
        """Every rollout, newest first."""
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

    @router.get("/api/v1/rollouts/{rollout_id}", tags=["rollouts"])
    def rollout(rollout_id: int) -> dict[str, Any]:
        """A rollout and its targets by stage, state and reason."""
        try:
            return rollout_summary(ledger, rollout_id).as_json()
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    return router
