"""The ledger: the one source of truth, and the only package that touches SQL.

It stores facts and applies the moves it is given; it decides nothing. Each consumer sees it
through one small interface, opened as a transaction by :class:`Ledger`::

    with ledger.checkin() as store:   # the MDM endpoint, webhook receivers   -> CheckinStore
    with ledger.fanout() as store:    # the controller tick and push batches  -> FanoutStore
    with ledger.rollouts() as store:  # rollout reads and operator controls   -> RolloutStore
    with ledger.library() as store:   # provisioning profiles                 -> LibraryStore
    with ledger.registry() as store:  # devices and what they hold            -> RegistryStore
    with ledger.alerts() as store:    # alerts and their notifications        -> AlertStore
    with ledger.access() as store:    # operator API tokens (hashes, roles)   -> AccessStore
    with ledger.heartbeats() as store:  # periodic tasks' last completions  -> HeartbeatStore
    with ledger.delivery() as store:  # commands handed to another MDM server -> DeliveryStore
    with ledger.retention() as store:  # old rows, archives on record, sizes -> RetentionStore
    with ledger.bulk() as loader:     # benchmarks and large fixtures         -> BulkLoader
    with ledger.unit() as unit:       # several of them in one transaction

This page lists every question the product asks its storage. Values crossing the boundary are
the plain dataclasses of :mod:`rollout.ledger.records`; times are always given by the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from rollout.ledger import db
from rollout.ledger.access import AccessLedger, TokenConflictError
from rollout.ledger.alerts import AlertLedger
from rollout.ledger.bulk import BulkLoader, SeedDevice, SeedTarget
from rollout.ledger.checkin import CheckinLedger
from rollout.ledger.delivery import DeliveryLedger
from rollout.ledger.fanout import FanoutLedger
from rollout.ledger.heartbeats import HeartbeatLedger
from rollout.ledger.library import LibraryLedger, ProfileConflictError
from rollout.ledger.partitions import PartitionLedger, block_of
from rollout.ledger.records import (
    AlertInfo,
    AppliedMove,
    ArchiveInfo,
    Authentication,
    BlockRollout,
    CommandResultWrite,
    CommandState,
    DeliveryInfo,
    DeviceFilter,
    DeviceInfo,
    DeviceTarget,
    DueTarget,
    EnrolledDevice,
    Event,
    EventEntry,
    FinishedRollout,
    HandedCommand,
    Holding,
    ImportResult,
    InstalledProfile,
    Move,
    NewAlert,
    NewArchive,
    NewCommand,
    NewRollout,
    NewStage,
    OpenCommand,
    PlannedTarget,
    ProfileEntry,
    ProfileFact,
    PushData,
    PushRecord,
    PushRegistration,
    PushTarget,
    QueuedCommand,
    ReportWrites,
    RolloutFacts,
    RolloutInfo,
    RolloutSummary,
    RunningRollout,
    StageInfo,
    TableSize,
    TargetInfo,
    TokenInfo,
    UnpushableTarget,
)
from rollout.ledger.registry import RegistryLedger
from rollout.ledger.retention import PRUNED_TABLES, RetentionLedger, UnknownTableError
from rollout.ledger.rollouts import RolloutError, RolloutLedger
from rollout.ledger.sealed import SealedLedger, SealedRow
from rollout.ledger.sealing import PLAIN, Sealer

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rollout.inventory import DeviceRecord
    from rollout.profiles import Profile


class Journal(Protocol):
    """Every store can append to the event journal and read it back."""

    def record(self, events: Sequence[Event], at: dt.datetime) -> None: ...
    def events(
        self,
        *,
        kind: str | None = None,
        rollout_id: int | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[EventEntry]: ...


class CheckinStore(Journal, Protocol):
    """The check-in path: enrollments, the command queue, devices' answers."""

    # Authenticate / TokenUpdate / CheckOut
    def device(self, key: str, *, lock: bool = True) -> EnrolledDevice | None: ...
    def certificate_holder(self, cert_sha256: str) -> str | None: ...
    def authenticate(self, auth: Authentication, now: dt.datetime) -> int: ...
    def register_push(self, device_id: int, reg: PushRegistration, now: dt.datetime) -> bool: ...
    def check_out(self, device_id: int, now: dt.datetime) -> None: ...
    def forget_profiles(self, device_id: int) -> None: ...
    def bind_identity(self, device_id: int, cert_sha256: str) -> None: ...
    def drop_open_commands(self, device_id: int, now: dt.datetime) -> list[str]: ...
    def device_targets(
        self,
        device_id: int,
        states: Collection[str],
        *,
        command_uuids: Collection[str] | None = None,
        flagged: bool = False,
    ) -> list[int]: ...
    def flag_for_token_update(self, target_ids: Sequence[int], flagged: bool) -> None: ...
    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]: ...
    # connect reports, a batch at a time
    def devices(self, keys: Collection[str]) -> dict[str, EnrolledDevice]: ...
    def commands(
        self, command_uuids: Collection[str], device_ids: Collection[int] = ()
    ) -> dict[tuple[str, int], CommandState]: ...
    def open_commands(self, device_ids: Collection[int]) -> dict[int, list[QueuedCommand]]: ...
    def apply_reports(self, writes: ReportWrites, now: dt.datetime) -> None: ...
    def rollout_profile(self, rollout_id: int) -> bytes | None: ...
    def rollout_facts(self, rollout_ids: Collection[int]) -> dict[int, RolloutFacts]: ...
    def enqueue(
        self,
        device_id: int,
        command_uuid: str,
        request_type: str,
        body: bytes,
        now: dt.datetime,
        *,
        priority: int = 0,
    ) -> None: ...


