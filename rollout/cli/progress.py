"""Progress on the terminal for long commands (imports, scans, benches).

Drawn on stderr, only when stderr is a terminal and the command prints human output (never
with ``--json``), and cleared when the work ends: what a command prints, and what scripts read,
stays as it was.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int, int], None]
"""``advance(done, total)``: how far the work is."""


def shown(as_json: bool = False) -> bool:
    """Whether progress is drawn: human output on a terminal."""
    return not as_json and sys.stderr.isatty()


@contextmanager
def bar(label: str, *, enabled: bool) -> Iterator[Advance]:
    """A progress bar for the block; the block calls the callback with ``(done, total)``.
    A no-op when not ``enabled``."""
    if not enabled:
        yield _nothing
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance


@contextmanager
def activity(label: str, *, enabled: bool) -> Iterator[None]:
    """A spinner with the elapsed time, for work that cannot say how far it is."""
    if not enabled:
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        progress.add_task(label, total=None)
        yield


def _nothing(done: int, total: int) -> None:
    """No progress drawn."""
