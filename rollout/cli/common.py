"""What every CLI command shares: settings, the ledger, and one-line errors."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from sqlalchemy.exc import OperationalError

from rollout.clock import SYSTEM_CLOCK
from rollout.config import get_settings
from rollout.ledger import Ledger, db

ACTOR = "cli"
"""Who the journal says acted, for writes made from the command line."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """Write ``value`` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def ledger_url() -> str:
    """The ledger URL from the settings."""
    return get_settings().resolved_database_url()


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def now() -> dt.datetime:
    """The command's one reading of the clock."""
    return SYSTEM_CLOCK.now()


@contextmanager
def ledger() -> Iterator[Ledger]:
    """An up-to-date ledger.

    The embedded SQLite ledger is migrated on first use (and a new one is announced, with its
    place, so a command run from the wrong folder does not pass unnoticed); a server database
    must be migrated with ``rollout db upgrade`` first, and a clear error says so.
    """
    settings = get_settings()
    url = settings.resolved_database_url()
    try:
        embedded = settings.embedded_ledger_path()
        if embedded is not None:
            if not settings.database_url:
                settings.ensure_home()
            if not embedded.exists():
                typer.echo(f"note: a new, empty ledger: {settings.ledger_location()}", err=True)
            db.upgrade(url)
        else:
            rev = db.current_revision(url)
            head = db.head_revision()
            if rev != head:
                fail(
                    f"the ledger is at revision {rev or 'none'}, not {head}: run rollout db upgrade"
                )
        opened = Ledger.open(url, settings.sealer())
    except OperationalError as exc:
        fail(f"cannot open the ledger ({settings.ledger_location()}): {_first_line(exc.orig)}")
    try:
        yield opened
    finally:
        opened.dispose()
