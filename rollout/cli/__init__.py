"""The ``rollout`` command line."""

from __future__ import annotations

import typer

from rollout.cli import bench, db, devices, profiles, rollouts
from rollout.cli.demo import demo
from rollout.cli.serve import serve

app = typer.Typer(
    name="rollout",
    help="Renew provisioning profiles across an Apple device fleet before they expire.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
    """Entry point of the ``rollout`` script."""
    app()
