"""``rollout ledger``: its size, and the retention policy applied by hand (archive, prune,
restore, pin)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import typer

from rollout import archive, retention
from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings
from rollout.niced import run_niced

app = typer.Typer(
    help="The ledger's size and retention: stats, archive, prune, restore, pin, unpin.",
    no_args_is_help=True,
)

Before = typer.Option(
    None,
    "--before",
    metavar="DATE",
    help="Take everything finished or recorded before DATE (2026-01-31 or an ISO 8601 time; "
    "UTC unless it says otherwise) instead of the policy's periods.",
)
DryRun = typer.Option(False, "--dry-run", help="Say what would go; write and delete nothing.")
AsJson = typer.Option(False, "--json", help="Print JSON.")
RolloutId = typer.Argument(..., metavar="ID", help="The rollout's number.")


def _before(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--before: {value!r} is not a date (use 2026-01-31 or 2026-01-31T12:00:00Z)", 2)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _policy() -> retention.RetentionPolicy:
    """The configured policy; a run by hand goes to the end (the time budget is beat's)."""
    return dataclasses.replace(get_settings().retention_policy(), max_run=None)


def _print_report(report: retention.RetentionReport, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(report.as_json())
        return
    rows = ", ".join(f"{n} {t}" for t, n in sorted(report.rows.items())) or "no rows"
    lead = "would " + verb if report.dry_run else verb
    typer.echo(f"{lead}: {len(report.rollouts)} finished rollout(s), {rows}")
    if report.pinned:
        typer.echo(f"kept by their pin: rollouts {', '.join(map(str, report.pinned))}")
    if report.held:
        typer.echo(
            f"waiting for the rest of their partition block: rollouts "
            f"{', '.join(map(str, report.held))}"
        )
    for name in report.archives:
        typer.echo(f"archive written: {name}{archive.SUFFIX}")
    for name in report.resumed:
        typer.echo(f"finished an interrupted prune: {name}")
    if report.dropped:
        typer.echo(f"partitions dropped whole: {', '.join(report.dropped)}")
    if report.deleted:
        typer.echo("deleted: " + ", ".join(f"{n} {t}" for t, n in sorted(report.deleted.items())))
    if report.stopped:
        typer.echo("stopped: its time budget ran out; the next prune goes on from here")
    if report.kept_changed:
        typer.echo(f"kept {report.kept_changed} row(s) written since archived (next prune)")


@app.command()
def stats(as_json: bool = AsJson) -> None:
    """Table sizes and rows, the oldest row of each kind, and what the policy would remove."""
    settings = get_settings()
    with ledger() as opened:
        out = retention.stats(opened, settings.retention_policy(), now())
    if as_json:
        print_json(out)
        return
    typer.echo(f"{'table':24} {'rows':>12} {'table':>10} {'indexes':>10}")
    for t in out["tables"]:
        typer.echo(
            f"{t['table']:24} {t['rows']:>12,} {_size(t['table_bytes']):>10} "
            f"{_size(t['index_bytes']):>10}"
        )
    typer.echo(f"total {_size(out['total_bytes'])} ({out['backend']})")
    for kind, at in out["oldest"].items():
        typer.echo(f"oldest {kind.replace('_', ' ')}: {at or '-'}")
    would = out["would_remove"]
    rows = ", ".join(f"{n} {t}" for t, n in would["rows"].items()) or "nothing"
    typer.echo(f"the policy would remove now: {rows} ({len(would['rollouts'])} rollout(s))")
    if would["kept_by_pin"]:
        typer.echo(f"kept by their pin: rollouts {', '.join(map(str, would['kept_by_pin']))}")
    if would["held_for_block"]:
        held = ", ".join(map(str, would["held_for_block"]))
        typer.echo(f"waiting for the rest of their partition block: rollouts {held}")
    if out["partition_blocks"]:
        blocks = ", ".join(f"{b['first']}-{b['last']}" for b in out["partition_blocks"])
        typer.echo(f"partition blocks (rollouts): {blocks}")
    stray = ", ".join(f"{n} {t}" for t, n in out["rows_outside_blocks"].items() if n)
    if stray:
        typer.echo(f"rows outside any block (pruned row by row): {stray}")


def _retention_run(
    step: Callable[..., retention.RetentionReport],
    before: str | None,
    dry_run: bool,
    *,
    vacuum: bool = False,
) -> retention.RetentionReport:
    """Run an archive or prune ``step`` at a lower CPU priority (see :mod:`rollout.niced`)."""
    settings = get_settings()
    when = _before(before)
    with ledger() as opened:
        try:
            report = run_niced(
                lambda: step(
                    opened,
                    settings.archive_folder(),
                    _policy(),
                    now(),
                    before=when,
                    dry_run=dry_run,
                )
            )
        except (retention.RetentionError, archive.ArchiveError, OSError) as exc:
            fail(str(exc))
        if vacuum and not dry_run:
            opened.vacuum()
    return report


@app.command("archive")
def archive_(before: str | None = Before, dry_run: bool = DryRun, as_json: bool = AsJson) -> None:
    """Write archive files of what the policy says is due, deleting nothing."""
    _print_report(_retention_run(retention.archive_due, before, dry_run), "archive", as_json)


@app.command()
def prune(
    before: str | None = Before,
    dry_run: bool = DryRun,
    as_json: bool = AsJson,
    vacuum: bool = typer.Option(
        False, "--vacuum", help="Then give the space back (SQLite: VACUUM, which holds the file)."
    ),
) -> None:
    """Archive what is due, then remove it: a due partition block dropped whole (PostgreSQL),
    other rows deleted in small batches (an interrupted prune resumes)."""
    report = _retention_run(retention.prune, before, dry_run, vacuum=vacuum)
    _print_report(report, "prune", as_json)


@app.command()
def restore(
    file: Path = typer.Argument(..., metavar="FILE", help="An archive file or its manifest."),
    as_json: bool = AsJson,
) -> None:
    """Bring an archive's rows back into the ledger for an audit (the next prune removes
    them again unless the rollout is pinned)."""
    with ledger() as opened:
        try:
            report = retention.restore(opened, file)
        except (retention.RetentionError, archive.ArchiveError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        print_json(report.as_json())
        return
    rows = ", ".join(f"{n} {t}" for t, n in report.restored.items()) or "no rows"
    typer.echo(f"restored from {', '.join(report.files)}: {rows}")
    if report.rollout_id is not None:
        verdict = "matches" if report.rows_match else "does NOT match"
        typer.echo(f"rollout {report.rollout_id}: its rows counted {verdict} the archived summary")
    if report.rows_match is False or report.summary_matches is False:
        raise typer.Exit(1)


@app.command()
def pin(rollout_id: int = RolloutId) -> None:
    """Keep a rollout's per-device rows past the retention period."""
    with ledger() as opened:
        try:
            retention.pin(opened, rollout_id, actor=ACTOR, now=now())
        except retention.RetentionError as exc:
            fail(str(exc))
    typer.echo(f"rollout {rollout_id} pinned: its rows stay")


@app.command()
def unpin(rollout_id: int = RolloutId) -> None:
    """Let the retention policy apply to a rollout again."""
    with ledger() as opened:
        try:
            retention.pin(opened, rollout_id, actor=ACTOR, now=now(), pinned=False)
        except retention.RetentionError as exc:
            fail(str(exc))
    typer.echo(f"rollout {rollout_id} unpinned")
