"""``rollout db``: the ledger's schema."""

from __future__ import annotations

import typer
from sqlalchemy.exc import OperationalError

from rollout.cli.common import fail
from rollout.config import get_settings
from rollout.ledger import db

app = typer.Typer(help="The ledger database.", no_args_is_help=True)


@app.command()
def upgrade(
    revision: str = typer.Argument("head", metavar="REVISION", help="Target revision."),
) -> None:
    """Create or migrate the ledger's schema (ROLLOUT_DATABASE_URL, default a SQLite file)."""
    settings = get_settings()
    url = settings.resolved_database_url()
    if settings.embedded_ledger_path() is not None and not settings.database_url:
        settings.ensure_home()
    try:
        db.upgrade(url, revision)
        current = db.current_revision(url)
    except OperationalError as exc:
        fail(f"cannot reach the ledger ({settings.ledger_location()}): {exc.orig}")
    typer.echo(f"ledger at revision {current}: {settings.ledger_location()}")


@app.command()
def current() -> None:
    """Say which ledger commands use, and the schema revision it is at."""
    settings = get_settings()
    url = settings.resolved_database_url()
    path = settings.embedded_ledger_path()
    if path is not None and not settings.database_url:
        settings.ensure_home()
    if path is not None and not path.exists():
        typer.echo(f"no ledger yet (one is made on first use): {settings.ledger_location()}")
        return
    try:
        rev = db.current_revision(url)
    except OperationalError as exc:
        fail(f"cannot reach the ledger ({settings.ledger_location()}): {exc.orig}")
    typer.echo(
        f"{settings.ledger_location()}: revision {rev or 'none'} (head {db.head_revision()})"
    )
