"""``rollout demo``: the product at work on a simulated fleet."""

from __future__ import annotations

import typer

from rollout.cli.common import ledger, print_json
from rollout.config import get_settings
from rollout.demo import DemoConfig, run_demo


def demo(
    devices: int = typer.Option(2000, "--devices", min=1, max=1_000_000, help="Fleet size."),
    seed: int = typer.Option(7, "--seed", help="Random seed for the fleet's mix."),
    as_json: bool = typer.Option(False, "--json", help="Print only the summary, as JSON."),
) -> None:
    """Run the demo on the configured ledger (default: a SQLite file under ROLLOUT_HOME)."""
    cfg = DemoConfig(devices=devices, seed=seed, home=get_settings().home)

    def say(line: str) -> None:
        if not as_json:
            typer.echo(line)

    with ledger() as engine:
        summary = run_demo(engine, cfg, say=say)
    if as_json:
        print_json(summary)
