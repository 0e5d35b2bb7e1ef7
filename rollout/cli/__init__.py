"""The ``rollout`` command line."""

from __future__ import annotations

import os

import typer

from rollout.cli import (
    alerts,
    bench,
    db,
    devices,
    keys,
    ledger,
    profiles,
    renewals,
    rollouts,
    tokens,
)
from rollout.cli.check import check
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
app.add_typer(renewals.app, name="renewals")
app.add_typer(alerts.app, name="alerts")
app.add_typer(tokens.app, name="tokens")
app.add_typer(keys.app, name="keys")
app.add_typer(db.app, name="db")
app.add_typer(ledger.app, name="ledger")
app.add_typer(bench.app, name="bench")
app.command()(demo)
app.command()(serve)
app.command()(check)


def main() -> None:
    """Entry point of the ``rollout`` script.

    Whatever goes wrong is one line on stderr and a non-zero exit, never a traceback: a bad
    setting or usage (exit 2), a failed command (exit 1, said by the command), anything
    unexpected (exit 1; set ``ROLLOUT_DEBUG=1`` to see the traceback).
    """
    try:
        code = app(standalone_mode=False)
    except SettingsError as exc:
        _one_line(f"error: {exc}", 2)
    except typer.TyperException as exc:  # usage: a bad option or argument, or none at all
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())  # the help itself
            raise SystemExit(2) from None
        _one_line(f"error: {exc.format_message()}", exc.exit_code)
    except typer.Abort:
        _one_line("error: aborted", 1)
    except Exception as exc:
        if os.environ.get("ROLLOUT_DEBUG") == "1":
            raise
        _one_line(f"error: unexpected {type(exc).__name__}: {exc}", 1)
    raise SystemExit(code if isinstance(code, int) else 0)


def _one_line(message: str, code: int) -> None:
    typer.echo(" ".join(message.split()), err=True)
    raise SystemExit(code)
