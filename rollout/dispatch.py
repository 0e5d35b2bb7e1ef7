"""The seam between the engine and whatever runs its work (Celery in production).

``rollout`` never imports ``workers``: the controller hands batches to a :class:`Dispatcher`,
and ``workers`` provides one that sends Celery tasks by name. Tests and scripts can use
:class:`InlineDispatcher`, which calls the work directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class Dispatcher(Protocol):
    """Sends fan-out batches somewhere that will push them."""

    def push_batches(self, batches: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Send one unit of work per ``(rollout_id, target_ids)`` batch."""


class InlineDispatcher:
    """Runs each batch at once with ``push`` (no broker); for tests and scripts."""

    def __init__(self, push: Callable[[int, Sequence[int]], object]) -> None:
        self._push = push
        self.sent: list[tuple[int, list[int]]] = []

    def push_batches(self, batches: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Push every batch now, in order."""
        for rollout_id, ids in batches:
            self.sent.append((rollout_id, list(ids)))
            self._push(rollout_id, ids)


class RecordingDispatcher:
    """Keeps the batches it is given without running them; for tests."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, list[int]]] = []

    def push_batches(self, batches: Sequence[tuple[int, Sequence[int]]]) -> None:
        """Remember the batches."""
        self.sent.extend((r, list(ids)) for r, ids in batches)
