"""``rollout renewals``: the renewal scan, by hand."""

from __future__ import annotations

import typer

from rollout.cli import progress
from rollout.cli.common import fail, ledger, print_json
from rollout.clock import SYSTEM_CLOCK
from rollout.config import get_settings
from rollout.renewal_setup import SetupError, run_scan

app = typer.Typer(help="Renewal of expiring profiles.", no_args_is_help=True)


@app.command()
def scan(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Explain what the scan would do; write nothing, ask no source."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find held profiles inside their renewal window: open a renewal rollout for each one
    that has a replacement, raise an alert for each one that has none."""
    try:
        with (
            ledger() as opened,
            progress.bar("scanning held profiles", enabled=progress.shown(as_json)) as advance,
        ):
            report = run_scan(
                opened, get_settings(), SYSTEM_CLOCK, dry_run=dry_run, progress=advance
            )
    except SetupError as exc:
        fail(str(exc))
    data = report.as_dict()
    if as_json:
        print_json(data)
        return
    if not report.profiles:
        typer.echo("no held profile is inside its renewal window")
    for item in report.profiles:
        typer.echo(
            f"{item['profile']} {item['name'] or ''!r}: held by {item['devices']} device(s), "
            f"expires in {item['days_left']} days"
        )
        if item["replacement"]:
            typer.echo(f"  replacement {item['replacement']}")
        if item.get("action"):
            typer.echo(f"  {item['action']}")
        if item.get("why"):
            typer.echo(f"  {item['why']}")
        for source, said in (item.get("sources") or {}).items():
            typer.echo(f"  source {source}: {said}")
        for why, n in (item.get("excluded") or {}).items():
            typer.echo(f"  left out: {why} {n}")
    cert = report.push_certificate
    if cert:
        typer.echo(f"push certificate {cert['topic']}: expires in {cert['days_left']} days")
    for change, keys in report.alerts.items():
        for key in keys:
            typer.echo(f"alert {change.replace('_', ' ')}: {key}")
