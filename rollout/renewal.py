"""The expiry scan: which profiles on devices expire soon, and whether a renewal exists.

Run hourly by the beat. For each profile that devices hold and that expires inside the renewal
window it records ``renewal.candidate`` (a replacement is in the library) or ``renewal.alert``
(none is), at most once a day per profile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from rollout.ledger import db
from rollout.ledger.events import record_event
from rollout.ledger.renewal import expiring_holdings, find_replacement, noted_since
from rollout.ledger.types import utcnow

DEFAULT_WINDOW = dt.timedelta(days=30)


@dataclass
class ScanReport:
    """What a scan found."""

    candidates: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"candidates": self.candidates, "alerts": self.alerts}


def scan(
    engine: Engine, now: dt.datetime | None = None, window: dt.timedelta = DEFAULT_WINDOW
) -> ScanReport:
    """Find expiring holdings and record a candidate or an alert for each."""
    now = now or utcnow()
    report = ScanReport()
    with db.transaction(engine) as session:
        for holding in expiring_holdings(session, now + window):
            replacement = find_replacement(session, holding)
            item = {
                "profile": holding.profile_uuid,
                "name": holding.name,
                "expires_at": holding.expires_at.isoformat(),
                "devices": holding.devices,
                "replacement": replacement.uuid if replacement else None,
            }
            kind = "renewal.candidate" if replacement else "renewal.alert"
            (report.candidates if replacement else report.alerts).append(item)
            if not noted_since(session, kind, holding.profile_uuid, now - dt.timedelta(days=1)):
                record_event(session, kind, data=item)
    return report


def check_push_certificate(
    engine: Engine,
    not_after: dt.datetime,
    topic: str,
    now: dt.datetime | None = None,
    window: dt.timedelta = DEFAULT_WINDOW,
) -> dict[str, Any] | None:
    """Alert (once a day) when the MDM push certificate expires inside ``window``.

    Without a valid push certificate no device can be woken. Renewing it keeps its topic; a new
    certificate made instead has a new topic and every device would have to re-enroll.
    """
    now = now or utcnow()
    if not_after - now > window:
        return None
    key = f"apns:{topic}"
    item: dict[str, Any] = {
        "profile": key,
        "topic": topic,
        "expires_at": not_after.isoformat(),
        "days_left": (not_after - now).days,
    }
    with db.transaction(engine) as session:
        if not noted_since(
            session, "apns.certificate_expiring", item["profile"], now - dt.timedelta(days=1)
        ):
            record_event(session, "apns.certificate_expiring", data=item)
    return item
