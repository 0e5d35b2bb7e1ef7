"""``rollout check``: is this deployment able to do its work? One line per check."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rollout.cli.common import print_json
from rollout.clock import SYSTEM_CLOCK
from rollout.config import get_settings
from rollout.deploy_check import FAIL, failed, run_checks
from rollout.proxy_check import ProxyTarget, as_group

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def check(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    mdm_url: str | None = typer.Option(
        None,
        "--mdm-url",
        metavar="URL",
        help="Check the TLS proxy too: the devices' server, e.g. https://mdm.example.com.",
    ),
    mdm_ca: Path | None = typer.Option(
        None, "--mdm-ca", metavar="PEM", help="The proxy's CA, when it is not a public one."
    ),
    client_cert: Path | None = typer.Option(
        None,
        "--client-cert",
        metavar="PEM",
        help="A device identity certificate to present (client-cert identity).",
    ),
    client_key: Path | None = typer.Option(
        None, "--client-key", metavar="PEM", help="Its key, unless in --client-cert."
    ),
) -> None:
    """Check the deployment: the ledger (reachable, migrated), the broker, the workers on each
    queue, beat's last tick, the ledger keys, the push certificate and APNs, the device CA,
    the trust anchors and the identity settings; with --mdm-url, the TLS proxy too (it
    reaches /mdm, forwards the client certificate, drops a forged one). Exit 1 when any check
    fails; each waits a few seconds at most."""
    proxy = None
    if mdm_url:
        proxy = as_group(ProxyTarget(mdm_url, mdm_ca, client_cert, client_key))
    results = run_checks(get_settings(), SYSTEM_CLOCK, proxy)
    bad = failed(results)
    if as_json:
        print_json({"ok": not bad, "checks": [r.as_dict() for r in results]})
    else:
        table = Table("check", "status", "detail")
        for r in results:
            table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", r.detail)
        Console().print(table)
        names = [r.name for r in results if r.status == FAIL]
        typer.echo(f"failed: {', '.join(names)}" if bad else "all checks passed")
    if bad:
        raise typer.Exit(1)
