"""``rollout devices``: the device registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rollout.cli import progress
from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings
from rollout.delivery import BESIDE, MICROMDM, MDMServerError, server_from_settings
from rollout.delivery.server import public_url
from rollout.delivery.sync import inventory_of
from rollout.files import FileReadError, read_capped
from rollout.inventory import DeviceRecord, InventoryFormatError, read_inventory
from rollout.ledger import Event, ImportResult

app = typer.Typer(help="The device registry.", no_args_is_help=True)

MAX_INVENTORY_BYTES = 512 * 1024 * 1024
IMPORT_CHUNK = 5000
"""Devices written per step of an import (all in one transaction; the bar moves per step)."""


@app.command("import")
def import_(
    file: Path = typer.Argument(..., metavar="FILE", help="CSV (with a header) or JSON lines."),
    fmt: str | None = typer.Option(
        None, "--format", metavar="csv|jsonl", help="csv or jsonl (default: guessed)."
    ),
    all_or_nothing: bool = typer.Option(
        False, "--all-or-nothing", help="Write nothing when any row is invalid."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Upsert devices from an inventory file; invalid rows are reported with line numbers."""
    if fmt not in (None, "csv", "jsonl"):
        fail("--format must be csv or jsonl")
    try:
        report = read_inventory(read_capped(file, MAX_INVENTORY_BYTES), fmt=fmt, name=file.name)
    except FileReadError as exc:
        fail(str(exc))
    except InventoryFormatError as exc:
        fail(f"{file}: {exc}")
    if not report.records and not report.errors:
        fail(f"{file}: holds no device rows")
    for error in report.errors:
        typer.echo(f"{file}: {error}", err=True)
    write = bool(report.records) and not (all_or_nothing and report.errors)
    result = (
        _write(list(report.records), {"file": file.name}, as_json)
        if write
        else ImportResult(0, 0, 0)
    )
    created, updated, facts = result.created, result.updated, result.profiles
    outcome = {
        "file": str(file),
        "valid": len(report.records),
        "invalid": len(report.errors),
        "created": created,
        "updated": updated,
        "profiles": facts,
        "written": write,
        "errors": [{"line": e.line, "reason": e.reason} for e in report.errors],
    }
    if as_json:
        print_json(outcome)
    else:
        note = "" if write or not report.records else " (nothing written: --all-or-nothing)"
        typer.echo(
            f"{len(report.records)} valid row(s): {created} created, {updated} updated, "
            f"{facts} installed-profile fact(s); {len(report.errors)} invalid{note}"
        )
    if report.errors:
        raise typer.Exit(1)


def _write(records: list[DeviceRecord], source: dict[str, str], as_json: bool) -> ImportResult:
    """Upsert ``records`` into the registry in one transaction, in chunks (the progress bar
    moves per chunk), and journal it (``devices.imported`` with ``source``)."""
    total = len(records)
    with (
        ledger() as opened,
        opened.registry() as store,
        progress.bar("importing devices", enabled=progress.shown(as_json)) as advance,
    ):
        at = now()
        parts = []
        for start in range(0, total, IMPORT_CHUNK):  # one transaction, in chunks
            parts.append(store.import_devices(records[start : start + IMPORT_CHUNK], at))
            advance(min(start + IMPORT_CHUNK, total), total)
        result = ImportResult(
            sum(p.created for p in parts),
            sum(p.updated for p in parts),
            sum(p.profiles for p in parts),
        )
        data = {
            "by": ACTOR,
            **source,
            "created": result.created,
            "updated": result.updated,
            "profiles": result.profiles,
        }
        store.record([Event("devices.imported", data)], at)
    return result


@app.command("sync")
def sync(
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Import the devices enrolled in the MDM server rollout delivers through (MicroMDM's
    device list); NanoMDM offers no list."""
    settings = get_settings()
    if settings.delivery not in BESIDE:
        fail(
            "ROLLOUT_DELIVERY is builtin: devices enroll on rollout's own MDM endpoint; "
            "sync reads the device list of a NanoMDM or MicroMDM rollout delivers through"
        )
    url = settings.micromdm_url if settings.delivery == MICROMDM else settings.nanomdm_url
    where = public_url(url)
    try:
        server = server_from_settings(settings)
    except MDMServerError as exc:
        fail(str(exc))
    try:
        listed = server.devices()
    except MDMServerError as exc:
        fail(f"{settings.delivery} at {where}: {exc}")
    finally:
        server.close()
    found = inventory_of(listed)
    for udid, why in found.refused:
        typer.echo(f"{where}: device {udid[:64]!r}: {why}", err=True)
    records = list(found.records)
    result = _write(records, {"server": where}, as_json) if records else ImportResult(0, 0, 0)
    outcome = {
        "server": where,
        "listed": len(listed),
        "not_enrolled": found.not_enrolled,
        "valid": len(records),
        "invalid": len(found.refused),
        "created": result.created,
        "updated": result.updated,
        "errors": [{"udid": u, "reason": r} for u, r in found.refused],
    }
    if as_json:
        print_json(outcome)
    else:
        typer.echo(
            f"{len(listed)} device(s) listed by {where}: {len(records)} enrolled and valid "
            f"({result.created} created, {result.updated} updated), {found.not_enrolled} "
            f"not enrolled, {len(found.refused)} invalid"
        )
    if found.refused:
        raise typer.Exit(1)


@app.command("list")
def list_(
    limit: int = typer.Option(50, "--limit", min=1, metavar="N", help="How many devices."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List devices in the registry."""
    with ledger() as opened, opened.registry() as store:
        rows = store.page(limit=limit)
        total = sum(store.count_by_state().values())
        items = [
            {
                "enrollment_id": r.enrollment_id,
                "enrollment_type": r.enrollment_type,
                "state": r.state,
                "platform": r.platform,
                "os_version": r.os_version,
                "serial_number": r.serial_number,
                "token": r.token_state,
                "tags": r.tags,
                "last_seen_at": r.last_seen_at.isoformat() if r.last_seen_at else None,
            }
            for r in rows
        ]
    if as_json:
        print_json(items)
        return
    table = Table("enrollment id", "type", "state", "platform", "os", "token", "tags")
    for i in items:
        table.add_row(
            str(i["enrollment_id"]),
            str(i["enrollment_type"]),
            str(i["state"]),
            str(i["platform"] or ""),
            str(i["os_version"] or ""),
            str(i["token"]),
            ",".join(i["tags"] or []),
        )
    Console().print(table)
    typer.echo(f"{len(items)} of {total} device(s)")