class FanoutStore(Journal, Protocol):
    """The fan-out path: claiming targets, pushing them, waiting, finishing rollouts."""

    def running(self) -> list[RunningRollout]: ...
    def count_in(self, rollout_id: int, states: Collection[str]) -> int: ...
    def unpushable_planned(
        self, rollout: RunningRollout, limit: int = 5000, *, need_push_data: bool = True
    ) -> list[UnpushableTarget]: ...
    def claim_planned(
        self,
        rollout: RunningRollout,
        limit: int,
        *,
        request_type: str,
        next_push_at: dt.datetime,
        now: dt.datetime,
        expires_at: dt.datetime | None = None,
        need_push_data: bool = True,
    ) -> list[int]: ...
    def due(self, now: dt.datetime, limit: int = 5000) -> list[DueTarget]: ...
    def expired_commands(self, now: dt.datetime, limit: int = 5000) -> list[tuple[int, int]]: ...
    def retire_commands(self, command_ids: Sequence[int], now: dt.datetime) -> None: ...
    def open_targets(self, rollout_id: int, states: Collection[str]) -> list[int]: ...
    def set_next_push(self, target_ids: Sequence[int], at: dt.datetime) -> None: ...
    def push_targets(self, target_ids: Sequence[int]) -> list[PushTarget]: ...
    def record_pushes(
        self, pushes: Sequence[PushRecord], moves: Sequence[Move], now: dt.datetime
    ) -> list[AppliedMove]: ...
    def mark_tokens_dead(self, devices: Sequence[tuple[int, dt.datetime]]) -> None: ...
    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]: ...
    def running_without(self, states: Collection[str]) -> list[int]: ...
    def finish(
        self,
        rollout_ids: Sequence[int],
        state: str,
        now: dt.datetime,
        *,
        stage_state: str | None = None,
    ) -> None: ...


