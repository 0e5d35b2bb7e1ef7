"""Status benchmark: latency of a rollout's detail read on PostgreSQL.

Set-up (not timed): a database of its own on the local PostgreSQL (dropped afterwards), N
devices and a three-stage rollout of N targets in a mid-flight state mix (most acknowledged,
some still planned, queued, pushed, delivered or deferred, some failed, unreachable, timed out,
ineligible or cancelled, each side exit with realistic reasons), written with ``COPY``, its kept
counters set through the ledger API from the same mix, and the tables analysed.

Timed: ``READS`` calls of the rollout store's ``summary``, each in its own
transaction as the API and the dashboard do, after a warm-up. ``p50_ms`` and ``p99_ms`` are the
read's latency percentiles. Then the rollout's devices page (the store's ``target_page``, 100
devices, as ``GET /api/v1/rollouts/{id}/devices`` reads it) for each shape in :data:`PAGES`,
``READS`` pages each starting at a random point of the rollout: ``pages`` has their
percentiles.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

from rollout.bench.measure import latency_figures, percentile
from rollout.bench.services import check_postgres, pg_admin_url, scratch_database
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, NewRollout, NewStage, RolloutSummary, SeedDevice, SeedTarget
from rollout.profiles import parse_profile
from rollout.sim.profiles import make_apple_like_chain, make_profile
from rollout.states import RolloutState
from rollout.states import TargetState as T

READS = 500
WARMUP = 25
SEED = 20_240_611
TOPIC = "com.apple.mgmt.External.5e6f7a8b-0000-4000-8000-00000000517a"

#: (state, share, reasons) for a rollout some way through its last stage.
MIX: tuple[tuple[str, float, tuple[str | None, ...]], ...] = (
    (T.ACKNOWLEDGED.value, 0.60, (None,)),
    (T.VERIFIED.value, 0.05, (None,)),
    (T.PLANNED.value, 0.05, (None,)),
    (T.QUEUED.value, 0.02, (None,)),
    (T.PUSHED.value, 0.07, (None,)),
    (T.DELIVERED.value, 0.03, (None,)),
    (T.DEFERRED.value, 0.03, (None,)),
    (T.FAILED.value, 0.03, ("MCInstallationErrorDomain:4001", "MDMErrorDomain:12021")),
    (T.UNREACHABLE.value, 0.04, ("token_dead", "no_token", "checked_out", "apns:BadDeviceToken")),
    (T.TIMED_OUT.value, 0.04, ("no_answer", "notnow_limit")),
    (T.INELIGIBLE.value, 0.03, ("platform", "os_version", "not_provisioned")),
    (T.CANCELLED.value, 0.01, (None,)),
)
#: Devices-page shapes timed: (name, states, reason prefix).
PAGES: tuple[tuple[str, tuple[str, ...] | None, str | None], ...] = (
    ("all", None, None),
    ("acknowledged", (T.ACKNOWLEDGED.value,), None),
    ("failed", (T.FAILED.value,), None),
    ("side_exits", (T.FAILED.value, T.UNREACHABLE.value, T.TIMED_OUT.value), None),
    ("unreachable_apns", (T.UNREACHABLE.value,), "apns:"),
)
PAGE_SIZE = 100
#: Stage of a target: canary 1 %, then 9 %, then the rest.
STAGES = ((0, 0.01), (1, 0.09), (2, 0.90))


def _pick(rng: random.Random, table: Any) -> Any:
    x = rng.random()
    for row in table:
        x -= row[1]
        if x < 0:
            return row
    return table[-1]


def seed_status_rollout(ledger: Ledger, size: int) -> int:
    """Write ``size`` devices and one running rollout of them in :data:`MIX`; its id.

    Loaded in bulk through the ledger (``COPY`` on PostgreSQL), the kept counters moved with
    the targets, and the statistics refreshed.
    """
    rng = random.Random(SEED)
    now = SYSTEM_CLOCK.now()
    chain = make_apple_like_chain()
    data = make_profile(chain, name="Status bench")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    with ledger.library() as library:
        library.add(profile, data, now)
    with ledger.bulk() as bulk:
        ids = bulk.devices(
            (
                SeedDevice(f"00008101-{i:016X}", TOPIC, f"{i:064x}", f"m{i}")
                for i in range(1, size + 1)
            ),
            now,
        )
    with ledger.rollouts() as store:
        rollout_id = store.create(
            NewRollout(
                name="status bench",
                profile_uuid=profile.uuid,
                salt="bench",
                stages=tuple(NewStage(f"{edge:.0%}") for _, edge in _cumulative(STAGES)),
                targets=(),
            ),
            now,
        )
        store.set_state(rollout_id, RolloutState.RUNNING.value, now)

    def targets() -> Iterator[SeedTarget]:
        for device_id in ids:
            state, _, reasons = _pick(rng, MIX)
            stage = _pick(rng, STAGES)[0]
            yield SeedTarget(device_id, stage, state, rng.choice(reasons), push_count=1)

    with ledger.bulk() as bulk:
        bulk.targets(rollout_id, targets(), now)
        bulk.analyze()
    return rollout_id


def _cumulative(stages: tuple[tuple[int, float], ...]) -> list[tuple[int, float]]:
    out, total = [], 0.0
    for stage, share in stages:
        total += share
        out.append((stage, min(1.0, round(total, 6))))
    return out


def run_status_bench(
    size: int, *, postgres_admin: str | None = None, reads: int = READS
) -> dict[str, Any]:
    """Time ``reads`` detail reads of a rollout of ``size`` targets; the bench's JSON object."""
    if size < 1:
        raise ValueError("size must be >= 1")
    admin = check_postgres(postgres_admin or pg_admin_url())
    with scratch_database(admin, "rollout_bench_status") as url:
        ledger = Ledger.open(url)
        try:
            t0 = time.perf_counter()
            rollout_id = seed_status_rollout(ledger, size)
            seed_s = time.perf_counter() - t0
            summary: RolloutSummary | None = None
            for _ in range(WARMUP):
                with ledger.rollouts() as store:
                    summary = store.summary(rollout_id)
            times: list[float] = []
            for _ in range(reads):
                t = time.perf_counter()
                with ledger.rollouts() as store:
                    summary = store.summary(rollout_id)
                times.append((time.perf_counter() - t) * 1000)
            pages = _time_pages(ledger, rollout_id, size, reads)
        finally:
            ledger.dispose()
    assert summary is not None
    counted = sum(summary.states.values())
    if counted != size:
        raise RuntimeError(f"the summary counts {counted} targets, not {size}")
    return {
        "bench": "status",
        "size": size,
        "metrics": {
            **latency_figures(times),
            "reads": reads,
            "states": summary.states,
            "backend": "postgresql",
            "cores": os.cpu_count(),
            "seed_seconds": round(seed_s, 1),
            "pages": pages,
        },
    }


def _time_pages(ledger: Ledger, rollout_id: int, size: int, reads: int) -> dict[str, Any]:
    """Percentiles of devices pages of each :data:`PAGES` shape, from random starting points."""
    rng = random.Random(SEED + 1)
    with ledger.rollouts() as store:
        first = store.target_page(rollout_id, limit=1)
    low = first[0][0].id - 1 if first else 0
    out: dict[str, Any] = {}
    for name, states, reason in PAGES:
        times: list[float] = []
        rows = 0
        for i in range(WARMUP + reads):
            after = low + rng.randrange(size)
            t = time.perf_counter()
            with ledger.rollouts() as store:
                page = store.target_page(
                    rollout_id,
                    after_id=after,
                    limit=PAGE_SIZE,
                    states=states,
                    reason_prefix=reason,
                )
            if i >= WARMUP:
                times.append((time.perf_counter() - t) * 1000)
                rows += len(page)
        out[name] = {
            "p50_ms": round(percentile(times, 0.50), 3),
            "p99_ms": round(percentile(times, 0.99), 3),
            "rows_per_page": round(rows / reads, 1),
        }
    return out
