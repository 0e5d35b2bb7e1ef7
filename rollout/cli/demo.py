"""``rollout demo``: a renewal rollout over a simulated fleet, end to end."""

from __future__ import annotations

import typer

from rollout.cli.common import fail, print_json
from rollout.config import get_settings


def demo(
    devices: int = typer.Option(
        2000, "--devices", min=1, max=1_000_000, metavar="N", help="Fleet size."
    ),
    seed: int = typer.Option(
        7, "--seed", metavar="S", help="Random seed for the fleet and its mix."
    ),
    fast: bool = typer.Option(False, "--fast", help="Short time-outs (seconds, not hours)."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=8, metavar="N", help="Celery worker processes."
    ),
    timeout: float = typer.Option(
        900,
        "--timeout",
        min=1,
        metavar="SECONDS",
        help="Give up (exit 1) if the rollout has not ended after this many seconds.",
    ),
    scenario: str = typer.Option(
        "renewal",
        "--scenario",
        metavar="renewal|bad-canary",
        help="bad-canary: the renewal is signed wrongly; the canary fails its gate and the "
        "rollout halts before stage two.",
    ),
    backend: str = typer.Option(
        "builtin",
        "--backend",
        metavar="builtin|nanomdm",
        help="nanomdm: the fleet is enrolled in a NanoMDM stand-in; rollout works beside it "
        "(its enqueue API and webhook).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print only the summary, as JSON."),
) -> None:
    """Run the demo: on the embedded default (SQLite + filesystem broker) unless
    ROLLOUT_DATABASE_URL / ROLLOUT_BROKER_URL point at PostgreSQL / Redis."""
    from rollout.demo import BACKENDS, SCENARIOS, DemoConfig, run_demo

    if scenario not in SCENARIOS:
        fail(f"--scenario must be one of {', '.join(SCENARIOS)}")
    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}")

    settings = get_settings()
    cfg = DemoConfig(
        home=settings.home / "demo",
        devices=devices,
        seed=seed,
        fast=fast,
        database_url=settings.resolved_database_url() if settings.database_url else None,
        # The demo brings its own broker unless one is chosen explicitly.
        broker_url=settings.broker_url if "broker_url" in settings.model_fields_set else None,
        workers=workers,
        timeout=timeout,
        scenario=scenario,
        backend=backend,
    )

    def say(line: str) -> None:
        if not as_json:
            typer.echo(line)

    try:
        summary = run_demo(cfg, say)
    except TimeoutError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary)
