"""The engine's knobs, with the defaults a fleet operator expects."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class EnginePolicy:
    """How the controller claims, pushes, waits and gives up."""

    batch_size: int = 500
    """Targets per fan-out task (one Celery message, one SQL statement per step)."""
    max_batches_per_tick: int = 400
    """Upper bound of fan-out tasks one tick sends per rollout, so a tick stays short."""
    response_timeout: dt.timedelta = dt.timedelta(hours=4)
    """How long a pushed target may stay silent before it is pushed again."""
    max_pushes: int = 3
    """Pushes (the first one included) before a silent target is marked timed out."""
    dispatch_grace: dt.timedelta = dt.timedelta(minutes=2)
    """A queued target whose fan-out task has not pushed it by then is dispatched again."""
    transient_retry: dt.timedelta = dt.timedelta(minutes=1)
    """When to try again after APNs failed transiently (after the client's own retries)."""
    notnow_backoff: dt.timedelta = dt.timedelta(minutes=5)
    """First re-push delay after NotNow; doubles each time, capped at four hours."""
    max_notnow: int = 12
    """NotNow answers after which a target stops being retried and is marked timed out."""
    tick_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often the controller ticks (a rollout's push rate is spread over ticks)."""
    max_verify: int = 2
    """Installs tried (each followed by a profile list) before a target fails verification."""
    server_wakes: bool = False
    """The MDM server rollout delivers through wakes the devices (NanoMDM or MicroMDM pushing
    with its own APNs client): a device then needs no push token in rollout's ledger."""

    def notnow_delay(self, count: int) -> dt.timedelta:
        """The delay before re-pushing a target that answered NotNow ``count`` times."""
        return min(self.notnow_backoff * (2 ** max(0, count - 1)), dt.timedelta(hours=4))

    def repush_delay(self, push_count: int) -> dt.timedelta:
        """How long to wait for an answer after push number ``push_count`` (backs off)."""
        return self.response_timeout * (2 ** max(0, push_count - 1))

    @classmethod
    def fast(cls) -> EnginePolicy:
        """Short time-outs for the demo and tests."""
        return cls(
            batch_size=200,
            response_timeout=dt.timedelta(seconds=5),
            max_pushes=2,
            dispatch_grace=dt.timedelta(seconds=5),
            transient_retry=dt.timedelta(seconds=1),
            notnow_backoff=dt.timedelta(seconds=1),
        )
