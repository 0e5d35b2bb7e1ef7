"""The operator API: its own routers, mounted by the app beside the MDM endpoints.

``/healthz`` serves liveness and the MDM writer's counters; ``/api/v1/rollouts`` reads rollouts
and, with the API token, plans, creates and controls them (``rollout.web.api_rollouts``). The
dashboard lands here as it is built.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rollout.clock import Clock
from rollout.ledger import Ledger
from rollout.web.api_rollouts import rollouts_router
from rollout.web.batcher import LedgerBatcher
from rollout.web.connections import ConnectionStats
from rollout.web.refusals import RefusalLog


def operator_router(
    ledger: Ledger,
    batcher: LedgerBatcher,
    refusals: RefusalLog,
    connections: ConnectionStats,
    *,
    clock: Clock,
    api_token: str,
) -> APIRouter:
    """The operator API's routes over ``ledger``; its write routes need ``api_token``."""
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

    router.include_router(rollouts_router(ledger, clock, api_token))
    return router
