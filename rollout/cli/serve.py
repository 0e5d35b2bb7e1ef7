"""``rollout serve``: the web app (MDM endpoints, operator API)."""

from __future__ import annotations

import typer

from rollout.cli.common import fail, ledger
from rollout.config import get_settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST", help="Address to listen on."),
    port: int = typer.Option(
        8000, "--port", min=1, max=65535, metavar="PORT", help="Port to listen on."
    ),
    log_level: str = typer.Option(
        "info", "--log-level", metavar="LEVEL", help="uvicorn log level."
    ),
) -> None:
    """Serve the MDM endpoints and the operator API (put TLS in front: devices need HTTPS)."""
    import uvicorn

    from rollout.web.app import create_app
    from rollout.web.server import uvicorn_config

    settings = get_settings()
    with ledger() as opened:
        try:
            app = create_app(settings, opened)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        # the same configuration as the in-process server: header time-out, connection cap
        uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level=log_level)).run()
