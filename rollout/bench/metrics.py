"""Metrics benchmark: how long a Prometheus scrape of the web app's ``/metrics`` takes.

Set-up (not timed): a database of its own on the local PostgreSQL (dropped afterwards) holding
N rollouts of 100 targets each over a fleet of 10,000 devices (most rollouts completed, some
running, paused or halted, each in three stages with its kept counters), 50 profiles held by
the fleet and a few dozen live alerts; the web app served on a loopback port with a viewer
token, as Prometheus would scrape it.

Timed: ``SCRAPES`` ``GET /metrics`` after a warm-up, each a whole HTTP request over one kept
connection. ``p50_ms`` and ``p99_ms`` are the scrape's latency percentiles; ``series`` is how
many samples one scrape carries, ``bytes`` its size.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from rollout import access
from rollout.access import Role
from rollout.bench.measure import latency_figures
from rollout.bench.services import check_postgres, pg_admin_url, scratch_database
from rollout.clock import SYSTEM_CLOCK
from rollout.config import Settings
from rollout.inventory import read_inventory
from rollout.ledger import Ledger, NewAlert, NewRollout, NewStage, SeedDevice, SeedTarget
from rollout.profiles import parse_profile
from rollout.sim.profiles import make_apple_like_chain, make_profile
from rollout.states import RolloutState
from rollout.states import TargetState as T
from rollout.web.app import RolloutApp
from rollout.web.server import BackgroundServer

SCRAPES = 200
WARMUP = 10
SEED = 20_261_202
FLEET = 10_000
TARGETS = 100
PROFILES = 50
ALERTS = 40
TOPIC = "com.apple.mgmt.External.5e6f7a8b-0000-4000-8000-0000000fe7c5"
#: (rollout state, share) of the rollouts on record.
ROLLOUTS = (
    (RolloutState.COMPLETED, 0.94),
    (RolloutState.RUNNING, 0.04),
    (RolloutState.PAUSED, 0.01),
    (RolloutState.HALTED, 0.01),
)
#: Target states of a finished rollout and of a live one.
DONE = (T.ACKNOWLEDGED.value, T.VERIFIED.value, T.FAILED.value, T.TIMED_OUT.value)
LIVE = (T.PLANNED.value, T.QUEUED.value, T.PUSHED.value, T.ACKNOWLEDGED.value, T.FAILED.value)
REASONS = {T.FAILED.value: "MCInstallationErrorDomain:4001", T.TIMED_OUT.value: "no_answer"}


def seed_metrics_ledger(
    ledger: Ledger, rollouts: int, *, fleet: int = FLEET, profiles: int = PROFILES
) -> None:
    """Write the fleet, the held profiles, ``rollouts`` rollouts and the alerts."""
    rng = random.Random(SEED)
    now = SYSTEM_CLOCK.now()
    chain = make_apple_like_chain()
    uuids: list[str] = []
    with ledger.library() as library:
        for k in range(profiles):
            data = make_profile(
                chain,
                name=f"Metrics bench {k}",
                expires_at=now + dt.timedelta(days=5 + 7 * k),
            )
            profile = parse_profile(data, trust_anchors=chain.anchors)
            library.add(profile, data, now)
            uuids.append(profile.uuid)
    udids = [f"00008101-{i:016X}" for i in range(1, fleet + 1)]
    with ledger.bulk() as bulk:
        ids = bulk.devices(
            (SeedDevice(u, TOPIC, f"{i:064x}", f"m{i}") for i, u in enumerate(udids, 1)), now
        )
    rows = "udid,profiles\n" + "".join(f"{u},{uuids[i % profiles]}\n" for i, u in enumerate(udids))
    with ledger.registry() as registry:
        registry.import_devices(read_inventory(rows.encode(), fmt="csv").records, now)
    stages = tuple(NewStage(label) for label in ("1%", "10%", "100%"))
    for n in range(rollouts):
        state = _pick(rng, ROLLOUTS)
        with ledger.rollouts() as store:
            rollout_id = store.create(
                NewRollout(
                    name=f"renew {n}",
                    profile_uuid=uuids[n % profiles],
                    salt=f"s{n}",
                    stages=stages,
                    targets=(),
                ),
                now,
            )
            store.set_state(rollout_id, RolloutState.RUNNING.value, now)
            if state != RolloutState.RUNNING:
                store.set_state(rollout_id, state.value, now)
        mix = DONE if state == RolloutState.COMPLETED else LIVE
        with ledger.bulk() as bulk:
            bulk.targets(rollout_id, _targets(rng, ids, mix), now)
    with ledger.alerts() as store:
        store.raise_new(
            [
                NewAlert(f"bench-{k}", kind, "critical" if k % 3 == 0 else "warning", "bench")
                for k, kind in enumerate(
                    ("renewal.missing", "renewal.halted", "profile.expired", "renewal.incomplete")
                    * (ALERTS // 4)
                )
            ],
            now,
        )
    with ledger.bulk() as bulk:
        bulk.analyze()


def _pick(rng: random.Random, table: Any) -> Any:
    x = rng.random()
    for value, share in table:
        x -= share
        if x < 0:
            return value
    return table[-1][0]


def _targets(rng: random.Random, ids: list[int], mix: tuple[str, ...]) -> Iterator[SeedTarget]:
    for k, device_id in enumerate(rng.sample(ids, min(TARGETS, len(ids)))):
        state = rng.choice(mix)
        stage = 0 if k == 0 else 1 if k < 10 else 2
        yield SeedTarget(device_id, stage, state, REASONS.get(state), push_count=1)


def run_metrics_bench(
    size: int,
    *,
    postgres_admin: str | None = None,
    scrapes: int = SCRAPES,
    fleet: int = FLEET,
    profiles: int = PROFILES,
) -> dict[str, Any]:
    """Time ``scrapes`` scrapes of ``/metrics`` with ``size`` rollouts on record (over a
    ``fleet`` holding ``profiles`` profiles)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    admin = check_postgres(postgres_admin or pg_admin_url())
    with (
        scratch_database(admin, "rollout_bench_metrics") as url,
        tempfile.TemporaryDirectory(prefix="rollout-bench-metrics-") as home,
    ):
        ledger = Ledger.open(url)
        try:
            t0 = time.perf_counter()
            seed_metrics_ledger(ledger, size, fleet=fleet, profiles=profiles)
            seed_s = time.perf_counter() - t0
            token, _ = access.issue(
                ledger, "prometheus", Role.VIEWER, actor="bench", now=SYSTEM_CLOCK.now()
            )
            settings = Settings(home=Path(home), database_url=url)
            server = BackgroundServer(RolloutApp(ledger, settings)).start()
            try:
                times, body = _scrape(server.base_url, token, scrapes)
            finally:
                server.stop()
        finally:
            ledger.dispose()
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return {
        "bench": "metrics",
        "size": size,
        "metrics": {
            **latency_figures(times),
            "scrapes": scrapes,
            "series": series,
            "bytes": len(body.encode()),
            "backend": "postgresql",
            "cores": os.cpu_count(),
            "seed_seconds": round(seed_s, 1),
        },
    }


def _scrape(base_url: str, token: str, scrapes: int) -> tuple[list[float], str]:
    headers = {"Authorization": f"Bearer {token}"}
    times: list[float] = []
    body = ""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for k in range(WARMUP + scrapes):
            t = time.perf_counter()
            res = client.get("/metrics")
            elapsed = (time.perf_counter() - t) * 1000
            if res.status_code != 200:
                raise RuntimeError(f"/metrics answered {res.status_code}: {res.text[:200]}")
            if k >= WARMUP:
                times.append(elapsed)
            body = res.text
    return times, body