class RolloutStore(Journal, Protocol):
    """Rollout reads and operator controls."""

    def create(self, new: NewRollout, now: dt.datetime) -> int: ...
    def get(self, rollout_id: int, *, lock: bool = False) -> RolloutInfo | None: ...
    def recent(self, *, limit: int = 1000) -> list[RolloutInfo]: ...
    def in_states(
        self, states: Collection[str], *, others: int = 0
    ) -> tuple[list[RolloutInfo], list[RolloutInfo]]: ...
    def renewing(self, old_uuids: Collection[str]) -> list[RolloutInfo]: ...
    def last_created_by(self, actor: str) -> RolloutInfo | None: ...
    def set_state(self, rollout_id: int, state: str, now: dt.datetime) -> None: ...
    def summary(self, rollout_id: int) -> RolloutSummary | None: ...
    def state_counts(self, rollout_id: int) -> dict[str, int]: ...
    def stage_counts(self, rollout_id: int) -> dict[int, dict[str, int]]: ...
    def counters(self, rollout_ids: Collection[int]) -> dict[int, dict[int, dict[str, int]]]: ...
    def by_state(self) -> dict[str, int]: ...
    def recount(self, rollout_id: int) -> dict[str, int]: ...
    def reason_counts(self, rollout_id: int) -> dict[str, dict[str, int]]: ...
    def recount_reasons(self, rollout_id: int) -> dict[str, dict[str, int]]: ...
    def command_counts(
        self, rollout_id: int, request_type: str | None = None
    ) -> dict[str, int]: ...
    def command_uuids(self, rollout_id: int) -> dict[int, str]: ...
    def targets(
        self, rollout_id: int, device_ids: Collection[int] | None = None
    ) -> dict[int, TargetInfo]: ...
    def stages(self, rollout_id: int) -> list[StageInfo]: ...
    def current_stages(self, rollout_ids: Collection[int]) -> dict[int, StageInfo]: ...
    def set_stage(
        self, rollout_id: int, number: int, state: str, now: dt.datetime, *, current: bool = False
    ) -> None: ...
    def set_reason(self, rollout_id: int, reason: str | None, now: dt.datetime) -> None: ...
    def open_with_profile(self, profile_uuid: str, states: Collection[str]) -> list[int]: ...
    def targeted(
        self, rollout_ids: Collection[int], device_ids: Collection[int], states: Collection[str]
    ) -> dict[int, int]: ...
    def cancel_undelivered(
        self, rollout_id: int, states: Collection[str], now: dt.datetime
    ) -> int: ...
    def target_page(
        self,
        rollout_id: int,
        *,
        after_id: int = 0,
        limit: int = 100,
        states: Collection[str] | None = None,
        reason_prefix: str | None = None,
    ) -> list[tuple[TargetInfo, str]]: ...
    def target_ids(
        self, rollout_id: int, states: Collection[str], *, reasons: Collection[str] | None = None
    ) -> list[int]: ...
    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]: ...


class LibraryStore(Journal, Protocol):
    """The provisioning-profile library."""

    def add(
        self, profile: Profile, content: bytes, now: dt.datetime
    ) -> tuple[ProfileEntry, bool]: ...
    def profiles(self) -> list[ProfileEntry]: ...
    def get(self, uuid: str) -> ProfileEntry | None: ...
    def find(self, prefix: str) -> list[ProfileEntry]: ...
    def content(self, uuid: str) -> bytes | None: ...
    def like(self, *, app_id: str, team_id: str) -> list[ProfileEntry]: ...


class RegistryStore(Journal, Protocol):
    """The device registry and the profiles devices hold."""

    def import_devices(self, records: Sequence[DeviceRecord], now: dt.datetime) -> ImportResult: ...
    def device_ids(self, keys: Sequence[str]) -> dict[str, int]: ...
    def get(self, key: str) -> DeviceInfo | None: ...
    def push_data(self, key: str) -> PushData | None: ...
    def page(
        self, *, after_id: int = 0, limit: int = 100, where: DeviceFilter | None = None
    ) -> list[DeviceInfo]: ...
    def select(
        self, where: DeviceFilter, *, after_id: int = 0, limit: int = 5000
    ) -> list[tuple[int, str]]: ...
    def count_by_state(self, where: DeviceFilter | None = None) -> dict[str, int]: ...
    def holding(self, profile_uuid: str, device_ids: Sequence[int]) -> set[int]: ...
    def installed(self, device_id: int) -> list[InstalledProfile]: ...
    def targets_of(self, device_id: int, *, limit: int = 200) -> list[DeviceTarget]: ...
    def expiring(self, horizon: dt.datetime) -> list[Holding]: ...
    def lacking(
        self, profile_uuid: str, replacement_uuid: str | None, *, sample: int = 10
    ) -> tuple[int, list[str]]: ...


