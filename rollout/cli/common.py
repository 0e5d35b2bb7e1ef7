"""What every CLI command shares: settings, the ledger, and one-line errors."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from sqlalchemy.engine import make_url
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


def now() -> dt.datetime:
    """The command's one reading of the clock."""
    return SYSTEM_CLOCK.now()


@contextmanager
def ledger() -> Iterator[Ledger]:
    """An up-to-date ledger.

    The embedded SQLite ledger is migrated on first use; a server database must be migrated
    with ``rollout db upgrade`` first, and a clear error says so.
    """
    url = ledger_url()
    try:
        if make_url(db.normalise_url(url)).get_backend_name() == "sqlite":
            db.upgrade(url)
        else:
            rev = db.current_revision(url)
            head = db.head_revision()
            if rev != head:
                fail(
                    f"the ledger is at revision {rev or 'none'}, not {head}: run rollout db upgrade"
                )
        opened = Ledger.open(url)
    except OperationalError as exc:
        fail(f"cannot open the ledger at {make_url(url).render_as_string()}: {exc.orig}")
    try:
        yield opened
    finally:
        opened.dispose()
