"""Group commit for the MDM endpoints: requests that arrive together share one transaction.

Handlers hand their parsed report to :class:`LedgerBatcher` and await the outcome. One writer
thread takes whatever has queued up while the previous batch was being written (under load it
lingers up to ``linger_s`` for more) and reconciles it with
:func:`rollout.reconcile.process_reports` in a single transaction, so the ledger cost per
request falls as load rises. The outcome is only given back after the commit, so a
device never gets a 200 for a result that is not yet stored.

One device can never hurt another: when a batch fails to store, each of its reports is written
again on its own, so only the report that cannot be stored fails (answered with a refusal and
recorded), and its neighbours get their answers.

Refusals the engine decides (an unknown enrollment, a certificate that does not fit) are held
back from the transaction that decides them and journalled after its commit, through the
:class:`~rollout.web.refusals.RefusalLog`: a batch that fails and is stored again report by
report then counts its refusals once, and a flood of them is sampled like any other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy.exc import DBAPIError, OperationalError

from rollout.clock import Clock
from rollout.enrollment import IdentityPolicy
from rollout.ledger import CheckinStore, Event, Ledger, ReportWrites
from rollout.mdm import (
    CommandTemplate,
    install_provisioning_profile,
    provisioning_profile_list,
    remove_provisioning_profile,
)
from rollout.policy import EnginePolicy
from rollout.reconcile import Outcome, Report, process_reports
from rollout.spec import RolloutOptions
from rollout.web.refusals import REFUSED, RefusalLog

log = logging.getLogger(__name__)
T = TypeVar("T")

LINGER_S = 0.01
"""How long, under load, the writer waits for a batch to fill up (see ``_run``)."""


@dataclass(frozen=True)
class Answer:
    """A connect outcome with the bytes to send."""

    outcome: Outcome
    body: bytes


class CommandBodies:
    """Each rollout's command body, rendered once (from its profile, for an install) and reused:
    only the CommandUUID differs per device."""

    def __init__(self) -> None:
        self._templates: dict[int, CommandTemplate] = {}

    def body(self, store: CheckinStore, rollout_id: int, command_uuid: str) -> bytes:
        """The wire bytes of ``rollout_id``'s command for one device."""
        template = self._templates.get(rollout_id)
        if template is None:
            template = self._template(store, rollout_id)
            self._templates[rollout_id] = template
        return template.render(command_uuid)

    @staticmethod
    def _template(store: CheckinStore, rollout_id: int) -> CommandTemplate:
        facts = store.rollout_facts([rollout_id]).get(rollout_id)
        opts = RolloutOptions.from_json(facts.options if facts else None)
        if opts.command == "list":
            return provisioning_profile_list()
        if opts.command == "remove":
            if not opts.remove_uuid:
                raise LookupError(f"rollout {rollout_id} names no profile to remove")
            return remove_provisioning_profile(opts.remove_uuid)
        content = store.rollout_profile(rollout_id)
        if content is None:
            raise LookupError(f"rollout {rollout_id} has no profile")
        return install_provisioning_profile(content)


class _HeldRefusals:
    """The check-in store as the engine sees it, except that refusal events wait in ``held``
    instead of joining the transaction (see the module docs)."""

    def __init__(self, store: CheckinStore) -> None:
        self._store = store
        self.held: list[Event] = []

    def record(self, events: Sequence[Event], at: dt.datetime) -> None:
        """Journal ``events``, keeping the refusals back."""
        self._store.record(self._hold(events), at)

    def apply_reports(self, writes: ReportWrites, now: dt.datetime) -> None:
        """Apply a batch's writes, keeping its refusal events back."""
        self._store.apply_reports(
            dataclasses.replace(writes, events=self._hold(writes.events)), now
        )

    def _hold(self, events: Sequence[Event]) -> list[Event]:
        self.held.extend(e for e in events if e.kind == REFUSED)
        return [e for e in events if e.kind != REFUSED]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _holding(store: CheckinStore) -> tuple[CheckinStore, _HeldRefusals]:
    held = _HeldRefusals(store)
    return cast(CheckinStore, held), held


