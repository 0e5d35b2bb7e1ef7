"""``/metrics``: the product's state for Prometheus, read when scraped.

What the ledger knows is read at each scrape from kept counters and small groupings (never a
scan of targets): rollouts by state, targets by rollout, stage and state for the rollouts that
are not finished (and the last finished ones), live alerts by kind and severity, and for each
held profile the seconds left before it expires and how many devices hold it (the holders are
counted again at most once a minute: that groups the fleet's inventory). What this web
process did comes from its own counters: device reports stored by status, write batches (and
those a bad report split), refusals by reason, connections. Names follow Prometheus' rules:
``rollout_`` prefix, ``_total`` for counters, ``_seconds`` for times; no label names a device.
The MDM latency histogram, the Celery queues' depth and the push certificate's expiry are
served beside these (``rollout.web.service_metrics``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollout.access import Role
from rollout.clock import Clock
from rollout.gates import judge
from rollout.ledger import Holding, Ledger, StageInfo
from rollout.spec import Gate
from rollout.states import RolloutState
from rollout.web.api_access import BEARER, REFUSALS, Access
from rollout.web.batcher import LedgerBatcher
from rollout.web.connections import ConnectionStats
from rollout.web.refusals import RefusalLog

FINISHED_SHOWN = 20
"""Finished rollouts whose targets are still exported (the most recent ones)."""
HORIZON = dt.timedelta(days=3650)
HOLDINGS_TTL = dt.timedelta(seconds=60)
"""How long the held profiles and their holder counts are reused between scrapes (the seconds
to expiry are computed afresh at each scrape)."""
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
        self._held: tuple[dt.datetime, list[Holding]] | None = None

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        yield from self._rollouts()
        yield from self._alerts()
        yield from self._profiles()
        yield from self._endpoint()

    def _rollouts(self) -> Iterator[Metric]:
        with self.ledger.rollouts() as store:
            by_state = store.by_state()
            live, finished = store.in_states([s.value for s in _LIVE], others=FINISHED_SHOWN)
            shown = live + finished
            counters = store.counters([r.id for r in shown])
            judged = [r.id for r in live if r.state != RolloutState.DRAFT]
            current = store.current_stages(judged)
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
        yield from self._gates(current, counters)

    def _gates(
        self, current: dict[int, StageInfo], counters: dict[int, dict[int, dict[str, int]]]
    ) -> Iterator[Metric]:
        """The verdict of each started rollout's gate on its current stage, judged now."""
        now = self.clock.now()
        verdicts = GaugeMetricFamily(
            "rollout_gate_verdict",
            "The gate's verdict on a live rollout's current stage (value 1; verdict is pass, "
            "wait or fail).",
            labels=["rollout", "stage", "verdict"],
        )
        rates = GaugeMetricFamily(
            "rollout_gate_success_rate",
            "Succeeded / (succeeded + failed) of a live rollout's current stage (1 before any "
            "answer).",
            labels=["rollout", "stage"],
        )
        for rollout_id, stage in sorted(current.items()):
            counts = counters.get(rollout_id, {}).get(stage.number, {})
            verdict = judge(Gate.from_json(stage.gate), counts, stage.started_at, now)
            labels = [str(rollout_id), str(stage.number)]
            verdicts.add_metric([*labels, verdict.kind], 1)
            rates.add_metric(labels, float(verdict.figures["success_rate"]))
        yield verdicts
        yield rates

    def _alerts(self) -> Iterator[Metric]:
        with self.ledger.alerts() as store:
            live = store.live_counts()
        family = GaugeMetricFamily(
            "rollout_alerts_live", "Open or acknowledged alerts.", labels=["kind", "severity"]
        )
        for (kind, severity), n in sorted(live.items()):
            family.add_metric([kind, severity], n)
        yield family

    def _holdings(self, now: dt.datetime) -> list[Holding]:
        """Held profiles, read again at most every :data:`HOLDINGS_TTL` (counting holders
        groups the fleet's installed profiles: not a read for every scrape)."""
        if self._held is None or now - self._held[0] >= HOLDINGS_TTL or now < self._held[0]:
            with self.ledger.registry() as store:
                self._held = (now, store.expiring(now + HORIZON))
        return self._held[1]

    def _profiles(self) -> Iterator[Metric]:
        now = self.clock.now()
        held = self._holdings(now)
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


def metrics_router(
    collector: LedgerCollector, access: Access, extra: Sequence[Collector] = ()
) -> APIRouter:
    """``GET /metrics`` for a viewer's token (Prometheus' ``authorization`` setting);
    ``extra`` collectors are served beside the ledger's (see ``rollout.web.service_metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    for more in extra:
        registry.register(more)
    # the refusals are JSON, whatever the route's own answer is
    refusals = {
        code: {"description": r["description"], "content": {"application/json": {}}, **r}
        for code, r in REFUSALS.items()
    }
    router = APIRouter(tags=["metrics"], dependencies=[BEARER], responses=refusals)

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus' text exposition format."}},
    )
    def metrics(request: Request) -> Response:
        """The Prometheus text format."""
        access.require(request, Role.VIEWER)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
