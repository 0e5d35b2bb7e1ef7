"""``rollout bench``: the product measures itself; one JSON object per run with ``--json``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer

from rollout.cli import progress
from rollout.cli.common import fail, print_json

app = typer.Typer(help="Benchmarks (see BENCHMARKS.md for recorded figures).", no_args_is_help=True)


@dataclass(frozen=True)
class _Bench:
    module: str
    func: str
    default_size: int
    # Pushes to an APNs endpoint: without nginx the figures are the Python stand-in's, and the
    # bench says so through a ``note`` callback.
    pushes: bool = False


BENCHES = {
    "push": _Bench("rollout.bench.push", "run_push_bench", 20_000, pushes=True),
    "checkin": _Bench("rollout.bench.checkin", "run_checkin_bench", 5_000),
    "fanout": _Bench("rollout.bench.fanout", "run_fanout_bench", 10_000, pushes=True),
    "status": _Bench("rollout.bench.status", "run_status_bench", 100_000),
    "metrics": _Bench("rollout.bench.metrics", "run_metrics_bench", 1_000),
    "ledger": _Bench("rollout.bench.ledger", "run_ledger_bench", 100_000),
}


def _note(line: str) -> None:
    # stderr, so that stdout stays one JSON object with --json.
    typer.echo(f"note: {line}", err=True)


def _run(name: str, size: int | None, as_json: bool, **extra: Any) -> None:
    bench = BENCHES[name]
    try:
        func = getattr(importlib.import_module(bench.module), bench.func)
    except (ImportError, AttributeError) as exc:
        fail(f"bench {name} is not available: {exc}")
    kwargs: dict[str, Any] = {"note": _note} if bench.pushes else {}
    kwargs.update({k: v for k, v in extra.items() if v is not None})
    try:
        with progress.activity(f"bench {name}", enabled=progress.shown(as_json)):
            result: dict[str, Any] = func(size or bench.default_size, **kwargs)
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
def checkin(
    size: int | None = SizeOption,
    as_json: bool = JsonOption,
    during_prune: int | None = typer.Option(
        None,
        "--during-prune",
        min=1,
        metavar="N",
        help="Run the check-ins while `rollout ledger prune` removes an old finished rollout "
        "of N targets (its commands and events too) in another process.",
    ),
    prune_by: str = typer.Option(
        "partition",
        "--prune-by",
        help="With --during-prune: `partition` (the old rollout alone in its partition block: "
        "the prune archives it, then drops the block), `rows` (its block kept by the "
        "running rollout: archived beforehand, its rows deleted in batches), or `none` (the "
        "same ledger as `partition`, no prune: the figure to compare with).",
    ),
) -> None:
    """Whole device check-in cycles against the MDM endpoint on PostgreSQL."""
    if prune_by not in ("partition", "rows", "none"):
        fail(f"--prune-by {prune_by!r}: partition, rows or none")
    _run("checkin", size, as_json, during_prune=during_prune, prune_by=prune_by)


@app.command()
def fanout(
    size: int | None = SizeOption,
    as_json: bool = JsonOption,
    stages: str | None = typer.Option(
        None,
        "--stages",
        metavar="LIST",
        help="Run it in stages, e.g. 1%,5%,25%,100%, promoted by their default gates.",
    ),
    backend: str = typer.Option(
        "builtin",
        "--backend",
        metavar="builtin|nanomdm",
        help="nanomdm: every command is handed to a NanoMDM stand-in through its enqueue API.",
    ),
) -> None:
    """A rollout's fan-out on PostgreSQL, Redis and two worker processes."""
    _run("fanout", size, as_json, stages=stages, backend=backend)


@app.command()
def status(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """Latency of a rollout's detail read."""
    _run("status", size, as_json)


@app.command()
def metrics(size: int | None = SizeOption, as_json: bool = JsonOption) -> None:
    """Latency of a Prometheus scrape of /metrics with N rollouts on record (--size)."""
    _run("metrics", size, as_json)


@app.command()
def ledger(
    size: int | None = SizeOption,
    as_json: bool = JsonOption,
    prune_by: str = typer.Option(
        "partition",
        "--prune-by",
        help="`partition` (the rollout's block is dropped whole) or `rows` (a running "
        "rollout keeps the block: its rows are deleted in batches).",
    ),
) -> None:
    """Ledger bytes per device and per target, by table and index, before and after an
    archive + prune of a finished rollout of N devices (PostgreSQL)."""
    if prune_by not in ("partition", "rows"):
        fail(f"--prune-by {prune_by!r}: partition or rows")
    _run("ledger", size, as_json, prune_by=prune_by)
