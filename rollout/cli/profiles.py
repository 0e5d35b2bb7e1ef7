"""``rollout profiles``: inspect provisioning-profile files and keep them in the library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings
from rollout.files import FileReadError, read_capped
from rollout.ledger import ProfileConflictError, ProfileEntry
from rollout.operations import OperationError, find_profile, keep_profile
from rollout.profiles import (
    MAX_PROFILE_BYTES,
    Profile,
    ProfileError,
    load_trust_anchors,
    parse_profile,
    render_text,
)

app = typer.Typer(
    help="Provisioning profiles: inspect files and keep the library.", no_args_is_help=True
)

TrustOption = typer.Option(
    None,
    "--trust-anchor",
    metavar="ROOT",
    help="Root certificate (DER or PEM) the signature must chain to; repeatable. "
    "Defaults to ROLLOUT_TRUST_ANCHORS.",
)


def _read(path: Path, anchors: list[Path] | None) -> tuple[Profile, bytes]:
    try:
        data = read_capped(path, MAX_PROFILE_BYTES)
    except FileReadError as exc:
        fail(str(exc))
    paths = anchors if anchors else get_settings().trust_anchor_paths()
    try:
        roots = load_trust_anchors(paths)
    except (OSError, ValueError) as exc:
        fail(f"trust anchors: {exc}")
    try:
        return parse_profile(data, trust_anchors=roots), data
    except ProfileError as exc:
        fail(f"{path}: {exc}")


@app.command()
def inspect(
    file: Path = typer.Argument(
        ..., metavar="FILE", help="A .mobileprovision or .provisionprofile file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_anchor: list[Path] | None = TrustOption,
) -> None:
    """Parse and verify a profile file (no database needed).

    A file whose signature does not match its content is still described (the verdict is part
    of the output) but the command then fails with a one-line reason on stderr.
    """
    profile, _ = _read(file, trust_anchor)
    if as_json:
        print_json(profile.to_json())
    else:
        typer.echo(render_text(profile))
    if not profile.signature.valid:
        fail(f"{file}: signature is not valid ({profile.signature.reason}): tampered or damaged")


@app.command()
def add(
    file: Path = typer.Argument(
        ..., metavar="FILE", help="A signed profile file to keep in the library."
    ),
    trust_anchor: list[Path] | None = TrustOption,
    allow_untrusted: bool = typer.Option(
        False, "--allow-untrusted", help="Keep a profile whose signer chain is not trusted."
    ),
) -> None:
    """Add a profile to the library (the same file twice is a no-op)."""
    profile, data = _read(file, trust_anchor)
    with ledger() as opened:
        try:
            row, created = keep_profile(
                opened,
                profile,
                data,
                actor=ACTOR,
                now=now(),
                require_trusted_chain=not allow_untrusted,
            )
        except ProfileError as exc:
            hint = "" if profile.signature.valid else " (tampered or damaged file)"
            if profile.signature.valid and not profile.signature.chain_trusted:
                hint = "; configure ROLLOUT_TRUST_ANCHORS or pass --allow-untrusted"
            fail(f"{file}: {exc}{hint}")
        except ProfileConflictError as exc:
            fail(str(exc))
    verb = "added" if created else "already in the library:"
    typer.echo(f"{verb} {row.uuid} {row.name!r} (expires {row.expires_at:%Y-%m-%d})")


def _summary(row: ProfileEntry) -> dict[str, object]:
    data = dict(row.metadata)
    data["added_at"] = row.added_at.isoformat().replace("+00:00", "Z")
    return data


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List the library, soonest expiry first."""
    with ledger() as opened, opened.library() as store:
        items = [_summary(r) for r in store.profiles()]
    if as_json:
        print_json(items)
        return
    table = Table("name", "kind", "app id", "expires", "signature")
    table.add_column("uuid", no_wrap=True, min_width=36)  # whole: other commands take it
    for item in items:
        sig = item["signature"]
        assert isinstance(sig, dict)
        verdict = "trusted" if sig["chain_trusted"] else ("valid" if sig["valid"] else "INVALID")
        table.add_row(
            str(item["name"]),
            str(item["kind"]),
            str(item["app_id"]),
            str(item["expires_at"])[:10],
            verdict,
            str(item["uuid"]),
        )
    Console().print(table)
    typer.echo(f"{len(items)} profile(s)")


@app.command()
def show(
    uuid: str = typer.Argument(
        ..., metavar="UUID", help="The profile's UUID, or a unique start of it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show one profile from the library."""
    try:
        with ledger() as opened:
            item = _summary(find_profile(opened, uuid))
    except OperationError as exc:
        fail(str(exc))
    if as_json:
        print_json(item)
        return
    for key, value in item.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for sub, inner in value.items():
                typer.echo(f"  {sub:22} {_plain(inner)}")
        else:
            typer.echo(f"{key:24} {_plain(value)}")


def _plain(value: object) -> str:
    """A value as a person reads it (no Python reprs)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "-"
    return str(value)
