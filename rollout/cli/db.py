"""``rollout db``: the ledger's schema."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from rollout.cli.common import fail, ledger_url
from rollout.ledger import db

app = typer.Typer(help="The ledger database.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the ledger's schema (ROLLOUT_DATABASE_URL, default a SQLite file)."""
    url = ledger_url()
    try:
        db.upgrade(url, revision)
        current = db.current_revision(url)
    except OperationalError as exc:
        fail(f"cannot reach the ledger at {make_url(url).render_as_string()}: {exc.orig}")
    typer.echo(f"ledger at revision {current} ({make_url(url).render_as_string()})")


@app.command()
def current() -> None:
    """Print the schema revision the ledger is at."""
    url = ledger_url()
    try:
        rev = db.current_revision(url)
    except OperationalError as exc:
        fail(f"cannot reach the ledger: {exc.orig}")
    typer.echo(f"{rev or 'empty'} (head {db.head_revision()})")
