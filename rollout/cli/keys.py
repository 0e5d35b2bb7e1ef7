"""``rollout keys``: the keys that seal devices' push secrets in the ledger."""

from __future__ import annotations

import typer

from rollout import key_rotation
from rollout.cli import progress
from rollout.cli.common import fail, ledger, print_json
from rollout.config import get_settings
from rollout.ledger.sealing import new_key

app = typer.Typer(
    help="Ledger keys: make one, see what seals the stored push secrets, rotate.",
    no_args_is_help=True,
)


@app.command()
def new() -> None:
    """Print a fresh random key (put it first in ROLLOUT_LEDGER_KEYS to seal with it)."""
    typer.echo(new_key())


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """How the stored push secrets are sealed: values per key, keys missing or retired.

    Exits 1 when a value is sealed with a key that is not configured.
    """
    settings = get_settings()
    with ledger() as opened:
        found = key_rotation.census(opened, settings.sealer())
    if as_json:
        print_json(found.as_json())
    else:
        typer.echo(f"sealing key: {found.current or 'none (push secrets stored in plain text)'}")
        for column, counts in found.columns.items():
            shown = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "none stored"
            typer.echo(f"{column}: {shown}")
        if found.stale():
            typer.echo(
                f"{found.stale()} value(s) not sealed with the current key: rollout keys rotate"
            )
        if found.retired():
            typer.echo(f"no value needs key(s) {', '.join(found.retired())}: they can be dropped")
    if found.missing():
        fail(
            f"value(s) sealed with key(s) {', '.join(found.missing())}, which are not configured: "
            "those devices cannot be pushed until the key is given back"
        )


@app.command()
def rotate(
    page: int = typer.Option(key_rotation.PAGE, "--page", min=1, help="Devices per transaction."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-seal every stored push secret with the first key of ROLLOUT_LEDGER_KEYS.

    Safe beside running workers and check-ins; run it again at any time.
    """
    settings = get_settings()
    sealer = settings.sealer()
    with ledger() as opened:
        total = key_rotation.census(opened, sealer).stale()
        with progress.bar("re-sealing", enabled=progress.shown(as_json)) as advance:
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                advance(done, max(total, done))

            try:
                report = key_rotation.rotate(opened, sealer, page=page, progress=step)
            except key_rotation.RotationError as exc:
                fail(str(exc))
    if as_json:
        print_json(report.as_json())
        return
    typer.echo(
        f"re-sealed {report.resealed} device(s) with key {report.key_id}"
        + (
            f"; {report.changed_meanwhile} changed meanwhile (already current)"
            if report.changed_meanwhile
            else ""
        )
    )
    if report.unreadable:
        shown = ", ".join(report.unreadable[:10])
        fail(f"{len(report.unreadable)} device(s) hold a value that does not open: {shown}")
