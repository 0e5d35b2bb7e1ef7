"""Retention on both backends, on one clock: what is old is archived then removed, nothing
newer is touched, pinned rollouts stay, a restore brings a rollout back to its summary, and an
interrupted prune resumes without ever deleting what no archive holds."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from rollout import archive, retention
from rollout.clock import ManualClock
from rollout.ledger import Event, Ledger, Move, RunningRollout
from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.retention import RetentionPolicy
from rollout.web.refusals import REFUSED
from tests.engine.support import import_fleet
from tests.support import NO_IDENTITY, add_profile, checked_states, start_rollout, udid

DAY = dt.timedelta(days=1)
POLICY = RetentionPolicy(
    targets=DAY * 60, commands=DAY * 30, events=DAY * 90, refusals=DAY * 10, batch_size=3, duty=1.0
)
ENGINE = EnginePolicy()
ERROR_CHAIN = ({"ErrorCode": 4001, "ErrorDomain": "MCProvisioningProfileErrorDomain"},)


@dataclass
class World:
    devices: dict[int, int]
    profile: str


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The archive folder (beside, not holding, the SQLite ledger)."""
    return tmp_path / "archive"


def world(ledger: Ledger, clock: ManualClock, n: int = 12) -> World:
    devices = import_fleet(ledger, n, clock.now())
    return World(devices, add_profile(ledger, clock.now()).uuid)


def finished_rollout(
    ledger: Ledger, clock: ManualClock, w: World, ns: list[int], *, failing: int = 1
) -> int:
    """A rollout to devices ``ns`` run to its end: each device takes its command, the first
    ``failing`` answer with an error, the others acknowledge; then it completes."""
    rid = start_rollout(ledger, w.profile, [udid(n) for n in ns], clock.now())
    with ledger.fanout() as store:
        store.claim_planned(
            RunningRollout(rid, 0),
            1000,
            request_type=INSTALL_PROVISIONING_PROFILE,
            next_push_at=clock.now(),
            now=clock.now(),
        )
    for k, n in enumerate(ns):
        with ledger.checkin() as store:
            [out] = process_reports(
                store, [Report(udid(n), "Idle")], identity=NO_IDENTITY, policy=ENGINE,
                now=clock.now(),
            )  # fmt: skip
            assert out.served is not None
            status, chain = ("Error", ERROR_CHAIN) if k < failing else ("Acknowledged", ())
            process_reports(
                store,
                [Report(udid(n), status, command_uuid=out.served.command_uuid, error_chain=chain)],
                identity=NO_IDENTITY,
                policy=ENGINE,
                now=clock.now(),
            )
    with ledger.fanout() as store:
        store.finish([rid], "completed", clock.now())
    return rid


def loose_records(ledger: Ledger, clock: ManualClock, w: World, tag: str) -> None:
    """Records of no rollout: an event, a refusal, and a dropped (final) command."""
    with ledger.checkin() as store:
        store.record(
            [
                Event("device.note", {"tag": tag}, device_id=w.devices[0]),
                Event(REFUSED, {"tag": tag, "reason": "not_a_plist"}),
            ],
            clock.now(),
        )
        store.enqueue(w.devices[1], f"LIST-{tag}", "ProfileList", b"<plist/>", clock.now())
        store.drop_open_commands(w.devices[1], clock.now())


def rows_of(ledger: Ledger, rid: int) -> dict[str, int]:
    with ledger.retention() as store:
        return store.count_rollout_rows(rid)


def summary(ledger: Ledger, rid: int) -> dict[str, object]:
    with ledger.rollouts() as store:
        s = store.summary(rid)
        assert s is not None
        return s.as_json()


def tags(ledger: Ledger, kind: str) -> list[str]:
    with ledger.checkin() as store:
        return sorted(e.data["tag"] for e in store.events(kind=kind, limit=1000))


