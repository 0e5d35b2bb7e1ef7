"""Partition blocks on PostgreSQL: where rows live, blocks made ahead of the rollouts that
fill them, and retention dropping a due block whole, never a row no archive holds."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from rollout import archive, retention
from rollout.clock import ManualClock
from rollout.ledger import Event, Ledger, Move, db
from rollout.ledger.partitions import SPAN, block_name
from tests.support import start_rollout, udid
from tests.test_retention import (
    DAY,
    POLICY,
    finished_rollout,
    loose_records,
    rows_of,
    summary,
    world,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Ledger:
    from rollout.ledger.sealing import Sealer, parse_keys
    from tests.conftest import TEST_LEDGER_KEY

    db.upgrade(postgres_url)
    opened = Ledger.open(postgres_url, Sealer(parse_keys(TEST_LEDGER_KEY)))
    yield opened  # type: ignore[misc]
    opened.dispose()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def homes(ledger: Ledger, table: str) -> Counter[str]:
    """How many rows of ``table`` each partition holds."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1")
        )
        return Counter({str(name): int(n) for name, n in rows})


def blocks(ledger: Ledger) -> dict[int, tuple[set[str], set[str]]]:
    with ledger.partitions() as parts:
        return {b.lo: (b.attached, b.detached) for b in parts.blocks()}


ALL = {"targets", "commands", "events"}


def test_rows_live_in_their_rollouts_block_and_the_rest_apart(
    pg: Ledger, clock: ManualClock
) -> None:
    w = world(pg, clock)
    rid = finished_rollout(pg, clock, w, [0, 1, 2])
    loose_records(pg, clock, w, "x")
    assert rid == 1
    assert homes(pg, "targets") == {"targets_rollouts_1": 3}
    assert homes(pg, "commands") == {"commands_rollouts_1": 3, "commands_loose": 1}
    events = homes(pg, "events")
    # the devices' results go with the rollout; its own events (who did what) and the
    # records of no rollout are kept apart, by age or forever
    assert events["events_rollouts_1"] == rows_of(pg, rid)["events"] > 0
    assert events["events_loose"] >= 4 and "events_rest" not in events
    with pg.retention() as store:  # a partitioned table's size is its partitions'
        sizes = {t.table: t for t in store.sizes()}
    assert sizes["targets"].rows == 3 and sizes["targets"].table_bytes > 0
    assert sizes["devices"].table_bytes > 0 and sizes["devices"].index_bytes > 0  # not split
    assert set(blocks(pg)) == {1}


def test_blocks_are_made_ahead_of_the_rollouts_that_fill_them(
    pg: Ledger, clock: ManualClock
) -> None:
    w = world(pg, clock, n=SPAN + 2)
    for n in range(SPAN + 1):
        start_rollout(pg, w.profile, [udid(n)], clock.now())
    assert set(blocks(pg)) == {1, 1 + SPAN}
    assert homes(pg, "targets") == {"targets_rollouts_1": SPAN, f"targets_rollouts_{1 + SPAN}": 1}
    assert pg.prepare_partitions() == []  # there already: nothing to do


