"""The expiry scan: candidates when a replacement exists, alerts when none does, once a day."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from rollout import renewal
from rollout.inventory import read_inventory
from rollout.ledger import db
from rollout.ledger.devices import import_devices
from rollout.ledger.events import list_events
from rollout.ledger.profiles import add_profile
from rollout.profiles import parse_profile
from rollout.sim.profiles import make_apple_like_chain, make_profile

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_scan_finds_expiring_holdings_and_their_replacements(engine: Engine) -> None:
    chain = make_apple_like_chain(not_before=NOW - dt.timedelta(days=400))
    old = make_profile(
        chain,
        bundle_id="com.example.field",
        created_at=NOW - dt.timedelta(days=350),
        expires_at=NOW + dt.timedelta(days=15),
    )
    new = make_profile(chain, bundle_id="com.example.field", created_at=NOW)
    other = make_profile(
        chain,
        bundle_id="com.example.other",
        created_at=NOW - dt.timedelta(days=360),
        expires_at=NOW + dt.timedelta(days=5),
    )
    parsed = {k: parse_profile(v) for k, v in {"old": old, "new": new, "other": other}.items()}
    with db.transaction(engine) as s:
        for key in ("old", "new", "other"):
            add_profile(s, parsed[key], {"old": old, "new": new, "other": other}[key])
        rows = "udid,profiles\n" + "".join(
            f"00008020-{i:016X},{parsed['old'].uuid};{parsed['other'].uuid}\n" for i in range(3)
        )
        import_devices(s, read_inventory(rows.encode(), fmt="csv").records)

    report = renewal.scan(engine, NOW)
    assert [(c["profile"], c["replacement"], c["devices"]) for c in report.candidates] == [
        (parsed["old"].uuid, parsed["new"].uuid, 3)
    ]
    assert [(a["profile"], a["devices"]) for a in report.alerts] == [(parsed["other"].uuid, 3)]
    renewal.scan(engine, NOW + dt.timedelta(hours=1))  # an hour later: nothing recorded twice
    with db.transaction(engine) as s:
        assert len(list_events(s, kind="renewal.candidate")) == 1
        assert len(list_events(s, kind="renewal.alert")) == 1


def test_push_certificate_expiry_alert(engine: Engine) -> None:
    far = renewal.check_push_certificate(
        engine, NOW + dt.timedelta(days=200), "com.apple.mgmt.x", NOW
    )
    assert far is None
    soon = renewal.check_push_certificate(
        engine, NOW + dt.timedelta(days=10), "com.apple.mgmt.x", NOW
    )
    assert soon is not None and soon["days_left"] == 10
    with db.transaction(engine) as s:
        assert len(list_events(s, kind="apns.certificate_expiring")) == 1
