"""Retention: what leaves the ledger, when, and the order that makes it safe.

The policy (:class:`RetentionPolicy`, from the ``ROLLOUT_RETENTION_*`` settings) says how long
each kind of record stays:

* a finished rollout's **per-device rows** (its targets, their commands, and the events that
  name a device) stay ``targets`` days after it finished, unless the rollout is pinned; the
  rollout itself, its stages and gates, its kept counters (the summary by stage, state and
  reason) and its rollout-level events (who did what) are kept forever;
* **commands of no rollout** (inventory sweeps, other device commands) stay ``commands`` days
  after their answer, once answered or dropped;
* **events of no rollout** stay ``events`` days, and refusals (``mdm.refused``) ``refusals``.

Nothing is deleted that no archive file holds: rows are first written to a file (gzip JSON
lines with a manifest and checksum, see :mod:`rollout.archive`), the file is read back and
recorded in the ledger, and only then are the rows it names deleted, by id, a small batch per
transaction, and only where they were not written again after the archive was read. An
archive recorded but not fully pruned (a prune that stopped) is finished first next time.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout import archive
from rollout.ledger import (
    ArchiveInfo,
    BlockRollout,
    Event,
    Ledger,
    NewArchive,
    RetentionStore,
)
from rollout.ledger.partitions import SPAN, block_name, block_of
from rollout.states import FINAL_COMMAND_STATUSES, RolloutState
from rollout.web.refusals import REFUSED

#: Rollouts whose per-device rows may go once old enough.
FINISHED_STATES = (RolloutState.COMPLETED.value, RolloutState.ABORTED.value)
#: Rows written this shortly before a run are left for the next one (a write committed while
#: the archive was being read must not be deleted on the strength of an older copy).
SETTLE = dt.timedelta(minutes=1)
#: Deletes go in this order: nothing left pointing at a row already gone.
DELETE_ORDER = ("events", "commands", "targets")


class RetentionError(ValueError):
    """A retention request cannot be carried out as asked (one line says why)."""


class _OutOfTime(Exception):
    """A run's time budget is spent: stop here, resume next time."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of record stays in the ledger, and the size of a delete batch."""

    targets: dt.timedelta = dt.timedelta(days=365)
    commands: dt.timedelta = dt.timedelta(days=90)
    events: dt.timedelta = dt.timedelta(days=180)
    refusals: dt.timedelta = dt.timedelta(days=30)
    batch_size: int = 2000
    duty: float = 1.0  # the share of its time a run may spend working (see :class:`Pacer`)
    max_run: dt.timedelta | None = None  # a run stops between batches after this long
    # PostgreSQL: a due rollout waits this long at most for the rest of its partition block
    # to come due, so the block is dropped whole instead of its rows deleted one by one
    partition_wait: dt.timedelta = dt.timedelta(days=31)


