"""``rollout bench ledger``: what the ledger costs per device and per target, table by table,
and what archive + prune gives back.

It loads ``size`` enrolled devices and one finished rollout of them in bulk (``COPY``): a
target, its acknowledged command and one result event per device, the way a real rollout
leaves them. Sizes are read from PostgreSQL (heap with TOAST, indexes apart) after
``VACUUM (ANALYZE)``. Then it archives and prunes the rollout through the product's own
retention code and reads the sizes again, after ``VACUUM FULL`` of the pruned tables (plain
``VACUUM`` only marks the space free for reuse, which leaves the files their size).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rollout import archive, retention
from rollout.bench.services import check_postgres, pg_admin_url, scratch_database
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, NewRollout, NewStage, SeedDevice, SeedTarget
from rollout.ledger.partitions import block_of
from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
from rollout.profiles import parse_profile
from rollout.sim.profiles import make_apple_like_chain, make_profile
from rollout.states import RolloutState, TargetState

TOPIC = "com.apple.mgmt.External.0c0ffee0-bench-ledger"
RESULT_EVENT = "mdm.result"
PRUNED = ("targets", "commands", "events")


def seed_finished_rollout(
    ledger: Ledger, size: int, finished_at: dt.datetime, *, first: int = 1
) -> int:
    """Load ``size`` devices (UDIDs numbered from ``first``) and one rollout of them that
    finished at ``finished_at``: each target acknowledged, with its command and a result
    event, every row written at that time; the rollout's id."""
    chain = make_apple_like_chain()
    data = make_profile(chain, name=f"Ledger bench {first}")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    with ledger.library() as library:
        library.add(profile, data, finished_at)
    with ledger.bulk() as bulk:
        ids = bulk.devices(
            (
                SeedDevice(f"00008102-{i:016X}", TOPIC, f"{i:064x}", f"m{i}")
                for i in range(first, first + size)
            ),
            finished_at,
        )
    ledger.prepare_partitions()
    with ledger.rollouts() as store:
        rollout_id = store.create(
            NewRollout(
                name="ledger bench",
                profile_uuid=profile.uuid,
                salt=f"bench{first}",
                stages=(NewStage("100%"),),
                targets=(),
            ),
            finished_at,
        )
        store.set_state(rollout_id, RolloutState.RUNNING.value, finished_at)
    acknowledged = TargetState.ACKNOWLEDGED.value
    with ledger.bulk() as bulk:
        bulk.targets(
            rollout_id, (SeedTarget(d, 0, acknowledged, push_count=1) for d in ids), finished_at
        )
        bulk.commands_for(rollout_id, INSTALL_PROVISIONING_PROFILE, acknowledged, finished_at)
        bulk.events_for(rollout_id, RESULT_EVENT, finished_at)
    with ledger.fanout() as store:
        store.finish([rollout_id], RolloutState.COMPLETED.value, finished_at)
    with ledger.bulk() as bulk:
        bulk.analyze()
    return rollout_id


def _running_beside(ledger: Ledger, now: dt.datetime) -> int:
    """An empty rollout left running: it keeps its partition block from being dropped."""
    with ledger.rollouts() as store:
        rid = store.create(
            NewRollout(
                name="running",
                profile_uuid=None,
                salt="running",
                stages=(NewStage("100%"),),
                targets=(),
            ),
            now,
        )
        store.set_state(rid, RolloutState.RUNNING.value, now)
    return rid


def fill_block(ledger: Ledger, at: dt.datetime) -> list[int]:
    """Make empty rollouts, aborted at ``at``, until the next rollout starts a partition
    block of its own (older rollouts would have filled the block); their ids."""
    made: list[int] = []
    while True:
        with ledger.partitions() as parts:
            next_id = parts.next_rollout_id()
        if next_id == block_of(next_id):
            return made
        with ledger.rollouts() as store:
            made.append(
                store.create(
                    NewRollout(
                        name="filler", profile_uuid=None, salt=f"fill{next_id}",
                        stages=(NewStage("100%"),), targets=(),
                    ),
                    at,
                )
            )  # fmt: skip
        with ledger.fanout() as store:
            store.finish(made[-1:], RolloutState.ABORTED.value, at)