def test_old_records_are_archived_then_removed_and_newer_ones_stay(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    old = finished_rollout(ledger, clock, w, [0, 1, 2, 3, 4])
    loose_records(ledger, clock, w, "old")
    clock.advance(DAY * 45)
    recent = finished_rollout(ledger, clock, w, [5, 6, 7])
    loose_records(ledger, clock, w, "recent")
    clock.advance(DAY * 20)  # old: 65 days, recent: 20 days
    loose_records(ledger, clock, w, "new")
    before_old, before_recent = summary(ledger, old), summary(ledger, recent)
    recent_rows = rows_of(ledger, recent)

    dry = retention.prune(ledger, folder, POLICY, clock.now(), dry_run=True)
    assert dry.rollouts == [old] and dry.dry_run
    assert rows_of(ledger, old)["targets"] == 5 and not folder.exists()

    report = retention.prune(ledger, folder, POLICY, clock.now())
    assert report.rollouts == [old]
    assert rows_of(ledger, old) == {"targets": 0, "commands": 0, "events": 0}
    assert rows_of(ledger, recent) == recent_rows  # nothing newer touched
    assert summary(ledger, old) == before_old  # the summary stays forever
    assert summary(ledger, recent) == before_recent
    # records of no rollout, each kind by its own period: refusals (10 days) of 65 and 20
    # days went, commands (30 days) of 65 days, events (90 days) none
    assert tags(ledger, REFUSED) == ["new"]
    assert tags(ledger, "device.note") == ["new", "old", "recent"]
    with ledger.checkin() as store:
        kept = {uuid for uuid, _ in store.commands(["LIST-old", "LIST-recent", "LIST-new"])}
    assert kept == {"LIST-recent", "LIST-new"}
    # operator actions of the pruned rollout are kept
    with ledger.rollouts() as store:
        kinds = {e.kind for e in store.events(rollout_id=old, limit=100)}
    assert "rollout.created" in kinds and "rollout.started" in kinds

    # every deleted row is in a verified archive file
    rollout_file = folder / f"rollout-{old:08d}-part001{archive.SUFFIX}"
    manifest = archive.verify(rollout_file)
    assert manifest["rows"]["targets"] == 5 and manifest["rows"]["commands"] == 5
    assert manifest["rows"]["events"] > 0  # the devices' results
    assert manifest["summary"] == before_old
    journal = [p for p in folder.glob(f"journal-*{archive.SUFFIX}")]
    assert len(journal) == 1
    journal_rows = [row for _, row in archive.rows(journal[0])]
    assert {r.get("command_uuid") for r in journal_rows} >= {"LIST-old"}
    assert sum(report.deleted.values()) == sum(
        sum(json.loads(m.read_text())["rows"].values())
        for m in folder.glob(f"*{archive.MANIFEST_SUFFIX}")
    )

    # a second run finds nothing more to do
    again = retention.prune(ledger, folder, POLICY, clock.now())
    assert again.rollouts == [] and not again.deleted and not again.archives


def test_pinned_rollouts_keep_their_rows_until_unpinned(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    kept = finished_rollout(ledger, clock, w, [0, 1, 2])
    gone = finished_rollout(ledger, clock, w, [3, 4])
    retention.pin(ledger, kept, actor="test", now=clock.now())
    clock.advance(DAY * 61)
    report = retention.prune(ledger, folder, POLICY, clock.now())
    assert report.rollouts == [gone] and report.pinned == [kept]
    assert rows_of(ledger, kept)["targets"] == 3
    assert rows_of(ledger, gone)["targets"] == 0
    retention.pin(ledger, kept, actor="test", now=clock.now(), pinned=False)
    report = retention.prune(ledger, folder, POLICY, clock.now())
    assert report.rollouts == [kept] and rows_of(ledger, kept)["targets"] == 0
    with ledger.rollouts() as store:
        kinds = [e.kind for e in store.events(rollout_id=kept, limit=100)]
    assert "rollout.pinned" in kinds and "rollout.unpinned" in kinds
    with pytest.raises(retention.RetentionError, match="no rollout 999"):
        retention.pin(ledger, 999, actor="test", now=clock.now())


def test_a_restored_archive_reproduces_the_rollouts_summary_exactly(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    rid = finished_rollout(ledger, clock, w, list(range(10)), failing=3)
    states = checked_states(ledger, rid)
    assert states == {"acknowledged": 7, "failed": 3}
    with ledger.rollouts() as store:
        before_targets = store.targets(rid)
        before_commands = store.command_counts(rid)
    archived = summary(ledger, rid)
    clock.advance(DAY * 61)
    retention.prune(ledger, folder, POLICY, clock.now())
    with ledger.rollouts() as store:
        assert store.recount(rid) == {}  # the rows are gone, the summary is not
    assert summary(ledger, rid) == archived

    out = retention.restore(ledger, folder / f"rollout-{rid:08d}-part001{archive.SUFFIX}")
    assert out.rows_match and out.summary_matches
    assert out.summary == archived and out.restored["targets"] == 10
    assert checked_states(ledger, rid) == states  # the rows add up to the kept counters
    with ledger.rollouts() as store:
        assert store.targets(rid) == before_targets  # row for row
        assert store.command_counts(rid) == before_commands
    # restoring twice writes nothing more
    again = retention.restore(
        ledger, folder / f"rollout-{rid:08d}-part001{archive.MANIFEST_SUFFIX}"
    )
    assert sum(again.restored.values()) == 0 and again.rows_match


def test_a_damaged_archive_is_refused_and_nothing_is_deleted_or_restored(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    rid = finished_rollout(ledger, clock, w, [0, 1, 2])
    clock.advance(DAY * 61)
    report = retention.archive_due(ledger, folder, POLICY, clock.now())
    assert rows_of(ledger, rid)["targets"] == 3  # archiving deletes nothing
    [name] = [n for n in report.archives if n.startswith("rollout-")]
    path = folder / f"{name}{archive.SUFFIX}"
    data = gzip.decompress(path.read_bytes()).replace(b'"acknowledged"', b'"verified"')
    path.write_bytes(gzip.compress(data))
    with pytest.raises(retention.RetentionError, match="cannot be trusted"):
        retention.prune(ledger, folder, POLICY, clock.now())
    assert rows_of(ledger, rid)["targets"] == 3
    with pytest.raises(archive.ArchiveError, match="checksum"):
        retention.restore(ledger, path)


def test_an_interrupted_prune_resumes_and_never_deletes_what_it_did_not_archive(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    rid = finished_rollout(ledger, clock, w, list(range(8)))
    # a rollout still running beside it: on PostgreSQL it keeps their partition block, so
    # the rows go a batch at a time there too
    start_rollout(ledger, w.profile, [udid(9)], clock.now())
    clock.advance(DAY * 61)

    class Stop(Exception):
        pass

    deleted: list[int] = []

    def stop_after_two(table: str, n: int) -> None:
        deleted.append(n)
        if len(deleted) == 2:
            raise Stop

    with pytest.raises(Stop):
        retention.prune(ledger, folder, POLICY, clock.now(), progress=stop_after_two)
    left = rows_of(ledger, rid)
    assert 0 < sum(left.values()) < 8 * 3  # part of it went, a batch at a time
    [pending] = _archives(ledger, "written")
    assert pending.rollout_id == rid

    # meanwhile a device's target moves again: it changed after the archive read it
    clock.advance(DAY)
    device = w.devices[7]
    with ledger.rollouts() as store:
        tid = store.targets(rid, [device])[device].id
        [moved] = store.move([Move(tid, "verified", frozenset({"acknowledged"}))], clock.now())
    assert moved.target_id == tid

    report = retention.prune(ledger, folder, POLICY, clock.now() + dt.timedelta(minutes=5))
    assert report.resumed == [pending.name]
    assert report.kept_changed == 1  # the changed row stayed for a later archive
    # the changed row went into a second archive and then left too
    assert rows_of(ledger, rid) == {"targets": 0, "commands": 0, "events": 0}
    assert len(_archives(ledger, "pruned")) == 2
    files = sorted(folder.glob(f"rollout-{rid:08d}-part*{archive.SUFFIX}"))
    assert len(files) == 2
    # every target is in an archive, the changed one in its new state in the later part
    second = {int(row["id"]): row["state"] for _, row in archive.rows(files[1], "targets")}
    assert second == {tid: "verified"}
    # restoring brings back every part, the later copy winning, and matches the summary
    out = retention.restore(ledger, files[0])
    assert out.files == [f.name for f in reversed(files)]
    assert out.rows_match and out.summary_matches
    assert checked_states(ledger, rid) == {"acknowledged": 6, "failed": 1, "verified": 1}


def _archives(ledger: Ledger, state: str) -> list:  # type: ignore[type-arg]
    with ledger.retention() as store:
        return store.archives(state=state)


def test_before_a_date_takes_everything_older_and_refuses_the_future(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    rid = finished_rollout(ledger, clock, w, [0, 1])
    clock.advance(DAY * 2)  # far inside every period
    assert retention.prune(ledger, folder, POLICY, clock.now()).rollouts == []
    report = retention.prune(ledger, folder, POLICY, clock.now(), before=clock.now() - DAY)
    assert report.rollouts == [rid] and rows_of(ledger, rid)["targets"] == 0
    with pytest.raises(retention.RetentionError, match="in the future"):
        retention.prune(ledger, folder, POLICY, clock.now(), before=clock.now() + DAY)


def test_stats_show_sizes_oldest_rows_and_what_the_policy_would_remove(
    ledger: Ledger, clock: ManualClock
) -> None:
    w = world(ledger, clock)
    started = clock.now()
    rid = finished_rollout(ledger, clock, w, [0, 1, 2])
    clock.advance(DAY * 61)
    out = retention.stats(ledger, POLICY, clock.now())
    tables = {t["table"]: t for t in out["tables"]}
    assert tables["targets"]["rows"] == 3 and tables["devices"]["rows"] == 12
    assert tables["targets"]["table_bytes"] > 0 and tables["targets"]["index_bytes"] > 0
    assert out["oldest"]["finished_rollout_with_rows"] == started.isoformat()
    assert out["would_remove"]["rollouts"] == [rid]
    assert out["would_remove"]["rows"]["targets"] == 3


def test_beat_prunes_once_a_day_at_the_quiet_hour_unless_turned_off(tmp_path: Path) -> None:
    from celery.schedules import crontab

    from rollout.config import Settings
    from workers.app import make_app

    base = {"home": tmp_path, "broker_url": "redis://127.0.0.1:6379/15"}
    app = make_app(Settings(retention_hour=4, **base))  # type: ignore[arg-type]
    entry = app.conf.beat_schedule["ledger-prune"]
    assert entry["task"] == "rollout.prune"
    assert entry["schedule"] == crontab(hour=4, minute=17)
    assert app.conf.task_routes["rollout.prune"] == {"queue": "fanout"}  # ticks never wait
    off = make_app(Settings(retention_prune=False, **base))  # type: ignore[arg-type]
    assert "ledger-prune" not in off.conf.beat_schedule


def test_retention_settings_are_checked_and_make_the_policy(tmp_path: Path) -> None:
    from rollout.config import SettingsError, load_settings

    settings = load_settings(home=tmp_path, retention_targets_days="400", retention_hour="2")
    policy = settings.retention_policy()
    assert policy.targets == DAY * 400 and policy.refusals == DAY * 30
    assert settings.archive_folder() == tmp_path.resolve() / "archive"
    with pytest.raises(SettingsError, match=r"^ROLLOUT_RETENTION_HOUR: 24 is more than 23$"):
        load_settings(home=tmp_path, retention_hour="24")
    with pytest.raises(SettingsError, match=r"^ROLLOUT_RETENTION_EVENTS_DAYS: 0 must be more"):
        load_settings(home=tmp_path, retention_events_days="0")


def test_a_journal_archive_restores_the_records_of_no_rollout(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    loose_records(ledger, clock, w, "old")
    clock.advance(DAY * 100)
    first = retention.archive_due(ledger, folder, POLICY, clock.now())
    again = retention.archive_due(ledger, folder, POLICY, clock.now())
    assert len(first.archives) == 1 and again.archives == []  # one file holds them until pruned
    report = retention.prune(ledger, folder, POLICY, clock.now())
    assert report.resumed == first.archives and report.archives == []
    assert report.deleted == {"commands": 1, "events": 2}
    assert tags(ledger, REFUSED) == [] and tags(ledger, "device.note") == []
    [name] = report.resumed
    out = retention.restore(ledger, folder / f"{name}{archive.SUFFIX}")
    assert out.kind == "journal" and out.rollout_id is None and out.rows_match is None
    assert out.restored == {"commands": 1, "events": 2, "targets": 0}
    assert tags(ledger, REFUSED) == ["old"] and tags(ledger, "device.note") == ["old"]
    with ledger.checkin() as store:
        assert {uuid for uuid, _ in store.commands(["LIST-old"])} == {"LIST-old"}


def test_vacuum_gives_a_pruned_sqlite_ledger_its_space_back(
    sqlite_url: str, clock: ManualClock, folder: Path
) -> None:
    from rollout.bench.ledger import seed_finished_rollout
    from rollout.ledger import db

    db.upgrade(sqlite_url)
    ledger = Ledger.open(sqlite_url)
    try:
        seed_finished_rollout(ledger, 3000, clock.now())
        clock.advance(DAY * 61)
        path = Path(ledger.engine.url.database or "")
        ledger.vacuum()
        full = path.stat().st_size
        report = retention.prune(ledger, folder, replace(POLICY, batch_size=1000), clock.now())
        assert report.deleted["targets"] == 3000
        assert path.stat().st_size == full  # deleted rows leave free pages behind
        ledger.vacuum()
        assert path.stat().st_size < full / 2
    finally:
        ledger.dispose()


def test_a_pacer_rests_in_proportion_to_the_work_it_follows() -> None:
    now = [0.0]
    rests: list[float] = []

    def sleep(seconds: float) -> None:
        rests.append(seconds)
        now[0] += seconds

    pace = retention.Pacer(0.25, monotonic=lambda: now[0], sleep=sleep)
    for took in (0.2, 0.4):
        now[0] += took  # a batch
        pace()
    assert rests == pytest.approx([0.6, 1.2])  # three times each batch: a quarter busy
    flat_out = retention.Pacer(1.0, monotonic=lambda: now[0], sleep=sleep)
    now[0] += 1.0
    flat_out()
    assert len(rests) == 2
    with pytest.raises(retention.RetentionError, match="duty 0 is not in"):
        retention.Pacer(0)


def test_a_run_out_of_time_stops_between_batches_and_the_next_goes_on(
    ledger: Ledger, clock: ManualClock, folder: Path
) -> None:
    w = world(ledger, clock)
    first = finished_rollout(ledger, clock, w, [0, 1, 2, 3])
    second = finished_rollout(ledger, clock, w, [4, 5, 6])
    clock.advance(DAY * 61)
    no_time = replace(POLICY, max_run=dt.timedelta(0))
    report = retention.prune(ledger, folder, no_time, clock.now())
    # each run gets somewhere, then stops: first an archive, then one batch at a time
    assert report.stopped and report.archives == [f"rollout-{first:08d}-part001"]
    assert not report.deleted
    report = retention.prune(ledger, folder, no_time, clock.now())
    assert report.stopped and report.resumed == [] and report.archives == []
    assert sum(report.deleted.values()) == POLICY.batch_size
    assert rows_of(ledger, second)["targets"] == 3  # not reached yet
    runs = 2
    while report.stopped:
        report = retention.prune(ledger, folder, no_time, clock.now())
        runs += 1
        assert runs < 100
    assert (
        rows_of(ledger, first)
        == rows_of(ledger, second)
        == {
            "targets": 0,
            "commands": 0,
            "events": 0,
        }
    )
    with ledger.retention() as store:
        assert {a.state for a in store.archives()} == {"pruned"}
