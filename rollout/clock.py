"""The one clock: every decision takes its time from a caller that holds a :class:`Clock`.

Processes hold a :class:`SystemClock`; tests hold a :class:`ManualClock` and move it forward
instead of sleeping. Nothing below the entry points (a Celery task, a web request, a CLI
command, a benchmark) reads the wall clock itself.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Tells the time: ``now()`` for timestamps, ``monotonic()`` for intervals."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> dt.datetime:
        """See :meth:`Clock.now`."""
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        """See :meth:`Clock.monotonic`."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests drive time with it, never sleep)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(dt.UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """See :meth:`Clock.now`."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """See :meth:`Clock.monotonic`."""
        with self._lock:
            return self._mono

    def advance(self, delta: dt.timedelta | float) -> dt.datetime:
        """Move both clocks forward by ``delta`` (a timedelta or seconds); the new now."""
        seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._mono += seconds
            return self._now


SYSTEM_CLOCK = SystemClock()
"""The clock every process entry point uses unless it is given another."""
