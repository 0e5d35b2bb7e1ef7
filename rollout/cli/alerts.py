"""``rollout alerts``: what needs an operator, and saying it was seen or is over."""

from __future__ import annotations

import typer

from rollout import alerts
from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings

app = typer.Typer(help="Alerts: list, acknowledge, resolve.", no_args_is_help=True)

AlertId = typer.Argument(..., metavar="ID", help="The alert's number (see `alerts list`).")


@app.command("list")
def list_(
    show_all: bool = typer.Option(False, "--all", help="Resolved alerts too."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Live alerts (open or acknowledged), newest first."""
    states = None if show_all else alerts.LIVE_STATES
    with ledger() as opened, opened.alerts() as store:
        rows = store.alerts(states=states, limit=1000)
    if as_json:
        print_json([alerts.as_json(a) for a in rows])
        return
    if not rows:
        typer.echo("no alerts" if show_all else "no live alerts")
        return
    typer.echo(f"{'id':>5}  {'severity':8} {'state':12} {'opened':16}  title")
    for a in rows:
        typer.echo(
            f"{a.id:>5}  {a.severity:8} {a.state:12} {a.opened_at:%Y-%m-%d %H:%M}  {a.title}"
        )


@app.command()
def ack(alert_id: int = AlertId) -> None:
    """Acknowledge an alert: it stays live but is not sent again unless it escalates."""
    try:
        with ledger() as opened:
            a = alerts.acknowledge(opened, alert_id, actor=ACTOR, now=now())
    except alerts.AlertError as exc:
        fail(str(exc))
    typer.echo(f"alert {a.id} {a.state}: {a.title}")


@app.command()
def resolve(alert_id: int = AlertId) -> None:
    """Resolve an alert (if what it says is still true, the next scan raises it again)."""
    try:
        with ledger() as opened:
            a = alerts.resolve(
                opened, alert_id, actor=ACTOR, now=now(), policy=get_settings().alert_policy()
            )
    except alerts.AlertError as exc:
        fail(str(exc))
    typer.echo(f"alert {a.id} {a.state}: {a.title}")
