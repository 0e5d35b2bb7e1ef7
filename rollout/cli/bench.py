"""``rollout bench``: the product measures itself; one JSON object per run with ``--json``."""

from __future__ import annotations

import importlib
from typing import Any

import typer

from rollout.cli.common import fail, print_json

app = typer.Typer(help="Benchmarks (see BENCHMARKS.md for recorded figures).", no_args_is_help=True)

BENCHES = {
    "push": ("rollout.bench.push", "run_push_bench", 20_000),
    "checkin": ("rollout.bench.checkin", "run_checkin_bench", 5_000),
    "fanout": ("rollout.bench.fanout", "run_fanout_bench", 10_000),
    "status": ("rollout.bench.status", "run_status_bench", 100_000),
}


def _run(name: str, size: int | None, as_json: bool) -> None:
    module_name, func_name, default = BENCHES[name]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        fail(f"bench {name} is not available: {exc}")
    try:
        result: dict[str, Any] = func(size or default)
    except (RuntimeError, OSError, ValueError) as exc:
        fail(f"bench {name}: {exc}")
    if as_json:
        print_json(result)
        return
    typer.echo(f"bench {result['bench']}, size {result['size']}")
    for key, value in result["metrics"].items():
        typer.echo(f"  {key:28} {value}")


SizeOption = typer.Option(None, "--size", min=1, metavar="N", help="How many devices / pushes.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object.")


@app.command()
def push(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """APNs push client throughput against a local HTTP/2 TLS server, vs aioapns."""
    _run("push", size, as_json)


@app.command()
def checkin(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """Whole device check-in cycles against the MDM endpoint on PostgreSQL."""
    _run("checkin", size, as_json)


@app.command()
def fanout(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """A rollout's fan-out on PostgreSQL, Redis and two worker processes."""
    _run("fanout", size, as_json)


@app.command()
def status(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """Latency of a rollout's detail read."""
    _run("status", size, as_json)
