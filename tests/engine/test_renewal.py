"""The expiry scan: candidates when a replacement exists, alerts when none does, once a day."""

from __future__ import annotations

import datetime as dt

from rollout import renewal
from rollout.clock import ManualClock
from rollout.inventory import read_inventory
from rollout.ledger import Ledger
from tests.support import add_profile


def test_scan_finds_expiring_holdings_and_their_replacements(
    clock: ManualClock, ledger: Ledger
) -> None:
    now = clock.now()
    old = add_profile(
        ledger,
        now,
        bundle_id="com.example.field",
        created_at=now - dt.timedelta(days=350),
        expires_at=now + dt.timedelta(days=15),
    )
    new = add_profile(ledger, now, bundle_id="com.example.field")
    other = add_profile(
        ledger,
        now,
        bundle_id="com.example.other",
        created_at=now - dt.timedelta(days=360),
        expires_at=now + dt.timedelta(days=5),
    )
    rows = "udid,profiles\n" + "".join(
        f"00008020-{i:016X},{old.uuid};{other.uuid}\n" for i in range(3)
    )
    with ledger.registry() as store:
        store.import_devices(read_inventory(rows.encode(), fmt="csv").records, now)

    report = renewal.scan(ledger, now)
    assert [(c["profile"], c["replacement"], c["devices"]) for c in report.candidates] == [
        (old.uuid, new.uuid, 3)
    ]
    assert [(a["profile"], a["devices"]) for a in report.alerts] == [(other.uuid, 3)]
    renewal.scan(ledger, clock.advance(dt.timedelta(hours=1)))  # nothing recorded twice
    with ledger.library() as store:
        assert len(store.events(kind="renewal.candidate")) == 1
        assert len(store.events(kind="renewal.alert")) == 1
    renewal.scan(ledger, clock.advance(dt.timedelta(days=1)))  # a day later: noted again
    with ledger.library() as store:
        assert len(store.events(kind="renewal.candidate")) == 2


def test_push_certificate_expiry_alert(clock: ManualClock, ledger: Ledger) -> None:
    now = clock.now()
    far = renewal.check_push_certificate(
        ledger, now + dt.timedelta(days=200), "com.apple.mgmt.x", now
    )
    assert far is None
    soon = renewal.check_push_certificate(
        ledger, now + dt.timedelta(days=10), "com.apple.mgmt.x", now
    )
    assert soon is not None and soon["days_left"] == 10
    with ledger.library() as store:
        assert len(store.events(kind="apns.certificate_expiring")) == 1
