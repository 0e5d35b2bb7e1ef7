"""The ``rollout`` command line."""

from __future__ import annotations

import typer

from rollout.cli import bench, db, devices, profiles, rollouts
from rollout.cli.demo import demo
from rollout.cli.serve import serve
from rollout.config import SettingsError

app = typer.Typer(
    name="rollout",
    help="Renew provisioning profiles across an Apple device fleet before they expire.\n\n"
    "The ledger is ROLLOUT_DATABASE_URL, or else the SQLite file rollout.sqlite3 in "
    "ROLLOUT_HOME (default: ./var, resolved from the folder you run in); "
    "`rollout db current` says which one a command uses.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
app.add_typer(profiles.app, name="profiles")
app.add_typer(devices.app, name="devices")
app.add_typer(rollouts.app, name="rollouts")
app.add_typer(db.app, name="db")
app.add_typer(bench.app, name="bench")
app.command()(demo)
app.command()(serve)


def main() -> None:
    """Entry point of the ``rollout`` script: a bad setting is one line, never a traceback."""
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
