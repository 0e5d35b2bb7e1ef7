"""Status benchmark: latency of a rollout's detail read on PostgreSQL.

Set-up (not timed): a database of its own on the local PostgreSQL (dropped afterwards), N
devices and a three-stage rollout of N targets in a mid-flight state mix (most acknowledged,
some still planned, queued, pushed, delivered or deferred, some failed, unreachable, timed out,
ineligible or cancelled, each side exit with realistic reasons), written with ``COPY``, its kept
counters set through the ledger API from the same mix, and the tables analysed.

Timed: ``READS`` calls of :func:`rollout.ledger.reports.rollout_summary`, each in its own
transaction as the API and the dashboard do, after a warm-up. ``p50_ms`` and ``p99_ms`` are the
read's latency percentiles.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import time
from collections import Counter
from typing import Any

from sqlalchemy import Engine, text

from rollout.bench.services import check_postgres, pg_admin_url, scratch_database
from rollout.ledger import db
from rollout.ledger.models import ProfileRow
from rollout.ledger.reports import rollout_summary
from rollout.ledger.rollouts import create_rollout, start_rollout
from rollout.ledger.targets import bump_counters, init_counters
from rollout.ledger.types import utcnow
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
#: Stage of a target: canary 1 %, then 9 %, then the rest.
STAGES = ((0, 0.01), (1, 0.09), (2, 0.90))


def _pick(rng: random.Random, table: Any) -> Any:
    x = rng.random()
    for row in table:
        x -= row[1]
        if x < 0:
            return row
    return table[-1]


def seed_status_rollout(engine: Engine, size: int) -> int:
    """Write ``size`` devices and one running rollout of them in :data:`MIX`; its id."""
    rng = random.Random(SEED)
    now = utcnow()
    with db.transaction(engine) as session:
        session.add(
            ProfileRow(
                uuid="5e6f7a8b-0000-4000-8000-00000000517a",
                sha256="5" * 64,
                name="Status bench",
                kind="enterprise",
                created_at=now,
                expires_at=now + dt.timedelta(days=365),
                signature_valid=True,
                chain_trusted=True,
                size=1,
                content=b"0",
            )
        )
        session.flush()
        rollout = create_rollout(
            session,
            name="status bench",
            profile_uuid="5e6f7a8b-0000-4000-8000-00000000517a",
            device_ids=[],
        )
        init_counters(session, rollout.id, [1, 2])
        start_rollout(session, rollout.id)
        rollout_id = rollout.id

    tally: Counter[tuple[int, int, str]] = Counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(
            "COPY devices (id, enrollment_id, udid, enrollment_type, enrollment_state, topic,"
            " push_token, push_magic, token_state, tags, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(1, size + 1):
                key = f"00008101-{i:016X}"
                copy.write_row(
                    (i, key, key, "device", "enrolled", TOPIC, f"{i:064x}", f"m{i}", "active",
                     "[]", now, now)
                )  # fmt: skip
        with cur.copy(
            "COPY targets (rollout_id, device_id, stage, state, reason, push_count, notnow_count,"
            " requeue_after_token_update, updated_at) FROM STDIN"
        ) as copy:
            for i in range(1, size + 1):
                state, _, reasons = _pick(rng, MIX)
                stage = _pick(rng, STAGES)[0]
                tally[(rollout_id, stage, state)] += 1
                copy.write_row((rollout_id, i, stage, state, rng.choice(reasons), 1, 0, False, now))
        cur.execute("SELECT setval('devices_id_seq', %s)", (size,))
        raw.commit()
    finally:
        raw.close()
    with db.transaction(engine) as session:
        bump_counters(session, tally)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE targets"))
        conn.execute(text("ANALYZE"))
    return rollout_id


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_status_bench(
    size: int, *, postgres_admin: str | None = None, reads: int = READS
) -> dict[str, Any]:
    """Time ``reads`` detail reads of a rollout of ``size`` targets; the bench's JSON object."""
    if size < 1:
        raise ValueError("size must be >= 1")
    admin = check_postgres(postgres_admin or pg_admin_url())
    with scratch_database(admin, "rollout_bench_status") as url:
        engine = db.make_engine(url)
        try:
            t0 = time.perf_counter()
            rollout_id = seed_status_rollout(engine, size)
            seed_s = time.perf_counter() - t0
            summary: dict[str, Any] | None = None
            for _ in range(WARMUP):
                with db.transaction(engine) as session:
                    summary = rollout_summary(session, rollout_id)
            times: list[float] = []
            for _ in range(reads):
                t = time.perf_counter()
                with db.transaction(engine) as session:
                    summary = rollout_summary(session, rollout_id)
                times.append((time.perf_counter() - t) * 1000)
        finally:
            engine.dispose()
    assert summary is not None
    counted = sum(summary["states"].values())
    if counted != size:
        raise RuntimeError(f"the summary counts {counted} targets, not {size}")
    return {
        "bench": "status",
        "size": size,
        "metrics": {
            "p50_ms": round(_percentile(times, 0.50), 3),
            "p99_ms": round(_percentile(times, 0.99), 3),
            "mean_ms": round(statistics.fmean(times), 3),
            "max_ms": round(max(times), 3),
            "reads": reads,
            "states": summary["states"],
            "backend": "postgresql",
            "cores": os.cpu_count(),
            "seed_seconds": round(seed_s, 1),
        },
    }