class Pacer:
    """Keeps a run to a share of the machine: after each batch it rests ``(1 - duty) / duty``
    times as long as the batch took, so a prune at 0.25 uses at most about a quarter of a core
    and of the database's time, whatever the machine, and check-ins keep theirs.

    Batch times are measured on the monotonic clock; they decide nothing about the records.
    """

    def __init__(
        self,
        duty: float,
        *,
        budget: dt.timedelta | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < duty <= 1:
            raise RetentionError(f"duty {duty} is not in (0, 1]")
        self._rest = (1 - duty) / duty
        self._monotonic = monotonic
        self._sleep = sleep
        self._started = monotonic()
        self._until = self._started + budget.total_seconds() if budget is not None else None

    def spent(self) -> bool:
        """Whether the run's time budget is used up and it has got somewhere (deleted rows or
        written an archive: see :attr:`worked`), so it stops between two batches and the next
        run resumes where it stopped; a run that has done nothing yet always goes on."""
        return self.worked and self._until is not None and self._monotonic() >= self._until

    worked = False
    """Set once the run has deleted rows or written an archive."""

    def __call__(self) -> None:
        """A batch ended: rest in proportion to it, then time the next one."""
        took = self._monotonic() - self._started
        if self._rest and took > 0:
            self._sleep(took * self._rest)
        self._started = self._monotonic()


@dataclass(frozen=True)
class Cutoffs:
    """Records older than these times are due."""

    rollouts: dt.datetime  # finished before
    commands: dt.datetime
    events: dt.datetime
    refusals: dt.datetime

    @classmethod
    def of(cls, policy: RetentionPolicy, now: dt.datetime, before: dt.datetime | None) -> Cutoffs:
        """The policy's cutoffs at ``now``; ``before`` (an operator's date) replaces them all
        but may not reach past ``now``."""
        if before is not None:
            if before.tzinfo is None:
                raise RetentionError("--before needs a time zone (or a plain date, read as UTC)")
            if before > now:
                raise RetentionError(f"--before {before.isoformat()} is in the future")
            return cls(before, before, before, before)
        return cls(
            now - policy.targets, now - policy.commands, now - policy.events, now - policy.refusals
        )

    def as_json(self) -> dict[str, str]:
        """The cutoffs as ISO 8601 text."""
        return {k: v.isoformat() for k, v in self.__dict__.items()}


@dataclass
class RetentionReport:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    cutoffs: Cutoffs
    rollouts: list[int] = field(default_factory=list)  # archived (or due) this run
    pinned: list[int] = field(default_factory=list)  # due by age, kept by their pin
    held: list[int] = field(default_factory=list)  # due, waiting for their partition block
    dropped: list[str] = field(default_factory=list)  # partitions dropped whole
    archives: list[str] = field(default_factory=list)  # files written
    resumed: list[str] = field(default_factory=list)  # archives whose pruning was finished
    rows: Counter[str] = field(default_factory=Counter)  # archived (or due), by table
    deleted: Counter[str] = field(default_factory=Counter)
    kept_changed: int = 0  # rows written after their archive was read: kept for next time
    stopped: bool = False  # the time budget ran out: the next run goes on from here

    def as_json(self) -> dict[str, Any]:
        """The report as the CLI prints it."""
        return {
            "dry_run": self.dry_run,
            "cutoffs": self.cutoffs.as_json(),
            "rollouts": self.rollouts,
            "pinned": self.pinned,
            "held": self.held,
            "dropped": self.dropped,
            "archives": self.archives,
            "resumed": self.resumed,
            "rows": dict(sorted(self.rows.items())),
            "deleted": dict(sorted(self.deleted.items())),
            "kept_changed": self.kept_changed,
            "stopped": self.stopped,
        }


Progress = Callable[[str, int], None]
"""Called after each delete batch with the table and how many rows went (a CLI shows it; a
test may stop the run there)."""


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# ---- what is due ---------------------------------------------------------------------------


def due(
    ledger: Ledger, policy: RetentionPolicy, now: dt.datetime, before: dt.datetime | None = None
) -> RetentionReport:
    """What a prune would archive and delete now (nothing is written)."""
    cut = Cutoffs.of(policy, now, before)
    report = RetentionReport(dry_run=True, cutoffs=cut)
    with ledger.retention() as store:
        blocks = store.partitioned()
        for r in store.finished(FINISHED_STATES, cut.rollouts, pinned=None):
            if r.pinned:
                report.pinned.append(r.id)
                continue
            if blocks and _held(store, r.id, cut, policy.partition_wait):
                report.held.append(r.id)
                continue
            report.rollouts.append(r.id)
            report.rows.update(store.count_rollout_rows(r.id))
        report.rows["events"] += store.count_loose_events(cut.events, not_kinds=[REFUSED])
        report.rows["events"] += store.count_loose_events(cut.refusals, kinds=[REFUSED])
        report.rows["commands"] += store.count_loose_commands(
            cut.commands, sorted(FINAL_COMMAND_STATUSES)
        )
    report.rows = Counter({k: v for k, v in report.rows.items() if v})
    return report


# ---- partition blocks (PostgreSQL) ---------------------------------------------------------


def _block(store: RetentionStore, rollout_id: int) -> list[BlockRollout]:
    lo = block_of(rollout_id)
    return store.block_rollouts(lo, lo + SPAN)


def _held(store: RetentionStore, rollout_id: int, cut: Cutoffs, wait: dt.timedelta) -> bool:
    """Whether a due rollout waits for its block: every other rollout of the block is
    finished, unpinned, and comes due within ``wait`` of this cutoff, but not all of them are
    due yet. Then the whole block is dropped in one go when the last one is."""
    others = [r for r in _block(store, rollout_id) if r.id != rollout_id and r.has_rows]
    if not others or not wait:
        return False
    if any(r.pinned or r.state not in FINISHED_STATES or r.finished_at is None for r in others):
        return False
    last = max(r.finished_at for r in others if r.finished_at is not None)
    return cut.rollouts <= last < cut.rollouts + wait


def _droppable(block: list[BlockRollout], archived: set[int], cut: Cutoffs) -> bool:
    """Whether every rollout of a block is finished, due, unpinned and archived (or holds no
    per-device rows), and at least one has rows to drop."""
    if not any(r.id in archived for r in block):
        return False
    return all(
        r.state in FINISHED_STATES
        and r.finished_at is not None
        and r.finished_at < cut.rollouts
        and not r.pinned
        and (r.id in archived or not r.has_rows)
        for r in block
    )


def _settle_detached(
    ledger: Ledger, lo: int, report: RetentionReport, progress: Progress | None, pace: Pacer
) -> bool:
    """Drop the detached tables of block ``lo`` that hold exactly what the block's recorded
    archives hold (the same number of rows per rollout, none written after its archive was
    read); put any other back into the table, for the row-by-row prune. True when every one
    was dropped (the block's archives are then marked pruned)."""
    with ledger.retention() as store:
        written = [
            a
            for a in store.archives(state="written", kind="rollout")
            if a.rollout_id is not None and lo <= a.rollout_id < lo + SPAN
        ]
    expected: dict[tuple[str, int], int] = Counter()
    settled: dict[int, dt.datetime] = {}
    for a in written:
        assert a.rollout_id is not None
        for table, n in a.rows.items():
            expected[table, a.rollout_id] += n
        at = a.created_at - SETTLE
        settled[a.rollout_id] = min(settled.get(a.rollout_id, at), at)
    clean = True
    with ledger.partitions() as parts:
        tables = next((b.detached for b in parts.blocks() if b.lo == lo), set())
    for table in sorted(tables):
        with ledger.partitions() as parts:
            held = parts.detached_rows(table, lo)
            exact = all(
                rid in settled
                and n == expected[table, rid]
                and (held.written[rid] is None or held.written[rid] <= settled[rid])  # type: ignore[operator]
                for rid, n in held.rows.items()
            )
            if exact:
                parts.drop_detached(table, lo)
                gone = sum(held.rows.values())
                report.deleted[table] += gone
                report.dropped.append(block_name(table, lo))
            else:
                parts.return_detached(table, lo)
                clean = False
                gone = 0
        if progress is not None:
            progress(table, gone)
        pace()
    if clean:
        with ledger.retention() as store:
            for a in written:
                store.mark_pruned(a.id, a.created_at)
    return clean


def _drop_blocks(
    ledger: Ledger,
    folder: Path,
    cut: Cutoffs,
    report: RetentionReport,
    progress: Progress | None,
    pace: Pacer,
) -> None:
    """Drop whole the partition blocks whose every rollout is archived and due (PostgreSQL),
    after finishing any block a stopped run left detached. A block whose lock is not granted
    in time is left for the row-by-row prune."""
    with ledger.partitions() as parts:
        if not parts.enabled:
            return
        blocks = parts.blocks()
    for block in blocks:
        if block.detached:
            _settle_detached(ledger, block.lo, report, progress, pace)
    with ledger.retention() as store:
        written = [a for a in store.archives(state="written", kind="rollout")]
        archived = {a.rollout_id for a in written if a.rollout_id is not None}
        candidates = sorted({block_of(r) for r in archived})
        due_blocks = [
            lo
            for lo in candidates
            if _droppable(store.block_rollouts(lo, lo + SPAN), archived, cut)
        ]
    for lo in due_blocks:
        if pace.spent():
            raise _OutOfTime
        for a in written:
            if a.rollout_id is not None and lo <= a.rollout_id < lo + SPAN:
                _verify(folder, a)
        with ledger.partitions() as parts:
            if not parts.detach(lo):  # its lock not granted in time: pruned row by row
                continue
        _settle_detached(ledger, lo, report, progress, pace)
        pace.worked = True


# ---- archiving -----------------------------------------------------------------------------


def _rollout_header(ledger: Ledger, rollout_id: int) -> dict[str, Any]:
    """What an archive keeps of a rollout besides its rows: its summary, stages and gates,
    and its rollout-level events (the ledger keeps these too, forever)."""
    with ledger.rollouts() as store:
        summary = store.summary(rollout_id)
        if summary is None:
            raise RetentionError(f"no rollout {rollout_id}")
        stages = store.stages(rollout_id)
        actions = [
            e for e in store.events(rollout_id=rollout_id, limit=10_000) if e.device_id is None
        ]
    return {
        "rollout_id": rollout_id,
        "summary": summary.as_json(),
        "reasons": {k: dict(v) for k, v in summary.reasons.items()},
        "stages": [
            {
                "number": s.number,
                "label": s.label,
                "gate": s.gate,
                "state": s.state,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in stages
        ],
        "actions": [
            {"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "data": e.data}
            for e in reversed(actions)
        ],
    }


def _pages(
    read: Callable[[int], list[dict[str, Any]]], pace: Pacer | None = None
) -> Iterator[list[dict[str, Any]]]:
    after = 0
    while True:
        page = read(after)
        if not page:
            return
        yield page
        after = int(page[-1]["id"])
        if pace is not None:
            pace()


def _record(
    ledger: Ledger, writer: archive.ArchiveWriter, new: dict[str, Any], now: dt.datetime
) -> ArchiveInfo:
    written = writer.finish()
    with ledger.retention() as store:
        return store.add_archive(
            NewArchive(
                name=writer.name,
                kind=new["kind"],
                rollout_id=new.get("rollout_id"),
                sha256=written.sha256,
                rows=written.rows,
                cutoff=new["cutoff"],
            ),
            now,
        )


def archive_rollout(
    ledger: Ledger,
    folder: Path,
    rollout_id: int,
    cutoff: dt.datetime,
    now: dt.datetime,
    batch: int,
    pace: Pacer | None = None,
) -> ArchiveInfo:
    """Write one file holding every per-device row the rollout has now, and record it."""
    with ledger.retention() as store:
        part = len(store.archives(rollout_id=rollout_id, kind="rollout")) + 1
    name = f"rollout-{rollout_id:08d}-part{part:03d}"
    head = _rollout_header(ledger, rollout_id)
    head.update(kind="rollout", part=part, archived_at=now.isoformat(), cutoff=cutoff.isoformat())
    writer = archive.ArchiveWriter(folder, name, head)
    try:
        for table in ("targets", "commands", "events"):

            def read(after: int, table: str = table) -> list[dict[str, Any]]:
                with ledger.retention() as store:
                    return store.rollout_rows(table, rollout_id, after_id=after, limit=batch)

            for page in _pages(read, pace):
                writer.write(table, page)
    except BaseException:
        writer.abandon()
        raise
    return _record(
        ledger, writer, {"kind": "rollout", "rollout_id": rollout_id, "cutoff": cutoff}, now
    )


def archive_journal(
    ledger: Ledger,
    folder: Path,
    cut: Cutoffs,
    now: dt.datetime,
    batch: int,
    pace: Pacer | None = None,
) -> ArchiveInfo | None:
    """Write one file holding the due records of no rollout (events, refusals, answered
    commands), and record it; None when none is due."""
    statuses = sorted(FINAL_COMMAND_STATUSES)
    with ledger.retention() as store:
        n = (
            store.count_loose_events(cut.events, not_kinds=[REFUSED])
            + store.count_loose_events(cut.refusals, kinds=[REFUSED])
            + store.count_loose_commands(cut.commands, statuses)
        )
    if not n:
        return None
    name = f"journal-{_stamp(now)}-{secrets.token_hex(3)}"
    head = {"kind": "journal", "archived_at": now.isoformat(), "cutoffs": cut.as_json()}
    writer = archive.ArchiveWriter(folder, name, head)

    def events(after: int) -> list[dict[str, Any]]:
        with ledger.retention() as store:
            return store.loose_events(cut.events, not_kinds=[REFUSED], after_id=after, limit=batch)

    def refusals(after: int) -> list[dict[str, Any]]:
        with ledger.retention() as store:
            return store.loose_events(cut.refusals, kinds=[REFUSED], after_id=after, limit=batch)

    def commands(after: int) -> list[dict[str, Any]]:
        with ledger.retention() as store:
            return store.loose_commands(cut.commands, statuses, after_id=after, limit=batch)

    try:
        for table, read in (("events", events), ("events", refusals), ("commands", commands)):
            for page in _pages(read, pace):
                writer.write(table, page)
    except BaseException:
        writer.abandon()
        raise
    return _record(ledger, writer, {"kind": "journal", "cutoff": cut.events}, now)


def archive_due(
    ledger: Ledger,
    folder: Path,
    policy: RetentionPolicy,
    now: dt.datetime,
    *,
    before: dt.datetime | None = None,
    dry_run: bool = False,
    pace: Pacer | None = None,
) -> RetentionReport:
    """Archive what is due (deleting nothing): one file per due rollout not archived yet,
    and one for the due records of no rollout."""
    report = due(ledger, policy, now, before)
    if dry_run:
        return report
    report.dry_run = False
    pace = pace or Pacer(policy.duty, budget=policy.max_run)
    cut = report.cutoffs
    for rollout_id in report.rollouts:
        with ledger.retention() as store:
            pending = store.archives(rollout_id=rollout_id, state="written")
        if pending:  # archived already, waiting to be pruned
            continue
        info = archive_rollout(
            ledger, folder, rollout_id, cut.rollouts, now, policy.batch_size, pace
        )
        report.archives.append(info.name)
        pace.worked = True
        if pace.spent():
            report.stopped = True
            return report
    with ledger.retention() as store:
        journal_pending = bool(store.archives(kind="journal", state="written"))
    if not journal_pending:  # else its records are still on record: prune that one first
        journal = archive_journal(ledger, folder, cut, now, policy.batch_size, pace)
        if journal is not None:
            report.archives.append(journal.name)
    return report


# ---- pruning -------------------------------------------------------------------------------


def _verify(folder: Path, info: ArchiveInfo) -> Path:
    """The archive's file, checked against its recorded checksum."""
    path = folder / f"{info.name}{archive.SUFFIX}"
    try:
        archive.verify(path, info.sha256)
    except archive.ArchiveError as exc:
        raise RetentionError(
            f"archive {info.name} cannot be trusted, nothing deleted: {exc}"
        ) from None
    return path


def _prune_archive(
    ledger: Ledger,
    folder: Path,
    info: ArchiveInfo,
    batch: int,
    report: RetentionReport,
    progress: Progress | None,
    pace: Pacer,
) -> None:
    """Delete the rows one recorded archive holds (those unchanged since it was read), a
    batch per transaction, after checking the file against the recorded checksum."""
    path = _verify(folder, info)
    settled = info.created_at - SETTLE
    for table in DELETE_ORDER:
        for chunk in archive.ids(path, table, batch):
            if pace.spent():
                raise _OutOfTime
            with ledger.retention() as store:
                gone = store.delete_rows(table, chunk, unchanged_since=settled)
                changed = store.changed_since(table, chunk, settled)
            report.deleted[table] += gone
            report.kept_changed += len(changed)
            if progress is not None:
                progress(table, gone)
            if gone:
                pace.worked = True
                pace()
    with ledger.retention() as store:
        store.mark_pruned(info.id, info.created_at)


def prune(
    ledger: Ledger,
    folder: Path,
    policy: RetentionPolicy,
    now: dt.datetime,
    *,
    before: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RetentionReport:
    """Archive what is due, then delete it in small batches.

    Archives recorded by an earlier run but not pruned yet (it stopped) are pruned first.
    Rows written after their archive was read stay, and go with a later archive.
    """
    if dry_run:
        return due(ledger, policy, now, before)
    cut = Cutoffs.of(policy, now, before)
    report = RetentionReport(dry_run=False, cutoffs=cut)
    pace = Pacer(policy.duty, budget=policy.max_run)
    try:
        _drop_blocks(ledger, folder, cut, report, progress, pace)
        with ledger.retention() as store:
            pending = store.archives(state="written")
        for info in pending:
            _prune_archive(ledger, folder, info, policy.batch_size, report, progress, pace)
            report.resumed.append(info.name)
        if pace.spent():
            raise _OutOfTime
        archived = archive_due(ledger, folder, policy, now, before=before, pace=pace)
        report.rollouts, report.pinned = archived.rollouts, archived.pinned
        report.held = archived.held
        report.rows = archived.rows
        report.archives = archived.archives
        report.stopped = archived.stopped
        _drop_blocks(ledger, folder, cut, report, progress, pace)
        with ledger.retention() as store:
            fresh = [a for a in store.archives(state="written") if a.name in set(archived.archives)]
        for info in fresh:
            _prune_archive(ledger, folder, info, policy.batch_size, report, progress, pace)
    except _OutOfTime:
        report.stopped = True
    report.deleted = Counter({k: v for k, v in report.deleted.items() if v})
    return report


# ---- restoring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    """What a restore wrote back, and whether the rollout's rows now add up to its summary."""

    files: list[str]
    kind: str
    rollout_id: int | None
    restored: dict[str, int]
    summary: dict[str, Any] | None  # the archived summary
    summary_matches: bool | None  # the ledger's summary equals the archived one
    rows_match: bool | None  # the rollout's targets, counted, equal the archived summary

    def as_json(self) -> dict[str, Any]:
        """The report as the CLI prints it."""
        return dict(self.__dict__)


def _parts(path: Path, head: dict[str, Any]) -> list[Path]:
    """The files to restore for ``path``: for a rollout, every part of it beside the file,
    newest first (a row a later part holds again was written after the earlier part read it,
    so the later copy is the one to keep); for a journal archive, the file itself."""
    rollout_id = head.get("rollout_id")
    if head.get("kind") != "rollout" or rollout_id is None:
        return [path]
    parts = sorted(path.parent.glob(f"rollout-{int(rollout_id):08d}-part*{archive.SUFFIX}"))
    return sorted(set(parts) | {path}, reverse=True)


def restore(ledger: Ledger, path: Path, *, batch: int = 2000) -> RestoreReport:
    """Bring an archived rollout's rows back into the ledger (for an audit): every part of it
    found beside ``path``, in one transaction. A damaged file, or one naming a rollout or
    devices the ledger no longer has, writes nothing. Rows already there are left alone, so
    restoring twice is harmless. A restored rollout is pruned again by the next run unless it
    is pinned. A journal archive is restored the same way, on its own."""
    path = archive.resolve(path)
    archive.verify(path)
    head = archive.header(path)
    files = _parts(path, head)
    for f in files:
        archive.verify(f)
    newest = archive.header(files[0])
    kind = str(head.get("kind"))
    rollout_id = head.get("rollout_id")
    devices: set[int] = set()
    for f in files:
        for _, row in archive.rows(f):
            if row.get("device_id") is not None:
                devices.add(int(row["device_id"]))
    with ledger.rollouts() as rollouts:
        if rollout_id is not None and rollouts.get(int(rollout_id)) is None:
            raise RetentionError(f"{path.name}: rollout {rollout_id} is not in this ledger")
    if rollout_id is not None:
        ledger.prepare_partitions(int(rollout_id))  # back into a block of its own
    with ledger.retention() as store:
        missing = store.missing_devices(devices)
        if missing:
            shown = ", ".join(str(d) for d in missing[:5])
            raise RetentionError(
                f"{path.name}: {len(missing)} device(s) it names are not in this ledger "
                f"({shown}{', …' if len(missing) > 5 else ''}); nothing restored"
            )
        restored: Counter[str] = Counter()
        for f in files:
            for table in ("targets", "commands", "events"):
                page: list[dict[str, Any]] = []
                for _, row in archive.rows(f, table):
                    page.append(row)
                    if len(page) >= batch:
                        restored[table] += store.restore_rows(table, page)
                        page = []
                restored[table] += store.restore_rows(table, page)
    summary = newest.get("summary") if kind == "rollout" else None
    summary_matches = rows_match = None
    if summary is not None and rollout_id is not None:
        with ledger.rollouts() as rstore:
            now_summary = rstore.summary(int(rollout_id))
            recount = rstore.recount(int(rollout_id))
            recount_reasons = rstore.recount_reasons(int(rollout_id))
        summary_matches = now_summary is not None and now_summary.as_json() == summary
        reasons = {k: v for k, v in newest.get("reasons", {}).items() if v}
        rows_match = recount == summary["states"] and all(
            recount_reasons.get(state, {}) == by_reason for state, by_reason in reasons.items()
        )
    return RestoreReport(
        files=[f.name for f in files],
        kind=kind,
        rollout_id=int(rollout_id) if rollout_id is not None else None,
        restored=dict(sorted(restored.items())),
        summary=summary,
        summary_matches=summary_matches,
        rows_match=rows_match,
    )


# ---- pins and sizes ------------------------------------------------------------------------


def pin(
    ledger: Ledger, rollout_id: int, *, actor: str, now: dt.datetime, pinned: bool = True
) -> None:
    """Keep (or stop keeping) a rollout's per-device rows past the retention period; the
    journal says who did it."""
    with ledger.retention() as store:
        if not store.set_pinned(rollout_id, pinned):
            raise RetentionError(f"no rollout {rollout_id}")
        kind = "rollout.pinned" if pinned else "rollout.unpinned"
        store.record([Event(kind, {"by": actor}, rollout_id=rollout_id)], now)


def stats(ledger: Ledger, policy: RetentionPolicy, now: dt.datetime) -> dict[str, Any]:
    """Table sizes and rows, the oldest row of each kind, and what the policy would remove."""
    with ledger.retention() as store:
        sizes = store.sizes()
        oldest = store.oldest()
        pinned = store.pinned()
        archives = store.archives()
    with ledger.partitions() as parts:
        blocks = [
            {"first": b.lo, "last": b.hi - 1, "detached": sorted(b.detached)}
            for b in parts.blocks()
        ]
        outside = parts.outside_blocks()
    would = due(ledger, policy, now)
    return {
        "backend": ledger.backend,
        "tables": [
            {
                "table": t.table,
                "rows": t.rows,
                "table_bytes": t.table_bytes,
                "index_bytes": t.index_bytes,
            }
            for t in sizes
        ],
        "total_bytes": sum(t.table_bytes + t.index_bytes for t in sizes),
        "oldest": {k: v.isoformat() if v else None for k, v in oldest.items()},
        "pinned": pinned,
        "archives": {
            "written": sum(1 for a in archives if a.state == "written"),
            "pruned": sum(1 for a in archives if a.state == "pruned"),
        },
        "policy": {
            "targets_days": policy.targets.total_seconds() / 86400,
            "commands_days": policy.commands.total_seconds() / 86400,
            "events_days": policy.events.total_seconds() / 86400,
            "refusals_days": policy.refusals.total_seconds() / 86400,
        },
        "partition_blocks": blocks,
        "rows_outside_blocks": outside,
        "would_remove": {
            "rollouts": would.rollouts,
            "kept_by_pin": would.pinned,
            "held_for_block": would.held,
            "rows": dict(sorted(would.rows.items())),
        },
    }
