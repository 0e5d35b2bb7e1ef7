"""Serving the app with uvicorn: one configuration for ``rollout serve`` and for the
in-process server that tests and the demo use, so both run with the connection guards
of :mod:`rollout.web.connections`."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from rollout.web.app import RolloutApp
from rollout.web.connections import guarded_protocol, open_file_limit

log = logging.getLogger(__name__)


def uvicorn_config(
    app: RolloutApp,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    access_log: bool = True,
) -> uvicorn.Config:
    """The uvicorn configuration every way of serving the app uses (``rollout serve``,
    :class:`BackgroundServer`): the connection guards from the app's settings, and uvicorn's
    own keep-alive time-out for idle connections between requests."""
    limits = app.connection_limits
    files = open_file_limit()
    if files is not None and limits.max_connections >= files:
        log.warning(
            "ROLLOUT_MAX_CONNECTIONS=%d is not under the open-file limit (%d): "
            "connections past the limit fail at accept instead of being answered 503",
            limits.max_connections,
            files,
        )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        http=guarded_protocol(limits, app.connection_stats),
    )


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BackgroundServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(self, app: RolloutApp, port: int | None = None, log_level: str = "warning"):
        self.app = app
        self.port = port or free_port()
        config = uvicorn_config(
            app, host="127.0.0.1", port=self.port, log_level=log_level, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="rollout-web", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BackgroundServer:
        """Start serving and wait until the port accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web app did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
