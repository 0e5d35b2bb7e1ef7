"""``/metrics``: the product's state for Prometheus, read when scraped.

What the ledger knows is read at each scrape from kept counters and small groupings (never a
scan of targets): rollouts by state, targets by rollout, stage and state for the rollouts that
are not finished (and the last finished ones), live alerts by kind and severity, and for each
held profile the seconds left before it expires and how many devices hold it. What this web
process did comes from its own counters: device reports stored by status, write batches (and
those a bad report split), refusals by reason, connections. Names follow Prometheus' rules:
``rollout_`` prefix, ``_total`` for counters, ``_seconds`` for times; no label names a device.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollout.access import Role
from rollout.clock import Clock
from rollout.ledger import Ledger
from rollout.states import RolloutState
from rollout.web.api_access import BEARER, REFUSALS, Access
from rollout.web.batcher import LedgerBatcher
from rollout.web.connections import ConnectionStats
from rollout.web.refusals import RefusalLog

FINISHED_SHOWN = 20
"""Finished rollouts whose targets are still exported (the most recent ones)."""
HORIZON = dt.timedelta(days=3650)
_LIVE = (RolloutState.DRAFT, RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)


class LedgerCollector(Collector):
    """Collects the product's figures at scrape time."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        batcher: LedgerBatcher,
        refusals: RefusalLog,
        connections: ConnectionStats,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.batcher = batcher
        self.refusals = refusals
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        yield from self._rollouts()
        yield from self._alerts()
        yield from self._profiles()
        yield from self._endpoint()

    def _rollouts(self) -> Iterator[Metric]:
        with self.ledger.rollouts() as store:
            by_state = store.by_state()
            recent = store.recent(limit=1000)
            shown = [r for r in recent if r.state in _LIVE]
            shown += [r for r in recent if r.state not in _LIVE][:FINISHED_SHOWN]
            counters = store.counters([r.id for r in shown])
        states = GaugeMetricFamily("rollout_rollouts", "Rollouts by state.", labels=["state"])
        for known in RolloutState:
            states.add_metric([known.value], by_state.get(known.value, 0))
        yield states
        targets = GaugeMetricFamily(
            "rollout_targets",
            "Targets of live (and recently finished) rollouts by stage and state.",
            labels=["rollout", "stage", "state"],
        )
        info = GaugeMetricFamily(
            "rollout_rollout_info",
            "A rollout's state and current stage (value 1).",
            labels=["rollout", "name", "state", "stage"],
        )
        for r in shown:
            info.add_metric([str(r.id), r.name, r.state, str(r.current_stage)], 1)
            for stage, per_state in sorted(counters.get(r.id, {}).items()):
                for target_state, n in sorted(per_state.items()):
                    targets.add_metric([str(r.id), str(stage), target_state], n)
        yield info
        yield targets

    def _alerts(self) -> Iterator[Metric]:
        with self.ledger.alerts() as store:
            live = store.live_counts()
        family = GaugeMetricFamily(
            "rollout_alerts_live", "Open or acknowledged alerts.", labels=["kind", "severity"]
        )
        for (kind, severity), n in sorted(live.items()):
            family.add_metric([kind, severity], n)
        yield family

    def _profiles(self) -> Iterator[Metric]:
        now = self.clock.now()
        with self.ledger.registry() as store:
            held = store.expiring(now + HORIZON)
        left = GaugeMetricFamily(
            "rollout_profile_expiry_seconds",
            "Seconds until a held provisioning profile expires (negative: expired).",
            labels=["profile", "name"],
        )
        holders = GaugeMetricFamily(
            "rollout_profile_holders", "Devices known to hold a profile.", labels=["profile"]
        )
        for h in held:
            left.add_metric([h.profile_uuid, h.name or ""], (h.expires_at - now).total_seconds())
            holders.add_metric([h.profile_uuid], h.devices)
        yield left
        yield holders

    def _endpoint(self) -> Iterator[Metric]:
        reports = CounterMetricFamily(
            "rollout_mdm_reports", "Device reports stored, by status.", labels=["status"]
        )
        for status, n in sorted(self.batcher.by_status.items()):
            reports.add_metric([status], n)
        yield reports
        yield CounterMetricFamily(
            "rollout_mdm_write_batches",
            "Group commits of device reports.",
            value=self.batcher.batches,
        )
        yield CounterMetricFamily(
            "rollout_mdm_split_batches",
            "Batches a bad report made fail, stored again report by report.",
            value=self.batcher.split_batches,
        )
        refused = CounterMetricFamily(
            "rollout_mdm_refusals",
            "Requests the MDM endpoints refused, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(self.refusals.counts().items()):
            refused.add_metric([reason], n)
        yield refused
        conn = self.connections.as_json()
        yield GaugeMetricFamily(
            "rollout_http_connections_open", "Open connections.", value=conn["open"]
        )
        yield CounterMetricFamily(
            "rollout_http_header_timeouts",
            "Connections closed for slow headers.",
            value=conn["header_timeouts"],
        )
        yield CounterMetricFamily(
            "rollout_http_refused_over_cap",
            "Connections refused over the cap.",
            value=conn["refused_over_cap"],
        )


def metrics_router(collector: LedgerCollector, access: Access) -> APIRouter:
    """``GET /metrics`` for a viewer's token (Prometheus' ``authorization`` setting)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    router = APIRouter(tags=["metrics"], dependencies=[BEARER], responses=REFUSALS)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        """The Prometheus text format."""
        access.require(request, Role.VIEWER)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
