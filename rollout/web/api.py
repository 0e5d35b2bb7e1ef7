"""The operator API: its own routers, mounted by the app beside the MDM endpoints.

``/healthz`` serves liveness and the MDM writer's counters; behind bearer tokens with roles
(``rollout.web.api_access``): ``/api/v1/rollouts`` reads, plans, creates and controls rollouts,
``/api/v1/alerts`` lists, acknowledges and resolves alerts, ``/api/v1/profiles`` reads the
library (and takes a profile file from an admin), ``/api/v1/devices`` reads the registry,
``/api/v1/tokens`` manages API tokens (admins). Every answer has its model
(``rollout.web.api_models``) in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from cryptography import x509
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from prometheus_client.registry import Collector

from rollout.access import Role
from rollout.alerts import AlertPolicy
from rollout.clock import Clock
from rollout.ledger import Ledger
from rollout.oidc import KeyStore, OidcConfig, Verifier
from rollout.oidc_fetch import JwksFetcher
from rollout.web.api_access import BEARER, REFUSALS, Access
from rollout.web.api_alerts import alerts_router
from rollout.web.api_devices import devices_router
from rollout.web.api_events import events_router
from rollout.web.api_models import WhoAmI
from rollout.web.api_profiles import profiles_router
from rollout.web.api_rollouts import rollouts_router
from rollout.web.api_tokens import tokens_router
from rollout.web.batcher import LedgerBatcher
from rollout.web.connections import ConnectionStats
from rollout.web.metrics import LedgerCollector, metrics_router
from rollout.web.refusals import RefusalLog


def operator_router(
    ledger: Ledger,
    batcher: LedgerBatcher,
    refusals: RefusalLog,
    connections: ConnectionStats,
    *,
    clock: Clock,
    api_token: str,
    token_pepper: str = "",
    alert_policy: AlertPolicy | None = None,
    oidc: OidcConfig | None = None,
    metrics: Sequence[Collector] = (),
    trust_anchors: Sequence[x509.Certificate] = (),
    server_wakes: bool = False,
) -> APIRouter:
    """The operator API's routes over ``ledger``, behind bearer tokens with roles
    (``api_token`` is one more, with the admin role; with ``oidc``, the identity provider's
    JWTs too)."""
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

    verifier = None
    if oidc is not None:
        keys = KeyStore(JwksFetcher(oidc.issuer, oidc.jwks_url), clock)
        verifier = Verifier(oidc, keys, clock)
    access = Access(ledger, clock, bootstrap=api_token, pepper=token_pepper, oidc=verifier)

    page = (resources.files("rollout.web") / "static" / "dashboard.html").read_bytes()

    @router.get("/", tags=["dashboard"], response_class=HTMLResponse)
    def dashboard() -> HTMLResponse:
        """The dashboard: one page that reads the API with the token it is given."""
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/api/v1/whoami",
        tags=["access"],
        dependencies=[BEARER],
        responses=REFUSALS,
        response_model=WhoAmI,
    )
    def whoami(request: Request) -> dict[str, str]:
        """The caller's token name (``oidc:<name>`` for an OIDC token) and role (what a page
        shows, and which controls)."""
        actor = access.require(request, Role.VIEWER)
        return {"actor": actor, "role": access.role_of(request).name.lower()}

    router.include_router(rollouts_router(ledger, clock, access, server_wakes=server_wakes))
    router.include_router(alerts_router(ledger, clock, access, alert_policy or AlertPolicy()))
    router.include_router(profiles_router(ledger, clock, access, trust_anchors=trust_anchors))
    router.include_router(events_router(ledger, access))
    router.include_router(devices_router(ledger, access))
    router.include_router(tokens_router(ledger, clock, access, pepper=token_pepper))
    collector = LedgerCollector(ledger, clock, batcher, refusals, connections)
    router.include_router(metrics_router(collector, access, metrics))
    return router
