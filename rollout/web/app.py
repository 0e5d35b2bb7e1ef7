"""The ASGI app: MDM endpoints on a lean path, everything else through FastAPI."""

from __future__ import annotations

import logging

from cryptography import x509
from fastapi import FastAPI

from rollout.clock import SYSTEM_CLOCK, Clock
from rollout.config import Settings, get_settings
from rollout.enrollment import IdentityPolicy
from rollout.ledger import Ledger
from rollout.mdm import DeviceCATrust, IdentityConfig
from rollout.web.api import operator_router
from rollout.web.batcher import LedgerBatcher
from rollout.web.mdm import MDM_PATHS, MDMConfig, MDMEndpoint, Receive, Scope, Send

log = logging.getLogger(__name__)


def identity_from_settings(settings: Settings) -> tuple[IdentityConfig, IdentityPolicy]:
    """The device-identity check and binding policy the settings ask for."""
    mode = settings.identity_mode  # checked against IDENTITY_MODES when the settings load
    cas: list[x509.Certificate] = []
    for path in settings.device_ca_paths():
        cas.extend(x509.load_pem_x509_certificates(path.read_bytes()))
    trust = DeviceCATrust(cas) if cas else None
    if trust is None and mode != "off":
        log.warning("no ROLLOUT_DEVICE_CA: device signatures are checked but not their chain")
    sources = tuple(s.strip() for s in settings.identity_sources.split(",") if s.strip())
    config = IdentityConfig(
        trust=trust,
        sources=sources,  # type: ignore[arg-type]
        cert_header=settings.client_cert_header,
        allow_missing=mode == "off",
    )
    policy = IdentityPolicy(
        required=mode != "off", bind_on_first_sight=mode == "bind-on-first-sight"
    )
    return config, policy


class RolloutApp:
    """The product's ASGI app: the MDM endpoints on a lean path, FastAPI for the rest."""

    def __init__(self, ledger: Ledger, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        identity, policy = identity_from_settings(settings)
        self.ledger = ledger
        self.batcher = LedgerBatcher(
            ledger, identity=policy, policy=settings.engine_policy(), clock=clock
        )
        self.mdm = MDMEndpoint(
            self.batcher,
            MDMConfig(identity=identity, max_body_bytes=settings.max_body_bytes),
            clock=clock,
        )
        self.api = FastAPI(title="rollout", version="0.1.0")
        self.api.include_router(operator_router(ledger, self.batcher))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"].rstrip("/") in MDM_PATHS:
            await self.mdm(scope, receive, send)
            return
        await self.api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.batcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings | None = None, ledger: Ledger | None = None) -> RolloutApp:
    """Build the app on the configured (or given) ledger."""
    settings = settings or get_settings()
    ledger = ledger or Ledger.open(settings.resolved_database_url())
    return RolloutApp(ledger, settings)
