"""``rollout tokens``: bearer tokens of the operator API, each with a role."""

from __future__ import annotations

import typer

from rollout import access
from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings

app = typer.Typer(help="Operator API tokens: create, list, revoke.", no_args_is_help=True)


@app.command()
def create(
    role: str = typer.Option(..., "--role", help="viewer, operator or admin."),
    name: str = typer.Option(..., "--name", help="Who or what holds it (shown in events)."),
) -> None:
    """Make a token and print it once (the ledger keeps only its hash)."""
    try:
        wanted = access.Role.named(role)
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        with ledger() as opened:
            token, info = access.issue(
                opened, name, wanted, actor=ACTOR, now=now(), pepper=get_settings().token_pepper
            )
    except access.AccessError as exc:
        fail(str(exc))
    typer.echo(token)
    typer.echo(f"token {info.name} ({info.role}) created; it is shown only now", err=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every token (never the token itself): name, role, created, last used, revoked."""
    with ledger() as opened, opened.access() as store:
        rows = store.tokens()
    items: list[dict[str, object]] = [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "created_by": t.created_by,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in rows
    ]
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("no tokens")
        return
    typer.echo(f"{'id':>4}  {'name':24} {'role':9} {'last used':20} state")
    for t in rows:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "never"
        state = "revoked" if t.revoked_at else "live"
        typer.echo(f"{t.id:>4}  {t.name:24} {t.role:9} {used:20} {state}")


@app.command()
def revoke(key: str = typer.Argument(..., metavar="NAME|ID", help="The token to revoke.")) -> None:
    """Revoke a token: it opens nothing from now on."""
    try:
        with ledger() as opened:
            info = access.revoke(opened, key, actor=ACTOR, now=now())
    except access.AccessError as exc:
        fail(str(exc))
    typer.echo(f"token {info.name} revoked")
