"""``rollout check``: is this deployment able to do its work? One line per check."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from rollout.cli.common import print_json
from rollout.clock import SYSTEM_CLOCK
from rollout.config import get_settings
from rollout.deploy_check import FAIL, failed, run_checks

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def check(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Check the deployment: the ledger (reachable, migrated), the broker, the workers on each
    queue, beat's last tick, the push certificate and APNs, the device CA, the trust anchors
    and the identity settings. Exit 1 when any check fails; each waits a few seconds at most."""
    results = run_checks(get_settings(), SYSTEM_CLOCK)
    bad = failed(results)
    if as_json:
        print_json({"ok": not bad, "checks": [r.as_dict() for r in results]})
    else:
        table = Table("check", "status", "detail")
        for r in results:
            table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", r.detail)
        Console().print(table)
        names = [r.name for r in results if r.status == FAIL]
        typer.echo(f"failed: {', '.join(names)}" if bad else "all checks passed")
    if bad:
        raise typer.Exit(1)
