"""Refusals: every one is counted, and the journal keeps a bounded sample of them.

A device that sends something the endpoints refuse (a body that is not a plist, a signature
that does not verify, a report for an enrollment nobody knows) gets a 4xx and the refusal is
recorded as an ``mdm.refused`` event. A flood of junk must not become a flood of ledger rows,
so :class:`RefusalLog` decides which refusals the journal keeps in full:

* Refusals are grouped by reason and source. The source is the peer address for the refusals
  the endpoint makes before the ledger sees a message (behind a proxy, the address it forwards
  in ``X-Forwarded-For``), and the enrollment for the ones the engine makes. The first refusal
  of a group opens a window: it is journalled in full, with ``count`` 1 (the endpoint's with
  the first :data:`EXCERPT_BYTES` of the body). Later ones inside the window are only counted;
  when the window closes, one ``mdm.refused`` event with ``summary`` true carries their
  ``count``.
* At most ``max_sources`` groups are open at a time. Refusals beyond that are counted per
  reason, in one summary per reason and window, so a flood from many addresses (or with many
  made-up UDIDs) is bounded too.

Per window the journal therefore grows by at most ``2 * max_sources`` events plus one per
reason, whatever arrives; and summing ``count`` over the ``mdm.refused`` events gives the number
of refusals once their windows have closed. Windows close as time passes (checked on every
refusal and by the app's periodic flush) and all of them at shutdown. Every refusal is also
counted by reason in memory, for ``/healthz``.

The policy lives here, in the web layer: the ledger only stores the events it is handed.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rollout import bounds
from rollout.ledger import Event

REFUSED = "mdm.refused"
EXCERPT_BYTES = 256
"""How much of a refused body is kept: enough to tell a misconfigured client from random junk."""
EVERY_SOURCE = "*"
"""The source of the per-reason summary of refusals from sources past ``max_sources``."""

_TEXT = 200  # longest free text kept from a request (a message, a header value)
_REASON = 48  # reasons are short names from the code; the cut only guards the counters
_ID = bounds.ENROLLMENT_KEY  # the journal's enrollment id column
_COMMAND_UUID = bounds.COMMAND_UUID  # the journal's CommandUUID column


@dataclass(frozen=True)
class RefusalLimits:
    """How refusals are sampled (``ROLLOUT_REFUSAL_WINDOW_S``, ``ROLLOUT_REFUSAL_MAX_SOURCES``)."""

    window: dt.timedelta = dt.timedelta(seconds=60)
    max_sources: int = 200


@dataclass
class _Group:
    """The refusals of one reason from one source inside one window."""

    reason: str
    source: str
    opened: dt.datetime
    repeats: int = 0  # counted, not journalled in full
    first: dt.datetime | None = None  # of the repeats
    last: dt.datetime | None = None

    def repeat(self, now: dt.datetime) -> None:
        self.repeats += 1
        self.first = self.first or now
        self.last = now


class RefusalLog:
    """Counts refusals and decides which ones the journal keeps in full (thread-safe: the
    endpoint asks from the event loop, the ledger writer from its thread)."""

    def __init__(self, limits: RefusalLimits | None = None) -> None:
        self.limits = limits or RefusalLimits()
        self._lock = threading.Lock()
        # Both in the order the windows opened, so the ones to close are always at the front.
        self._groups: dict[tuple[str, str], _Group] = {}
        self._overflow: dict[str, _Group] = {}
        self._closed: list[_Group] = []
        self._by_reason: Counter[str] = Counter()

    def admit(self, reason: str, source: str, now: dt.datetime) -> bool:
        """Count one refusal; True when it is the one its group journals in full."""
        reason, source = reason[:_REASON], source[:_ID]
        with self._lock:
            self._by_reason[reason] += 1
            self._close_expired(now)
            group = self._groups.get((reason, source))
            if group is not None:
                group.repeat(now)
                return False
            if len(self._groups) < self.limits.max_sources:
                self._groups[(reason, source)] = _Group(reason, source, now)
                return True
            overflow = self._overflow.get(reason)
            if overflow is None:
                overflow = self._overflow[reason] = _Group(reason, EVERY_SOURCE, now)
            overflow.repeat(now)
            return False

    def sample(self, events: Iterable[Event], now: dt.datetime) -> list[Event]:
        """Of the engine's refusal events, the ones to journal (each with ``count`` 1 and its
        source), followed by the summaries of the windows that have closed."""
        kept = []
        for event in events:
            source = event.enrollment_id or EVERY_SOURCE
            if self.admit(str(event.data.get("reason", "?")), source, now):
                kept.append(
                    replace(
                        event,
                        data={**event.data, "source": source[:_ID], "count": 1},
                        enrollment_id=event.enrollment_id and event.enrollment_id[:_ID],
                        command_uuid=event.command_uuid and event.command_uuid[:_COMMAND_UUID],
                    )
                )
        return kept + self.due(now)

    def due(self, now: dt.datetime, *, everything: bool = False) -> list[Event]:
        """The summary events of the windows closed by ``now`` (of every window when
        ``everything``, at shutdown); each is handed out once."""
        with self._lock:
            self._close_expired(now)
            if everything:
                self._closed.extend(self._groups.values())
                self._closed.extend(self._overflow.values())
                self._groups.clear()
                self._overflow.clear()
            closed, self._closed = self._closed, []
        return [_summary(g) for g in closed if g.repeats]

    def counts(self) -> dict[str, int]:
        """Every refusal so far, by reason."""
        with self._lock:
            return dict(self._by_reason)

    def _close_expired(self, now: dt.datetime) -> None:
        cutoff = now - self.limits.window
        _close_before(self._groups, cutoff, self._closed)
        _close_before(self._overflow, cutoff, self._closed)


def _close_before(table: dict[Any, _Group], cutoff: dt.datetime, into: list[_Group]) -> None:
    """Move the windows opened at or before ``cutoff`` from ``table`` to ``into``.

    Windows open in time order, so the expired ones are at the front. (Two threads may open
    theirs a hair out of order: a window then closes a moment late.)
    """
    while table:
        key = next(iter(table))
        if table[key].opened > cutoff:
            return
        into.append(table.pop(key))


def refusal_event(
    reason: str,
    source: str,
    *,
    status: int,
    path: str,
    message: str,
    content_type: str | None,
    body: bytes,
) -> Event:
    """The journal entry for a refusal the endpoint makes itself: short, whatever was sent."""
    data: dict[str, Any] = {
        "reason": reason[:_REASON],
        "source": source[:_ID],
        "count": 1,
        "status": status,
        "path": path[:_TEXT],
        "message": message[:_TEXT],
        "content_type": content_type[:_TEXT] if content_type is not None else None,
        "size": len(body),
        "body_b64": base64.b64encode(body[:EXCERPT_BYTES]).decode(),
    }
    return Event(REFUSED, data)


def _summary(group: _Group) -> Event:
    assert group.first is not None and group.last is not None
    return Event(
        REFUSED,
        {
            "reason": group.reason,
            "source": group.source,
            "count": group.repeats,
            "summary": True,
            "first_at": group.first.isoformat(),
            "last_at": group.last.isoformat(),
        },
    )
