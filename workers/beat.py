"""Celery beat that schedules only while it holds the ledger's beat lock.

Run as many beats as you like for fail-over: one holds the lock (see
:mod:`rollout.ledger.singleton`) and sends the periodic tasks; the others stand by, trying
every few seconds, and the first to get the lock after the holder dies takes over. The holder
checks its lock every few seconds too, and stops sending the moment it cannot (its ledger
connection is gone: the server has released the lock or soon will).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler
from sqlalchemy.exc import DBAPIError

from rollout.config import get_settings
from rollout.ledger.singleton import SingletonLock

log = logging.getLogger(__name__)

LOCK_NAME = "celery-beat"
STANDBY_S = 5.0
"""How often a standing-by beat tries the lock."""
CHECK_S = 5.0
"""How often the holder checks it still holds the lock."""


class SingleBeat(PersistentScheduler):
    """The beat scheduler of the product (``beat_scheduler`` in :mod:`workers.app`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = SingletonLock(get_settings().resolved_database_url(), LOCK_NAME)
        self._checked = 0.0
        self._waiting_said = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send what is due, if this beat holds the lock; else wait and try again."""
        if not self._holding():
            return STANDBY_S
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        """Sync the schedule file, then give the lock up."""
        try:
            super().close()
        finally:
            self._lock.release()

    def _holding(self) -> bool:
        now = time.monotonic()
        if self._lock.held:
            if now - self._checked < CHECK_S:
                return True
            self._checked = now
            if self._lock.alive():
                return True
            log.error("beat lost its lock (the ledger connection is gone): standing by")
            self._waiting_said = False
            return False
        try:
            got = self._lock.try_acquire()
        except (OSError, DBAPIError) as exc:
            log.error("beat cannot reach the ledger to take its lock: %.200s", exc)
            return False
        if got:
            self._checked = now
            log.warning("beat holds the lock: sending the periodic tasks")
            return True
        if not self._waiting_said:
            log.warning("another beat holds the lock: standing by (trying every %.0f s)", STANDBY_S)
            self._waiting_said = True
        return False
