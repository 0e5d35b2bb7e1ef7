"""Alerts: what a scan found that an operator must act on, kept once, sent when it matters.

A scan hands :func:`reconcile` its findings (one per key, such as ``renewal.missing:<uuid>``).
A new key opens an alert and sends it; a key already live is brought up to date, sent again
when it escalates (warning → critical, even if acknowledged) or, while nobody has acknowledged
it, every ``repeat_every``; a live key the scan no longer finds is resolved by itself.
Notifications go to an outbox in the ledger, so a failing webhook or mail server never holds up
a scan; :func:`deliver_due` drains it with back-off.

Operators acknowledge an alert (it stays live and quiet unless it escalates) or resolve it (if
what it says is still true, the next scan raises it again as a new alert).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.alerting.result import DeliveryResult
from rollout.ledger import AlertInfo, AlertStore, Event, Ledger, NewAlert

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
LIVE_STATES = ("open", "acknowledged")
STATES = ("open", "acknowledged", "resolved")


class AlertError(ValueError):
    """An alert operation is not possible as asked (one line)."""


@dataclass(frozen=True)
class AlertPolicy:
    """When alerts are sent, and where."""

    repeat_every: dt.timedelta = dt.timedelta(hours=24)
    channels: tuple[str, ...] = ()  # configured channels: webhook, email
    max_attempts: int = 12  # a notification given up after this many failed attempts
    lease: dt.timedelta = dt.timedelta(minutes=5)  # how long a claimed notification is held


@dataclass
class AlertChanges:
    """What one :func:`reconcile` did, by alert key."""

    opened: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """JSON-friendly form."""
        return {
            "opened": self.opened,
            "escalated": self.escalated,
            "repeated": self.repeated,
            "resolved": self.resolved,
        }


def as_json(a: AlertInfo) -> dict[str, Any]:
    """An alert as the CLI (``alerts list --json``) and the API show it."""
    return {
        "id": a.id,
        "key": a.key,
        "kind": a.kind,
        "severity": a.severity,
        "state": a.state,
        "title": a.title,
        "data": a.data,
        "opened_at": a.opened_at.isoformat(),
        "notified_at": a.notified_at.isoformat() if a.notified_at else None,
        "acknowledged_by": a.acknowledged_by,
        "resolved_by": a.resolved_by,
        "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
    }


def payload(alert: AlertInfo, event: str) -> dict[str, Any]:
    """What a notification of ``alert`` carries (``event``: opened, escalated, repeated,
    resolved)."""
    return {
        "event": event,
        "alert": {
            "id": alert.id,
            "key": alert.key,
            "kind": alert.kind,
            "severity": alert.severity,
            "state": alert.state,
            "title": alert.title,
            "data": alert.data,
            "opened_at": alert.opened_at.isoformat(),
        },
    }


def reconcile(
    store: AlertStore,
    findings: Sequence[NewAlert],
    *,
    kinds: Collection[str],
    policy: AlertPolicy,
    now: dt.datetime,
    actor: str = "scan",
) -> AlertChanges:
    """Bring the live alerts of ``kinds`` in line with ``findings`` (see the module notes)."""
    changes = AlertChanges()
    wanted = {f.key: f for f in findings}
    live = {a.key: a for a in store.live(kinds)}
    sends: list[tuple[AlertInfo, str]] = []
    for alert in store.raise_new([f for k, f in wanted.items() if k not in live], now):
        changes.opened.append(alert.key)
        sends.append((alert, "opened"))
    for key, alert in live.items():
        found = wanted.get(key)
        if found is None:
            continue
        escalated = SEVERITY_RANK.get(found.severity, 0) > SEVERITY_RANK.get(alert.severity, 0)
        state = "open" if escalated else alert.state
        store.revise(
            alert.id, now, severity=found.severity, title=found.title, data=found.data, state=state
        )
        fresh = AlertInfo(
            **{
                **alert.__dict__,
                "severity": found.severity,
                "title": found.title,
                "data": dict(found.data),
                "state": state,
                "updated_at": now,
            }
        )
        if escalated:
            changes.escalated.append(key)
            sends.append((fresh, "escalated"))
        elif alert.state == "open" and (
            alert.notified_at is None or now - alert.notified_at >= policy.repeat_every
        ):
            changes.repeated.append(key)
            sends.append((fresh, "repeated"))
    gone = [a for k, a in live.items() if k not in wanted]
    if gone:
        store.resolve([a.id for a in gone], actor, now)
        for alert in gone:
            changes.resolved.append(alert.key)
            if alert.notified_at is not None:
                sends.append((AlertInfo(**{**alert.__dict__, "state": "resolved"}), "resolved"))
    _send(store, sends, policy, now)
    store.record(
        [
            Event(f"alert.{event}", {"alert": alert.id, "key": alert.key, "by": actor})
            for alert, event in sends
        ]
        + [
            Event("alert.resolved", {"alert": a.id, "key": a.key, "by": actor})
            for a in gone
            if a.notified_at is None
        ],
        now,
    )
    return changes


def _send(
    store: AlertStore,
    sends: Sequence[tuple[AlertInfo, str]],
    policy: AlertPolicy,
    now: dt.datetime,
) -> None:
    if not sends:
        return
    store.queue(
        [(a.id, channel, payload(a, event)) for a, event in sends for channel in policy.channels],
        now,
    )
    store.mark_notified([a.id for a, _ in sends], now)


def acknowledge(ledger: Ledger, alert_id: int, *, actor: str, now: dt.datetime) -> AlertInfo:
    """An operator has seen a live alert: no more repeats unless it escalates."""
    with ledger.alerts() as store:
        alert = _live(store, alert_id)
        if alert.state == "open":
            store.acknowledge(alert_id, actor, now)
            store.record([Event("alert.acknowledged", {"alert": alert_id, "by": actor})], now)
        found = store.get(alert_id)
    assert found is not None
    return found


def resolve(
    ledger: Ledger, alert_id: int, *, actor: str, now: dt.datetime, policy: AlertPolicy
) -> AlertInfo:
    """An operator says an alert is over (a later scan raises it again if it is not)."""
    with ledger.alerts() as store:
        alert = _live(store, alert_id)
        store.resolve([alert_id], actor, now)
        if alert.notified_at is not None:
            _send(
                store,
                [(AlertInfo(**{**alert.__dict__, "state": "resolved"}), "resolved")],
                policy,
                now,
            )
        store.record([Event("alert.resolved", {"alert": alert_id, "by": actor})], now)
        found = store.get(alert_id)
    assert found is not None
    return found


def _live(store: AlertStore, alert_id: int) -> AlertInfo:
    alert = store.get(alert_id, lock=True) if 0 < alert_id < 2**63 else None
    if alert is None:
        raise AlertError(f"no alert {alert_id}")
    if alert.state not in LIVE_STATES:
        raise AlertError(f"alert {alert_id} is already {alert.state}")
    return alert


Sender = Callable[[Mapping[str, Any]], DeliveryResult]
"""Sends one notification payload on one channel."""


def deliver_due(
    ledger: Ledger,
    senders: Mapping[str, Sender],
    *,
    now: Callable[[], dt.datetime],
    policy: AlertPolicy,
    retry_delay: Callable[[int, float | None], float],
    limit: int = 50,
) -> dict[str, int]:
    """Send the notifications that are due, each with its channel's sender; record every
    attempt. Counts by outcome (delivered, retrying, failed)."""
    start = now()
    with ledger.alerts() as store:
        claimed = store.claim(start, start + policy.lease, limit)
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    for item in claimed:
        sender = senders.get(item.channel)
        if sender is None:
            outcome = DeliveryResult(
                False, permanent=True, error=f"channel {item.channel} is not set up"
            )
        else:
            outcome = sender(item.payload)
        at = now()
        attempt = item.attempts + 1
        if outcome.delivered:
            state, next_at = "delivered", at
        elif outcome.permanent or attempt >= policy.max_attempts:
            state, next_at = "failed", at
        else:
            state = "pending"
            next_at = at + dt.timedelta(seconds=retry_delay(attempt, outcome.retry_after))
        counts["retrying" if state == "pending" else state] += 1
        with ledger.alerts() as store:
            store.record_attempt(
                item.id,
                at,
                state=state,
                next_at=next_at,
                status=outcome.status,
                error=outcome.error,
            )
            if state == "failed":
                store.record(
                    [
                        Event(
                            "alert.delivery_failed",
                            {
                                "delivery": item.id,
                                "alert": item.alert_id,
                                "channel": item.channel,
                                "error": outcome.error,
                            },
                        )
                    ],
                    at,
                )
    return counts
