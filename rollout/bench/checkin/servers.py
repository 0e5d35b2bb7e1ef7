"""The two servers the check-in bench measures, each run in a child process of its own: the
product's web app, and the baseline, a bare handler that parses the plist and inserts one row."""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any

CONNECT_PATH = "/mdm/connect"
BASELINE_PATH = "/checkin"


def _uvicorn_config(app: Any, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=4096,
        proxy_headers=False,  # nothing stands in front of the bench servers
    )


def serve_product(cfg: dict[str, Any]) -> None:
    """The product's app (strict device identity, the fleet's device CA) until interrupted."""
    import uvicorn

    from rollout.config import Settings
    from rollout.web.app import create_app

    settings = Settings(
        home=Path(cfg["home"]),
        database_url=cfg["database_url"],
        device_ca=cfg["device_ca"],
        identity_mode="strict",
    )
    app = create_app(settings)
    uvicorn.Server(_uvicorn_config(app, cfg["port"])).run()


def serve_baseline(cfg: dict[str, Any]) -> None:
    """A bare check-in handler until interrupted: parse the plist, append one row, answer 200."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from rollout.clock import SYSTEM_CLOCK
    from rollout.ledger import Event, Ledger, db

    ledger = Ledger(db.make_engine(cfg["database_url"], pool_size=20, max_overflow=0))

    def write(msg: dict[str, Any]) -> None:
        with ledger.checkin() as store:
            store.record(
                [
                    Event(
                        "bench.baseline",
                        {"status": msg.get("Status")},
                        enrollment_id=msg.get("UDID"),
                        command_uuid=msg.get("CommandUUID"),
                    )
                ],
                SYSTEM_CLOCK.now(),
            )

    async def checkin(request: Request) -> Response:
        msg = plistlib.loads(await request.body())
        await run_in_threadpool(write, msg)
        return Response(b"", status_code=200)

    app = Starlette(routes=[Route(BASELINE_PATH, checkin, methods=["PUT"])])
    uvicorn.Server(_uvicorn_config(app, cfg["port"])).run()