def test_a_due_block_is_archived_then_dropped_whole(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    first = finished_rollout(pg, clock, w, [0, 1, 2, 3])
    second = finished_rollout(pg, clock, w, [4, 5, 6], failing=2)
    loose_records(pg, clock, w, "old")
    before = {first: summary(pg, first), second: summary(pg, second)}
    rows = {first: rows_of(pg, first), second: rows_of(pg, second)}
    loose = homes(pg, "commands")["commands_loose"]
    clock.advance(DAY * 61)

    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.rollouts == [first, second]
    assert sorted(report.dropped) == sorted(block_name(t, 1) for t in ALL)
    assert 1 not in blocks(pg)  # gone whole
    for rid in (first, second):
        assert rows_of(pg, rid) == {"targets": 0, "commands": 0, "events": 0}
        assert summary(pg, rid) == before[rid]  # the summary stays forever
    # what was dropped is what the archives hold, row for row counted
    for table in ALL:
        assert report.deleted[table] >= rows[first][table] + rows[second][table]
    with pg.retention() as store:
        assert {a.state for a in store.archives(kind="rollout")} == {"pruned"}
    with pg.rollouts() as store:  # who did what is kept
        assert "rollout.created" in {e.kind for e in store.events(rollout_id=first, limit=50)}
    assert homes(pg, "commands")["commands_loose"] == loose - 1  # the old dropped command

    # a device's late report for a dropped rollout still lands: outside any block
    with pg.checkin() as store:
        store.record(
            [Event("device.late", {}, rollout_id=first, device_id=w.devices[0])], clock.now()
        )
    assert homes(pg, "events")["events_rest"] == 1
    assert retention.stats(pg, POLICY, clock.now())["rows_outside_blocks"]["events"] == 1

    # an audit brings one back, and it adds up to its summary
    out = retention.restore(pg, folder / f"rollout-{second:08d}-part001{archive.SUFFIX}")
    assert out.rows_match and out.summary_matches and out.restored["targets"] == 3
    # into a block made again for it (but for events, whose default partition holds a row
    # of the block now: the block cannot take it, so that table goes without)
    assert blocks(pg)[1] == ({"targets", "commands"}, set())
    # where a rollout made afterwards goes too
    late = start_rollout(pg, w.profile, [udid(9)], clock.now())
    assert late < 1 + SPAN and homes(pg, "targets") == {block_name("targets", 1): 3 + 1}


def test_a_pinned_rollout_keeps_its_block_and_the_others_go_row_by_row(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    kept = finished_rollout(pg, clock, w, [0, 1, 2])
    gone = finished_rollout(pg, clock, w, [3, 4])
    retention.pin(pg, kept, actor="test", now=clock.now())
    clock.advance(DAY * 61)
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.rollouts == [gone] and report.dropped == []
    assert blocks(pg)[1] == (ALL, set())
    assert rows_of(pg, gone)["targets"] == 0 and rows_of(pg, kept)["targets"] == 3
    retention.pin(pg, kept, actor="test", now=clock.now(), pinned=False)
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.rollouts == [kept] and 1 not in blocks(pg)


def test_a_due_rollout_waits_for_its_block_then_goes_with_it(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    first = finished_rollout(pg, clock, w, [0, 1])
    clock.advance(DAY * 10)
    second = finished_rollout(pg, clock, w, [2, 3])
    clock.advance(DAY * 55)  # first: 65 days, second: 55 days (due in 5)
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.held == [first] and report.rollouts == [] and not report.archives
    assert rows_of(pg, first)["targets"] == 2
    stats = retention.stats(pg, POLICY, clock.now())
    assert stats["would_remove"]["rollouts"] == []
    assert stats["would_remove"]["held_for_block"] == [first]
    assert stats["partition_blocks"][0] == {"first": 1, "last": SPAN, "detached": []}
    assert stats["rows_outside_blocks"] == {"targets": 0, "commands": 0, "events": 0}
    # without the wait it would go row by row, as on SQLite
    no_wait = replace(POLICY, partition_wait=dt.timedelta(0))
    dry = retention.prune(pg, folder, no_wait, clock.now(), dry_run=True)
    assert dry.rollouts == [first] and dry.held == []
    clock.advance(DAY * 6)
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.rollouts == [first, second] and len(report.dropped) == 3


def test_a_rollout_still_running_in_the_block_is_not_waited_for(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    first = finished_rollout(pg, clock, w, [0, 1])
    start_rollout(pg, w.profile, [udid(5)], clock.now())
    clock.advance(DAY * 61)
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert report.rollouts == [first] and report.held == [] and report.dropped == []
    assert rows_of(pg, first)["targets"] == 0 and blocks(pg)[1] == (ALL, set())


def test_a_row_written_after_its_archive_is_never_dropped(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    rid = finished_rollout(pg, clock, w, [0, 1, 2, 3])
    clock.advance(DAY * 61)
    retention.archive_due(pg, folder, POLICY, clock.now())
    # after the archive was read, a target of the rollout moves and a device's late event
    # arrives
    clock.advance(dt.timedelta(minutes=5))
    device = w.devices[3]
    with pg.rollouts() as store:
        tid = store.targets(rid, [device])[device].id
        store.move([Move(tid, "verified", frozenset({"acknowledged"}))], clock.now())
    with pg.checkin() as store:
        store.record([Event("device.late", {}, rollout_id=rid, device_id=device)], clock.now())

    report = retention.prune(pg, folder, POLICY, clock.now() + dt.timedelta(minutes=5))
    # the block held rows its archive does not: they went back, the archived rows were
    # deleted one by one, and the new ones went into a second archive before leaving
    assert report.kept_changed >= 1
    files = sorted(folder.glob(f"rollout-{rid:08d}-part*{archive.SUFFIX}"))
    assert len(files) == 2
    second = [row for _, row in archive.rows(files[1])]
    assert {r.get("kind") for r in second if "kind" in r} >= {"device.late"}
    assert {int(r["id"]) for r in second if r.get("state") == "verified"} == {tid}
    assert rows_of(pg, rid) == {"targets": 0, "commands": 0, "events": 0}
    assert homes(pg, "targets") == {}
    assert retention.stats(pg, POLICY, clock.now())["rows_outside_blocks"]["targets"] == 0


def test_a_block_left_detached_by_a_stopped_prune_is_finished_next_time(
    pg: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(pg, clock)
    rid = finished_rollout(pg, clock, w, [0, 1, 2])
    clock.advance(DAY * 61)

    class Stop(Exception):
        pass

    def stop(table: str, n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        retention.prune(pg, folder, POLICY, clock.now(), progress=stop)
    attached, detached = blocks(pg)[1]
    assert detached and attached == set() and len(detached) == 2  # one dropped, then stopped
    # while it is detached, a check-in of one of its devices still finds its tables
    with pg.checkin() as store:
        assert store.commands(["NO-SUCH"]) == {}
    report = retention.prune(pg, folder, POLICY, clock.now())
    assert 1 not in blocks(pg) and len(report.dropped) == 2
    assert rows_of(pg, rid) == {"targets": 0, "commands": 0, "events": 0}
    with pg.retention() as store:
        assert [a.state for a in store.archives(kind="rollout")] == ["pruned"]


def test_the_migration_moves_rows_into_partitions_and_back(
    pg: Ledger, postgres_url: str, clock: ManualClock
) -> None:
    w = world(pg, clock)
    rid = finished_rollout(pg, clock, w, [0, 1, 2])
    loose_records(pg, clock, w, "x")
    counts = {t: sum(homes(pg, t).values()) for t in ALL}
    config = db.alembic_config(postgres_url)
    command.downgrade(config, "0010")
    for table in ALL:  # plain tables again, every row kept
        assert homes(pg, table) == {table: counts[table]}
    pg.dispose()
    command.upgrade(config, "head")
    assert homes(pg, "targets") == {"targets_rollouts_1": 3}
    assert homes(pg, "commands") == {"commands_rollouts_1": 3, "commands_loose": 1}
    assert sum(homes(pg, "events").values()) == counts["events"]
    assert homes(pg, "events")["events_rollouts_1"] == rows_of(pg, rid)["events"]
    # and new rows get ids after the old ones
    second = start_rollout(pg, w.profile, [udid(5)], clock.now())
    with pg.rollouts() as store:
        assert min(t.id for t in store.targets(second).values()) > 3
