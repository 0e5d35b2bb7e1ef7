"""The refusal log on its own: windows per reason and source, the cap on sources, counts that add
up, and which ledger errors are a report's fault."""

from __future__ import annotations

import datetime as dt

import psycopg.errors
from sqlalchemy.exc import DataError, OperationalError

from rollout.clock import ManualClock
from rollout.ledger import Event
from rollout.web.batcher import ledger_unavailable
from rollout.web.refusals import EVERY_SOURCE, REFUSED, RefusalLimits, RefusalLog

WINDOW = dt.timedelta(seconds=60)


def total(events: list[Event]) -> int:
    return sum(e.data["count"] for e in events)


def test_the_first_refusal_of_a_window_is_kept_the_rest_counted(clock: ManualClock) -> None:
    log = RefusalLog(RefusalLimits(window=WINDOW, max_sources=10))
    kept = [log.admit("not_plist", "192.0.2.1", clock.now()) for _ in range(5)]
    assert kept == [True, False, False, False, False]
    assert log.due(clock.now()) == []  # the window is still open
    clock.advance(WINDOW)
    [summary] = log.due(clock.now())
    assert summary.kind == REFUSED
    assert summary.data["count"] == 4 and summary.data["summary"] is True
    assert summary.data["source"] == "192.0.2.1" and summary.data["reason"] == "not_plist"
    assert log.admit("not_plist", "192.0.2.1", clock.now())  # a new window: kept again
    assert log.counts() == {"not_plist": 6}


def test_sources_past_the_cap_are_counted_per_reason(clock: ManualClock) -> None:
    log = RefusalLog(RefusalLimits(window=WINDOW, max_sources=3))
    kept = [log.admit("not_plist", f"192.0.2.{n}", clock.now()) for n in range(10)]
    assert kept == [True] * 3 + [False] * 7
    events = log.due(clock.now(), everything=True)
    [overflow] = [e for e in events if e.data["source"] == EVERY_SOURCE]
    assert overflow.data["count"] == 7
    assert 3 + total(events) == 10 == sum(log.counts().values())


def test_engine_refusals_are_sampled_per_enrollment_and_trimmed(clock: ManualClock) -> None:
    log = RefusalLog(RefusalLimits(window=WINDOW, max_sources=10))
    long_udid = "A" * 5000
    events = [
        Event(
            REFUSED,
            {"reason": "unknown_enrollment"},
            enrollment_id=long_udid,
            command_uuid="c" * 99,
        )
        for _ in range(3)
    ] + [Event(REFUSED, {"reason": "identity_mismatch"}, enrollment_id="UDID-1")]
    kept = log.sample(events, clock.now())
    assert [e.data["reason"] for e in kept] == ["unknown_enrollment", "identity_mismatch"]
    assert all(e.data["count"] == 1 for e in kept)
    assert kept[0].enrollment_id == "A" * 128 and kept[0].command_uuid == "c" * 64
    clock.advance(WINDOW)
    assert total(kept) + total(log.due(clock.now())) == 4


def test_only_an_unreachable_ledger_is_nobodys_fault() -> None:
    def operational(orig: Exception) -> OperationalError:
        return OperationalError("INSERT …", {}, orig)

    assert ledger_unavailable(operational(psycopg.errors.AdminShutdown("going down")))
    assert ledger_unavailable(operational(psycopg.errors.DiskFull("no space")))
    # a value too big or too deep for an index or a JSON document: the report's fault
    assert not ledger_unavailable(operational(psycopg.errors.ProgramLimitExceeded("too big")))
    assert not ledger_unavailable(DataError("INSERT …", {}, ValueError("too long")))