class AlertStore(Journal, Protocol):
    """Alerts (one live alert per finding) and the outbox of their notifications."""

    def live(self, kinds: Collection[str] | None = None) -> list[AlertInfo]: ...
    def live_counts(self) -> dict[tuple[str, str], int]: ...
    def raise_new(self, alerts: Sequence[NewAlert], now: dt.datetime) -> list[AlertInfo]: ...
    def revise(
        self,
        alert_id: int,
        now: dt.datetime,
        *,
        severity: str | None = None,
        title: str | None = None,
        data: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> None: ...
    def mark_notified(self, alert_ids: Collection[int], now: dt.datetime) -> None: ...
    def acknowledge(self, alert_id: int, by: str, now: dt.datetime) -> None: ...
    def resolve(self, alert_ids: Collection[int], by: str, now: dt.datetime) -> None: ...
    def get(self, alert_id: int, *, lock: bool = False) -> AlertInfo | None: ...
    def alerts(
        self, *, states: Collection[str] | None = None, limit: int = 200
    ) -> list[AlertInfo]: ...
    def queue(self, items: Sequence[tuple[int, str, dict[str, Any]]], now: dt.datetime) -> None: ...
    def claim(
        self, now: dt.datetime, until: dt.datetime, limit: int = 50
    ) -> list[DeliveryInfo]: ...
    def record_attempt(
        self,
        delivery_id: int,
        now: dt.datetime,
        *,
        state: str,
        next_at: dt.datetime,
        status: int | None,
        error: str | None,
    ) -> None: ...
    def deliveries(self, alert_id: int) -> list[DeliveryInfo]: ...


class AccessStore(Journal, Protocol):
    """Operator API tokens: hashes and roles, never the tokens themselves."""

    def add_token(
        self, name: str, role: str, token_hash: str, created_by: str, now: dt.datetime
    ) -> TokenInfo: ...
    def by_hash(self, token_hash: str) -> TokenInfo | None: ...
    def tokens(self) -> list[TokenInfo]: ...
    def live_tokens(self) -> int: ...
    def revoke(self, token_id: int, now: dt.datetime) -> None: ...
    def touch(self, token_id: int, now: dt.datetime) -> None: ...


class HeartbeatStore(Protocol):
    """When each periodic task last completed (written by the task, read by ``rollout check``)."""

    def beat(self, name: str, at: dt.datetime) -> None: ...
    def heartbeats(self) -> dict[str, dt.datetime]: ...


class DeliveryStore(Journal, Protocol):
    """Delivery through another MDM server: the commands handed to it and their fate."""

    def open_commands(self, target_ids: Sequence[int]) -> dict[int, OpenCommand]: ...
    def share_command_uuid(self, commands: Sequence[OpenCommand], command_uuid: str) -> None: ...
    def unhanded(self, target_states: Collection[str], limit: int = 5000) -> list[OpenCommand]: ...
    def mark_handed(self, command_ids: Sequence[int], now: dt.datetime) -> None: ...
    def unanswered(
        self, sent_before: dt.datetime, target_states: Collection[str], limit: int = 5000
    ) -> list[HandedCommand]: ...
    def to_withdraw(self, limit: int = 5000) -> list[HandedCommand]: ...
    def set_status(self, command_ids: Sequence[int], status: str, now: dt.datetime) -> None: ...
    def move(self, moves: Sequence[Move], now: dt.datetime) -> list[AppliedMove]: ...


class RetentionStore(Journal, Protocol):
    """Retention: finished rollouts' per-device rows and old journal records, read and
    deleted in small batches by id; archive files on record; pins; sizes. Rows are
    JSON-ready dicts (see :mod:`rollout.ledger.retention`)."""

    def finished(
        self,
        states: Collection[str],
        before: dt.datetime,
        *,
        pinned: bool | None = False,
        limit: int = 1000,
    ) -> list[FinishedRollout]: ...
    def set_pinned(self, rollout_id: int, pinned: bool) -> bool: ...
    def pinned(self) -> list[int]: ...
    def rollout_rows(
        self, table: str, rollout_id: int, *, after_id: int = 0, limit: int = 2000
    ) -> list[dict[str, Any]]: ...
    def count_rollout_rows(self, rollout_id: int) -> dict[str, int]: ...
    def loose_events(
        self,
        before: dt.datetime,
        *,
        kinds: Collection[str] | None = None,
        not_kinds: Collection[str] = (),
        after_id: int = 0,
        limit: int = 2000,
    ) -> list[dict[str, Any]]: ...
    def count_loose_events(
        self,
        before: dt.datetime,
        *,
        kinds: Collection[str] | None = None,
        not_kinds: Collection[str] = (),
    ) -> int: ...
    def loose_commands(
        self,
        before: dt.datetime,
        statuses: Collection[str],
        *,
        after_id: int = 0,
        limit: int = 2000,
    ) -> list[dict[str, Any]]: ...
    def count_loose_commands(self, before: dt.datetime, statuses: Collection[str]) -> int: ...
    def delete_rows(
        self, table: str, ids: Sequence[int], *, unchanged_since: dt.datetime | None = None
    ) -> int: ...
    def changed_since(self, table: str, ids: Sequence[int], since: dt.datetime) -> list[int]: ...
    def restore_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> int: ...
    def missing_devices(self, device_ids: Collection[int]) -> list[int]: ...
    def add_archive(self, new: NewArchive, now: dt.datetime) -> ArchiveInfo: ...
    def archives(
        self, *, rollout_id: int | None = None, state: str | None = None, kind: str | None = None
    ) -> list[ArchiveInfo]: ...
    def archive_named(self, name: str) -> ArchiveInfo | None: ...
    def mark_pruned(self, archive_id: int, now: dt.datetime) -> None: ...
    def sizes(self) -> list[TableSize]: ...
    def oldest(self) -> dict[str, dt.datetime | None]: ...
    def partitioned(self) -> bool: ...
    def block_rollouts(self, lo: int, hi: int) -> list[BlockRollout]: ...


class Unit:
    """Every store over one transaction (for work that spans consumers, e.g. planning)."""

    def __init__(self, session: db.Session, sealer: Sealer = PLAIN) -> None:
        self.checkin: CheckinStore = CheckinLedger(session, sealer)
        self.fanout: FanoutStore = FanoutLedger(session, sealer)
        self.rollouts: RolloutStore = RolloutLedger(session)
        self.library: LibraryStore = LibraryLedger(session)
        self.registry: RegistryStore = RegistryLedger(session, sealer)
        self.alerts: AlertStore = AlertLedger(session)
        self.access: AccessStore = AccessLedger(session)
        self.bulk = BulkLoader(session, sealer)


class Ledger:
    """A ledger database: opens a transaction per unit of work, as the store it is used as.

    Each ``with`` block is one transaction: committed when the block ends, rolled back when it
    raises. ``sealer`` seals devices' push secrets at rest (see :mod:`rollout.ledger.sealing`);
    by default they are stored as they are.
    """

    def __init__(self, engine: Engine, sealer: Sealer = PLAIN) -> None:
        self.engine = engine
        self.sealer = sealer

    @classmethod
    def open(cls, url: str, sealer: Sealer = PLAIN) -> Ledger:
        """A ledger on ``url`` (the schema must be migrated: see :func:`db.upgrade`)."""
        return cls(db.make_engine(url), sealer)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """Every store over one transaction."""
        with db.transaction(self.engine) as session:
            yield Unit(session, self.sealer)

    @contextmanager
    def checkin(self) -> Iterator[CheckinStore]:
        """See :class:`CheckinStore`."""
        with db.transaction(self.engine) as session:
            yield CheckinLedger(session, self.sealer)

    @contextmanager
    def fanout(self) -> Iterator[FanoutStore]:
        """See :class:`FanoutStore`."""
        with db.transaction(self.engine) as session:
            yield FanoutLedger(session, self.sealer)

    @contextmanager
    def rollouts(self) -> Iterator[RolloutStore]:
        """See :class:`RolloutStore`."""
        with db.transaction(self.engine) as session:
            yield RolloutLedger(session)

    @contextmanager
    def library(self) -> Iterator[LibraryStore]:
        """See :class:`LibraryStore`."""
        with db.transaction(self.engine) as session:
            yield LibraryLedger(session)

    @contextmanager
    def registry(self) -> Iterator[RegistryStore]:
        """See :class:`RegistryStore`."""
        with db.transaction(self.engine) as session:
            yield RegistryLedger(session, self.sealer)

    @contextmanager
    def alerts(self) -> Iterator[AlertStore]:
        """See :class:`AlertStore`."""
        with db.transaction(self.engine) as session:
            yield AlertLedger(session)

    @contextmanager
    def access(self) -> Iterator[AccessStore]:
        """See :class:`AccessStore`."""
        with db.transaction(self.engine) as session:
            yield AccessLedger(session)

    @contextmanager
    def heartbeats(self) -> Iterator[HeartbeatStore]:
        """See :class:`HeartbeatStore`."""
        with db.transaction(self.engine) as session:
            yield HeartbeatLedger(session)

    @contextmanager
    def sealed(self) -> Iterator[SealedLedger]:
        """See :class:`~rollout.ledger.sealed.SealedLedger`."""
        with db.transaction(self.engine) as session:
            yield SealedLedger(session)

    @contextmanager
    def delivery(self) -> Iterator[DeliveryStore]:
        """See :class:`DeliveryStore`."""
        with db.transaction(self.engine) as session:
            yield DeliveryLedger(session)

    @contextmanager
    def retention(self) -> Iterator[RetentionStore]:
        """See :class:`RetentionStore`."""
        with db.transaction(self.engine) as session:
            yield RetentionLedger(session)

    @contextmanager
    def partitions(self) -> Iterator[PartitionLedger]:
        """See :class:`~rollout.ledger.partitions.PartitionLedger` (DDL: keep the block short)."""
        with db.transaction(self.engine) as session:
            yield PartitionLedger(session)

    def prepare_partitions(self, rollout_id: int | None = None) -> list[str]:
        """Make sure the block the next rollout falls in (or the block of ``rollout_id``,
        which an archive is restored into) exists in the partitioned tables (PostgreSQL;
        nothing elsewhere), in a short transaction of its own. Never fails the caller: a
        block that cannot be made now (its lock not granted in time) is made by a later
        call, and meanwhile the default partition takes its rows. The partitions made."""
        if self.backend != "postgresql":
            return []
        made: list[str] = []
        try:
            with self.partitions() as parts:
                if not parts.enabled:
                    return []
                # only the one block: each partition more is one more index that a
                # check-in's lookup by device visits
                block = block_of(rollout_id if rollout_id is not None else parts.next_rollout_id())
                made += [f"{t}_rollouts_{block}" for t in parts.create(block)]
        except DBAPIError as exc:
            _log.warning("partitions: could not create the next block now: %s", exc.orig)
        return made

    def vacuum(self, *, full: bool = False) -> None:
        """Tidy up after a prune. SQLite: ``VACUUM`` gives the space back to the file system
        (it holds the whole file while it runs: a quiet time). PostgreSQL: ``VACUUM (ANALYZE)``
        of the pruned tables marks their space free for reuse and refreshes the planner's
        statistics without blocking writers; ``full`` rewrites them to give the space back,
        which locks them (a maintenance window, or a benchmark)."""
        raw = self.engine.raw_connection()
        try:
            if self.backend == "sqlite":
                # in WAL mode the rewritten file reaches the main file at a checkpoint
                statements = ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]
            else:
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
                how = "FULL, ANALYZE" if full else "ANALYZE"
                statements = [f"VACUUM ({how}) {table}" for table in PRUNED_TABLES]
            cur = raw.cursor()
            for statement in statements:
                cur.execute(statement)
            cur.close()
        finally:
            if self.backend != "sqlite":
                raw.driver_connection.autocommit = False  # type: ignore[union-attr]
            raw.close()

    @contextmanager
    def bulk(self) -> Iterator[BulkLoader]:
        """See :class:`~rollout.ledger.bulk.BulkLoader`."""
        with db.transaction(self.engine) as session:
            yield BulkLoader(session, self.sealer)


