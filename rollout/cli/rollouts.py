"""``rollout rollouts``: create, start and inspect rollouts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer

from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.files import FileReadError, read_capped
from rollout.operations import (
    OperationError,
    create_rollout,
    list_rollouts,
    rollout_summary,
    start_rollout,
)
from rollout.planning import PlanningError, TargetSpec

app = typer.Typer(help="Rollouts of a profile to devices.", no_args_is_help=True)

MAX_ID_FILE_BYTES = 64 * 1024 * 1024


def read_device_list(path: Path) -> list[str]:
    """UDIDs / EnrollmentIDs from a file: one per line (the first comma-separated field), or
    an inventory CSV with a header naming a ``udid`` or ``enrollment_id`` column."""
    try:
        text = read_capped(path, MAX_ID_FILE_BYTES).decode("utf-8-sig")
    except FileReadError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "udid" in header or "enrollment_id" in header:
        keys = []
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            norm = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            key = norm.get("udid") or norm.get("enrollment_id")
            if key:
                keys.append(key)
        return keys
    return [line.split(",")[0].strip() for line in lines]


@app.command()
def create(
    profile: str = typer.Option(
        ...,
        "--profile",
        metavar="UUID",
        help="UUID (or a unique start of one) of a profile in the library.",
    ),
    name: str = typer.Option("", "--name", metavar="NAME", help="A name for the rollout."),
    devices_file: Path | None = typer.Option(
        None,
        "--devices",
        metavar="FILE",
        help="A file of UDIDs / EnrollmentIDs (one per line, or a CSV "
        "inventory with a udid column).",
    ),
    holders_of: str | None = typer.Option(
        None, "--holders-of", metavar="UUID", help="Devices known to hold this profile UUID."
    ),
    tags: list[str] = typer.Option(
        [], "--tag", metavar="TAG", help="Devices with this tag (repeatable: all)."
    ),
    platforms: list[str] = typer.Option(
        [],
        "--platform",
        metavar="PLATFORM",
        help="Devices of this platform (repeatable: any), e.g. iOS.",
    ),
    all_devices: bool = typer.Option(
        False, "--all", help="Every device in the registry that has not checked out."
    ),
    start: bool = typer.Option(False, "--start", help="Start it at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the new rollout as JSON."),
) -> None:
    """Create a rollout (a draft unless --start) of one profile.

    Choose the devices with --devices, --holders-of, --tag and --platform (they combine: a
    device must match every one given), or --all alone.
    """
    narrowed = devices_file is not None or holders_of or tags or platforms
    if all_devices and narrowed:
        fail(
            "--all selects every device: do not combine it with --devices, --holders-of, "
            "--tag or --platform"
        )
    if not all_devices and not narrowed:
        fail("choose the devices: --devices FILE, --holders-of UUID, --tag, --platform, or --all")
    keys = read_device_list(devices_file) if devices_file is not None else None
    if keys is not None and not keys:
        fail(f"{devices_file}: no device listed")
    try:
        spec = TargetSpec(
            keys=tuple(keys) if keys is not None else None,
            holders_of=holders_of,
            tags=tuple(tags),
            platforms=tuple(platforms),
            everything=all_devices,
        )
        with ledger() as opened:
            summary = create_rollout(
                opened,
                profile_uuid=profile,
                spec=spec,
                actor=ACTOR,
                now=now(),
                name=name,
                start=start,
            )
    except (OperationError, PlanningError) as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.as_json())
    else:
        r = summary.rollout
        typer.echo(f"rollout {r.id} ({r.state}): {sum(summary.states.values())} targets")


RolloutId = typer.Argument(..., min=1, metavar="ID", help="The rollout's id.")


@app.command()
def start(rollout_id: int = RolloutId) -> None:
    """Start a draft rollout (the next controller tick fans it out)."""
    try:
        with ledger() as opened:
            start_rollout(opened, rollout_id, actor=ACTOR, now=now())
    except OperationError as exc:
        fail(str(exc))
    typer.echo(f"rollout {rollout_id} running")


@app.command()
def show(
    rollout_id: int = RolloutId,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A rollout's state and its targets' states (from the kept counters)."""
    try:
        with ledger() as opened:
            summary = rollout_summary(opened, rollout_id)
    except OperationError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.as_json())
        return
    r = summary.rollout
    typer.echo(f"rollout {r.id} {r.name!r}: {r.state} (profile {r.profile_uuid})")
    for state, n in summary.states.items():
        typer.echo(f"  {state:14} {n}")
    for state, reasons in summary.reasons.items():
        for reason, n in reasons.items():
            typer.echo(f"  {state}: {reason} {n}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every rollout, newest first."""
    with ledger() as opened:
        rows = list_rollouts(opened)
    items = [
        {
            "id": r.id,
            "name": r.name,
            "state": r.state,
            "profile": r.profile_uuid,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("no rollouts yet")
        return
    typer.echo(f"{'id':>5}  {'state':10} {'profile':36}  name")
    for i in items:
        typer.echo(f"{i['id']:>5}  {i['state']:10} {i['profile']:36}  {i['name']}")
