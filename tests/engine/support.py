"""What the engine tests share: a fleet with a running rollout, enrolled devices with their
certificates, a rollout with every command queued, and reports run through reconcile."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rollout.clock import ManualClock
from rollout.enrollment import IdentityPolicy
from rollout.inventory import read_inventory
from rollout.ledger import Ledger, ProfileEntry, RunningRollout
from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
from rollout.policy import EnginePolicy
from rollout.reconcile import Outcome, Report, process_reports
from tests.support import TOPIC, add_profile, enroll, start_rollout, token, udid

T = TypeVar("T")


@dataclass
class Fleet:
    rollout_id: int
    devices: dict[int, int]  # n -> device id


def import_fleet(
    ledger: Ledger, n: int, now: dt.datetime, *, no_token: frozenset[int] = frozenset()
) -> dict[int, int]:
    """``n`` imported devices (pushable unless in ``no_token``); ``n -> device id``."""
    lines = ["udid,push_token,push_magic,topic"]
    for i in range(n):
        pushable = i not in no_token
        lines.append(f"{udid(i)},{token(i)},magic-{i},{TOPIC}" if pushable else f"{udid(i)},,,")
    report = read_inventory(("\n".join(lines) + "\n").encode(), fmt="csv")
    assert not report.errors
    with ledger.registry() as store:
        store.import_devices(report.records, now)
        ids = store.device_ids([udid(i) for i in range(n)])
    return {i: ids[udid(i)] for i in range(n)}


def make_fleet(
    ledger: Ledger,
    n: int,
    now: dt.datetime,
    *,
    no_token: frozenset[int] = frozenset(),
    **spec: Any,
) -> Fleet:
    """``n`` imported devices (pushable unless in ``no_token``) and a running rollout to them
    (one stage, no verification, unless ``spec`` says otherwise)."""
    devices = import_fleet(ledger, n, now, no_token=no_token)
    profile = add_profile(ledger, now)
    rollout_id = start_rollout(ledger, profile.uuid, [udid(i) for i in range(n)], now, **spec)
    return Fleet(rollout_id, devices)


CERT = {n: f"{n:064x}" for n in range(10)}
STRICT = IdentityPolicy()
POLICY = EnginePolicy(notnow_backoff=dt.timedelta(minutes=1))
IMPORTED = "11111111-2222-3333-4444-555555555555"
STALE = "66666666-7777-8888-9999-000000000000"


def enrolled(ledger: Ledger, clock: ManualClock, *ns: int) -> list[int]:
    return [enroll(ledger, n, clock.now(), cert_sha256=CERT[n], policy=STRICT) for n in ns]


def queued_rollout(
    ledger: Ledger, clock: ManualClock, ns: list[int]
) -> tuple[int, dict[int, str], str]:
    """A running rollout to devices ``ns`` with every target queued: (id, device -> uuid,
    profile uuid)."""
    profile = add_profile(ledger, clock.now())
    rid = start_rollout(ledger, profile.uuid, [udid(n) for n in ns], clock.now())
    with ledger.fanout() as store:
        store.claim_planned(
            RunningRollout(rid, 0),
            1000,
            request_type=INSTALL_PROVISIONING_PROFILE,
            next_push_at=clock.now(),
            now=clock.now(),
        )
    with ledger.rollouts() as store:
        return rid, store.command_uuids(rid), profile.uuid


def report(
    ledger: Ledger, clock: ManualClock, *reports: Report, identity: IdentityPolicy = STRICT
) -> list[Outcome]:
    with ledger.checkin() as store:
        return process_reports(
            store, list(reports), identity=identity, policy=POLICY, now=clock.now()
        )


def state(ledger: Ledger, rid: int, device: int) -> str:
    with ledger.rollouts() as store:
        return store.targets(rid, [device])[device].state


def held_fleet(ledger: Ledger, now: dt.datetime, n: int, *holds: ProfileEntry) -> None:
    """``n`` pushable devices, each known to hold every profile in ``holds``."""
    lines = ["udid,push_token,push_magic,topic,profiles"]
    held = ";".join(p.uuid for p in holds)
    lines += [f"{udid(i)},{token(i)},magic-{i},{TOPIC},{held}" for i in range(n)]
    report = read_inventory(("\n".join(lines) + "\n").encode(), fmt="csv")
    assert not report.errors
    with ledger.registry() as store:
        store.import_devices(report.records, now)


def expiring(ledger: Ledger, now: dt.datetime, days: int, **kw: object) -> ProfileEntry:
    """A profile made a year ago that expires ``days`` from ``now``."""
    return add_profile(
        ledger,
        now,
        created_at=now - dt.timedelta(days=360),
        expires_at=now + dt.timedelta(days=days),
        **kw,  # type: ignore[arg-type]
    )


def at_once(n: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``n`` threads released together; the results (any error is raised)."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