class _Item:
    __slots__ = ("future", "loop", "payload")

    def __init__(self, payload: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.payload = payload
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


def _settle(item: _Item, result: Any = None, error: BaseException | None = None) -> None:
    def apply() -> None:
        if item.future.done():
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    item.loop.call_soon_threadsafe(apply)


def _settle_all(items: list[_Item], results: list[Any]) -> None:
    """Settle a whole batch with one wake-up per event loop (not one per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, Any]]] = {}
    for item, result in zip(items, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item, result))

    def apply(pairs: list[tuple[_Item, Any]]) -> None:
        for item, result in pairs:
            if not item.future.done():
                item.future.set_result(result)

    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(apply, pairs)


class LedgerBatcher:
    """The MDM endpoints' single ledger writer (one per web process)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        identity: IdentityPolicy,
        policy: EnginePolicy,
        clock: Clock,
        refusals: RefusalLog | None = None,
        max_batch: int = 512,
        linger_s: float = LINGER_S,
    ) -> None:
        self._ledger = ledger
        self.identity_policy = identity
        self.policy = policy
        self.clock = clock
        self.refusals = refusals or RefusalLog()
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._last_batch = 0
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._bodies = CommandBodies()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.reports = 0
        self.by_status: Counter[str] = Counter()  # stored reports by their status
        self.split_batches = 0  # batches that failed and were stored again report by report
        self.write_cpu_s = 0.0  # CPU time of the writer thread in connect batches
        self.write_wall_s = 0.0  # wall time of those batches (CPU + waiting on the database)

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ledger-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued and stop the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def connect(self, report: Report) -> Answer:
        """Persist one connect report (batched with its neighbours) and get the answer."""
        item = _Item(("connect", report), asyncio.get_running_loop())
        self._queue.put(item)
        answer: Answer = await item.future
        return answer

    async def run(self, work: Callable[[CheckinStore], T]) -> T:
        """Run engine ``work`` in its own transaction on the writer thread (check-ins); the
        refusals it records are journalled after the commit, sampled."""
        return await self._submit(work, hold_refusals=True)

    async def journal(self, events: list[Event]) -> None:
        """Append ``events`` as they are (already sampled) on the writer thread."""
        now = self.clock.now()

        def write(store: CheckinStore) -> None:
            store.record(events, now)

        await self._submit(write, hold_refusals=False)

    async def flush_refusals(self, *, everything: bool = False) -> None:
        """Journal the summaries of the refusal windows that have closed (all, at shutdown)."""
        events = self.refusals.due(self.clock.now(), everything=everything)
        if events:
            await self.journal(events)

    async def _submit(self, work: Callable[[CheckinStore], T], *, hold_refusals: bool) -> T:
        item = _Item(("work", work, hold_refusals), asyncio.get_running_loop())
        self._queue.put(item)
        result: T = await item.future
        return result

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            # Under load, linger a moment so the batch fills up: a batch has a fixed cost of
            # a handful of statements and round trips, and a few milliseconds here halve the
            # writer's cost per report. A lone request (the last batch was one item) does not
            # wait.
            linger = self._linger_s if self._last_batch > 1 else 0.0
            deadline = time.perf_counter() + linger
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._last_batch = len(batch)
            connects = [i for i in batch if i.payload[0] == "connect"]
            works = [i for i in batch if i.payload[0] == "work"]
            if connects:
                self._write_connects(connects)
            for item in works:
                self._write_work(item)
            if stop:
                return

    def _write_connects(self, items: list[_Item]) -> None:
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            self._write_connects_timed(items)
        finally:
            self.write_cpu_s += time.thread_time() - cpu0
            self.write_wall_s += time.perf_counter() - wall0

    def _write_connects_timed(self, items: list[_Item]) -> None:
        try:
            answers = self._store_reports([i.payload[1] for i in items])
        except Exception as exc:
            if len(items) == 1 or ledger_unavailable(exc):
                # Nothing was committed and the devices retry; a lone report that cannot be
                # stored is refused (below) rather than failing again and again.
                self._give_up(items, exc)
                return
            log.warning(
                "connect batch of %d failed (%s); storing its reports one by one",
                len(items),
                type(exc).__name__,
            )
            self.split_batches += 1
            for item in items:
                self._write_connects_timed([item])
            return
        self.batches += 1
        self.reports += len(items)
        self.by_status.update(item.payload[1].status for item in items)
        _settle_all(items, answers)

    def _store_reports(self, reports: list[Report]) -> list[Answer]:
        now = self.clock.now()
        with self._ledger.checkin() as store:
            engine_store, held = _holding(store)
            outcomes = process_reports(
                engine_store,
                reports,
                identity=self.identity_policy,
                policy=self.policy,
                now=now,
            )
            answers = [self._answer(store, o) for o in outcomes]
        self._journal_refusals(held.held, now)
        return answers

    def _journal_refusals(self, events: list[Event], now: dt.datetime) -> None:
        """Journal the sample of committed work's refusals (never fails the work itself)."""
        if not events:
            return
        try:
            kept = self.refusals.sample(events, now)
            if kept:
                with self._ledger.checkin() as store:
                    store.record(kept, now)
        except Exception as exc:
            log.error("could not journal %d refusals: %.300s", len(events), exc)

    def _give_up(self, items: list[_Item], exc: Exception) -> None:
        if len(items) > 1 or ledger_unavailable(exc):
            log.error("connect batch of %d failed: %.300s", len(items), exc)
            for item in items:
                _settle(item, error=exc)
            return
        [item] = items
        report: Report = item.payload[1]
        log.warning("report from %.128s cannot be stored: %.300s", report.enrollment_id, exc)
        refusal = Event(
            REFUSED,
            {"reason": "unstorable", "error": type(exc).__name__},
            enrollment_id=report.enrollment_id,
            command_uuid=report.command_uuid,
        )
        self._journal_refusals([refusal], self.clock.now())
        _settle(item, Answer(Outcome(refusal="unstorable"), b""))

    def _answer(self, store: CheckinStore, outcome: Outcome) -> Answer:
        served = outcome.served
        if served is None:
            return Answer(outcome, b"")
        if served.body is not None:
            return Answer(outcome, served.body)
        assert served.rollout_id is not None
        return Answer(outcome, self._bodies.body(store, served.rollout_id, served.command_uuid))

    def _write_work(self, item: _Item) -> None:
        _, work, hold_refusals = item.payload
        now = self.clock.now()
        held: _HeldRefusals | None = None
        try:
            with self._ledger.checkin() as store:
                engine_store, held = _holding(store) if hold_refusals else (store, None)
                result = work(engine_store)
        except Exception as exc:
            if ledger_unavailable(exc):
                log.error("ledger work failed: %.300s", exc)
            else:
                # the caller answers it (a check-in that cannot be stored is refused)
                log.warning("ledger work failed: %s: %.200s", type(exc).__name__, exc)
            _settle(item, error=exc)
            return
        if held is not None:
            self._journal_refusals(held.held, now)
        _settle(item, result)


def ledger_unavailable(exc: BaseException) -> bool:
    """The database is unreachable, the connection broke or the server is short of something:
    nobody's report is at fault, so nobody's report is refused for it."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    # psycopg files PostgreSQL's "program limit exceeded" class (a value too large or too deep
    # for an index or a JSON document) under OperationalError; that one is the data's fault.
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return not (isinstance(sqlstate, str) and sqlstate.startswith("54"))