def _sizes(ledger: Ledger) -> dict[str, dict[str, int]]:
    with ledger.retention() as store:
        return {
            t.table: {"rows": t.rows, "table_bytes": t.table_bytes, "index_bytes": t.index_bytes}
            for t in store.sizes()
        }


def _per(sizes: dict[str, dict[str, int]], size: int) -> dict[str, Any]:
    """Bytes per device (the devices table) and per target (targets, commands, events)."""
    out: dict[str, Any] = {}
    for table in ("devices", *PRUNED):
        t = sizes[table]
        per = "device" if table == "devices" else "target"  # one target per device here
        out[f"{table}_table_bytes_per_{per}"] = round(t["table_bytes"] / size, 1)
        out[f"{table}_index_bytes_per_{per}"] = round(t["index_bytes"] / size, 1)
    rollout_rows = sum(sizes[t]["table_bytes"] + sizes[t]["index_bytes"] for t in PRUNED)
    out["per_target_bytes"] = round(rollout_rows / size, 1)
    d = sizes["devices"]
    out["per_device_bytes"] = round((d["table_bytes"] + d["index_bytes"]) / size, 1)
    out["total_mb"] = round(
        sum(t["table_bytes"] + t["index_bytes"] for t in sizes.values()) / 1e6, 1
    )
    return out


def run_ledger_bench(size: int, *, prune_by: str = "partition") -> dict[str, Any]:
    """Seed, measure, archive + prune, measure again; the bench's JSON object. With
    ``prune_by="rows"`` a running rollout shares the seeded one's partition block, so the
    prune deletes its rows in batches instead of dropping the block."""
    if size < 1:
        raise ValueError("size must be >= 1")
    admin = check_postgres(pg_admin_url())
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-ledger-"))
    now = SYSTEM_CLOCK.now()
    try:
        with scratch_database(admin, "rollout_bench_ledger") as url:
            ledger = Ledger.open(url)
            try:
                t0 = time.perf_counter()
                seed_finished_rollout(ledger, size, now - dt.timedelta(days=400))
                seed_s = time.perf_counter() - t0
                if prune_by == "rows":
                    _running_beside(ledger, now)
                _vacuum(ledger, full=False)
                before = _sizes(ledger)
                policy = retention.RetentionPolicy(batch_size=2000, duty=1.0)  # flat out: its cost
                t0 = time.perf_counter()
                archived = retention.archive_due(ledger, workdir, policy, now)
                archive_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                pruned = retention.prune(ledger, workdir, policy, now)
                prune_s = time.perf_counter() - t0
                _vacuum(ledger, full=True)
                after = _sizes(ledger)
            finally:
                ledger.dispose()
        files = list(workdir.glob(f"*{archive.SUFFIX}"))
        archive_bytes = sum(f.stat().st_size for f in files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    deleted = sum(pruned.deleted.values())
    return {
        "bench": "ledger",
        "size": size,
        "metrics": {
            "before": _per(before, size),
            "after_prune": _per(after, size),
            "tables_before": before,
            "tables_after_prune": after,
            "archive_files": len(files),
            "archive_bytes_per_target": round(archive_bytes / size, 1),
            "archived_rows": dict(archived.rows),
            "deleted_rows": dict(pruned.deleted),
            "prune_by": prune_by,
            "dropped_partitions": len(pruned.dropped),
            "seed_s": round(seed_s, 1),
            "archive_s": round(archive_s, 1),
            "prune_delete_s": round(prune_s, 1),
            "deleted_rows_per_s": round(deleted / prune_s) if prune_s else None,
            "cores": os.cpu_count(),
        },
    }


def _vacuum(ledger: Ledger, *, full: bool) -> None:
    ledger.vacuum(full=full)