__all__ = [
    "PRUNED_TABLES",
    "AccessStore",
    "AlertInfo",
    "AlertStore",
    "AppliedMove",
    "ArchiveInfo",
    "Authentication",
    "BlockRollout",
    "BulkLoader",
    "CheckinStore",
    "CommandResultWrite",
    "CommandState",
    "DeliveryInfo",
    "DeliveryStore",
    "DeviceFilter",
    "DeviceInfo",
    "DeviceTarget",
    "DueTarget",
    "EnrolledDevice",
    "Event",
    "EventEntry",
    "FanoutStore",
    "FinishedRollout",
    "HandedCommand",
    "HeartbeatStore",
    "Holding",
    "ImportResult",
    "InstalledProfile",
    "Journal",
    "Ledger",
    "LibraryStore",
    "Move",
    "NewAlert",
    "NewArchive",
    "NewCommand",
    "NewRollout",
    "NewStage",
    "OpenCommand",
    "PartitionLedger",
    "PlannedTarget",
    "ProfileConflictError",
    "ProfileEntry",
    "ProfileFact",
    "PushData",
    "PushRecord",
    "PushRegistration",
    "PushTarget",
    "QueuedCommand",
    "RegistryStore",
    "ReportWrites",
    "RetentionStore",
    "RolloutError",
    "RolloutFacts",
    "RolloutInfo",
    "RolloutStore",
    "RolloutSummary",
    "RunningRollout",
    "SealedLedger",
    "SealedRow",
    "Sealer",
    "SeedDevice",
    "SeedTarget",
    "StageInfo",
    "TableSize",
    "TargetInfo",
    "TokenConflictError",
    "TokenInfo",
    "Unit",
    "UnknownTableError",
    "UnpushableTarget",
    "db",
]
