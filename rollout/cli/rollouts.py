"""``rollout rollouts``: create, start and inspect rollouts."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy import select

from rollout.cli.common import fail, ledger, print_json
from rollout.ledger import db
from rollout.ledger.devices import device_ids
from rollout.ledger.models import DeviceRow, InstalledProfileRow, RolloutRow
from rollout.ledger.profiles import get_profile
from rollout.ledger.reports import rollout_summary
from rollout.ledger.rollouts import RolloutError, create_rollout, start_rollout

app = typer.Typer(help="Rollouts of a profile to devices.", no_args_is_help=True)


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    return [line.split(",")[0].strip() for line in text.splitlines() if line.strip()]


@app.command()
def create(
    profile: str = typer.Option(..., "--profile", help="UUID of a profile in the library."),
    name: str = typer.Option("", "--name", help="A name for the rollout."),
    devices_file: Path | None = typer.Option(
        None, "--devices", help="File with one UDID or EnrollmentID per line."
    ),
    holders_of: str | None = typer.Option(
        None, "--holders-of", help="Every device known to hold this profile UUID."
    ),
    all_devices: bool = typer.Option(False, "--all", help="Every enrolled device."),
    start: bool = typer.Option(False, "--start", help="Start it at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the new rollout as JSON."),
) -> None:
    """Create a rollout (draft unless --start) of one profile to a set of devices."""
    if sum(x is not None and x is not False for x in (devices_file, holders_of, all_devices)) != 1:
        fail("choose the devices with exactly one of --devices, --holders-of, --all")
    with ledger() as engine:
        try:
            with db.transaction(engine) as session:
                row = get_profile(session, profile)
                if row is None:
                    fail(f"no profile {profile} in the library")
                if devices_file is not None:
                    keys = _read_ids(devices_file)
                    found = device_ids(session, keys)
                    missing = [k for k in keys if k not in found]
                    if missing:
                        fail(f"{len(missing)} device(s) unknown, e.g. {missing[0]}")
                    ids = list(found.values())
                elif holders_of is not None:
                    ids = list(
                        session.scalars(
                            select(InstalledProfileRow.device_id).where(
                                InstalledProfileRow.profile_uuid == holders_of.lower()
                            )
                        )
                    )
                else:
                    ids = list(
                        session.scalars(
                            select(DeviceRow.id).where(DeviceRow.enrollment_state == "enrolled")
                        )
                    )
                if not ids:
                    fail("no device matches")
                rollout = create_rollout(
                    session,
                    name=name or f"{row.name} → {len(ids)} devices",
                    profile_uuid=row.uuid,
                    device_ids=ids,
                    created_by="cli",
                )
                if start:
                    start_rollout(session, rollout.id)
                summary = rollout_summary(session, rollout.id)
        except RolloutError as exc:
            fail(str(exc))
    if as_json:
        print_json(summary)
    else:
        assert summary is not None
        typer.echo(
            f"rollout {summary['rollout']['id']} ({summary['rollout']['state']}): "
            f"{sum(summary['states'].values())} targets"
        )


@app.command()
def start(rollout_id: int = typer.Argument(..., help="The rollout's id.")) -> None:
    """Start a draft rollout (the next controller tick fans it out)."""
    with ledger() as engine:
        try:
            with db.transaction(engine) as session:
                start_rollout(session, rollout_id)
        except RolloutError as exc:
            fail(str(exc))
    typer.echo(f"rollout {rollout_id} running")


@app.command()
def show(
    rollout_id: int = typer.Argument(..., help="The rollout's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A rollout's state and its targets' states (from the kept counters)."""
    with ledger() as engine, db.transaction(engine) as session:
        summary = rollout_summary(session, rollout_id)
    if summary is None:
        fail(f"no rollout {rollout_id}")
    if as_json:
        print_json(summary)
        return
    r = summary["rollout"]
    typer.echo(f"rollout {r['id']} {r['name']!r}: {r['state']} (profile {r['profile']})")
    for state, n in summary["states"].items():
        typer.echo(f"  {state:14} {n}")
    for key in ("ineligible", "unreachable", "timed_out"):
        for reason, n in summary[key].items():
            typer.echo(f"  {key}: {reason} {n}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every rollout, newest first."""
    with ledger() as engine, db.transaction(engine) as session:
        rows = session.scalars(select(RolloutRow).order_by(RolloutRow.id.desc())).all()
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
    for i in items:
        typer.echo(f"{i['id']:>5}  {i['state']:10} {i['profile']}  {i['name']}")
