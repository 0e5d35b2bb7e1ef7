"""The expiry scan: which profiles on devices expire soon, and whether a renewal exists.

Run hourly by the beat. For each profile that devices hold and that expires inside the renewal
window it records ``renewal.candidate`` (a replacement is in the library) or ``renewal.alert``
(none is), at most once a day per profile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from rollout.ledger import Event, Ledger

DEFAULT_WINDOW = dt.timedelta(days=30)
NOTE_EVERY = dt.timedelta(days=1)
"""The same finding is recorded again at most this often."""


@dataclass
class ScanReport:
    """What a scan found."""

    candidates: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"candidates": self.candidates, "alerts": self.alerts}


def scan(ledger: Ledger, now: dt.datetime, window: dt.timedelta = DEFAULT_WINDOW) -> ScanReport:
    """Find expiring holdings and record a candidate or an alert for each."""
    report = ScanReport()
    with ledger.unit() as unit:
        events: list[Event] = []
        for holding in unit.registry.expiring(now + window):
            replacement = None
            if holding.app_id is not None and holding.team_id is not None:
                replacement = unit.library.newest_like(
                    app_id=holding.app_id,
                    team_id=holding.team_id,
                    outliving=holding.expires_at,
                    other_than=holding.profile_uuid,
                )
            item = {
                "profile": holding.profile_uuid,
                "name": holding.name,
                "expires_at": holding.expires_at.isoformat(),
                "devices": holding.devices,
                "replacement": replacement.uuid if replacement else None,
            }
            kind = "renewal.candidate" if replacement else "renewal.alert"
            (report.candidates if replacement else report.alerts).append(item)
            if not _noted(unit.library.events(kind=kind, limit=1000), item, now):
                events.append(Event(kind, item))
        unit.library.record(events, now)
    return report


def check_push_certificate(
    ledger: Ledger,
    not_after: dt.datetime,
    topic: str,
    now: dt.datetime,
    window: dt.timedelta = DEFAULT_WINDOW,
) -> dict[str, Any] | None:
    """Alert (once a day) when the MDM push certificate expires inside ``window``.

    Without a valid push certificate no device can be woken. Renewing it keeps its topic; a new
    certificate made instead has a new topic and every device would have to re-enroll.
    """
    if not_after - now > window:
        return None
    item: dict[str, Any] = {
        "profile": f"apns:{topic}",
        "topic": topic,
        "expires_at": not_after.isoformat(),
        "days_left": (not_after - now).days,
    }
    kind = "apns.certificate_expiring"
    with ledger.library() as store:
        if not _noted(store.events(kind=kind, limit=1000), item, now):
            store.record([Event(kind, item)], now)
    return item


def _noted(recent: list[Any], item: dict[str, Any], now: dt.datetime) -> bool:
    """Whether the same finding (same profile) was recorded within :data:`NOTE_EVERY`."""
    return any(e.at > now - NOTE_EVERY and e.data.get("profile") == item["profile"] for e in recent)
