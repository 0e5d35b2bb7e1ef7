"""The ASGI app: MDM endpoints on a lean path, everything else through FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from cryptography import x509
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from rollout.clock import SYSTEM_CLOCK, Clock
from rollout.config import Settings, get_settings
from rollout.enrollment import IdentityPolicy
from rollout.ledger import Ledger
from rollout.mdm import DeviceCATrust, IdentityConfig
from rollout.profiles import load_trust_anchors
from rollout.web.api import operator_router
from rollout.web.api_models import refuse_invalid
from rollout.web.batcher import LINGER_S, LedgerBatcher
from rollout.web.connections import ConnectionLimits, ConnectionStats
from rollout.web.mdm import MDM_PATHS, MDMConfig, MDMEndpoint, Receive, Scope, Send
from rollout.web.refusals import RefusalLimits, RefusalLog
from rollout.web.service_metrics import checkin_histogram, service_collectors
from rollout.web.webhook import webhook_router

log = logging.getLogger(__name__)

REFUSAL_FLUSH_S = 5.0
"""How often closed refusal windows are looked for between refusals (their end is decided by
the app's clock; this is only how soon a quiet endpoint journals the last summaries)."""


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
    """The product's ASGI app: the MDM endpoints on a lean path, FastAPI for the rest.

    ``batch_linger_s`` overrides how long the ledger writer waits for a batch to fill up
    (tests that need concurrent requests to share one group commit).
    """

    def __init__(
        self,
        ledger: Ledger,
        settings: Settings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        batch_linger_s: float | None = None,
    ) -> None:
        identity, policy = identity_from_settings(settings)
        self.ledger = ledger
        self.clock = clock
        self.refusals = RefusalLog(
            RefusalLimits(
                window=dt.timedelta(seconds=settings.refusal_window_s),
                max_sources=settings.refusal_max_sources,
            )
        )
        self.batcher = LedgerBatcher(
            ledger,
            identity=policy,
            policy=settings.engine_policy(),
            clock=clock,
            refusals=self.refusals,
            linger_s=LINGER_S if batch_linger_s is None else batch_linger_s,
        )
        self.checkin_seconds = checkin_histogram()
        self.mdm = MDMEndpoint(
            self.batcher,
            MDMConfig(
                identity=identity,
                max_body_bytes=settings.max_body_bytes,
                body_timeout_s=settings.body_timeout_s,
                require_udid_in_cert=settings.require_udid_in_cert,
            ),
            clock=clock,
            checkin_seconds=self.checkin_seconds,
        )
        self.connection_limits = ConnectionLimits(
            header_timeout_s=settings.header_timeout_s, max_connections=settings.max_connections
        )
        self.connection_stats = ConnectionStats()
        self.api = FastAPI(title="rollout", version="0.1.0")
        self.api.add_exception_handler(RequestValidationError, refuse_invalid)
        self.api.include_router(
            operator_router(
                ledger,
                self.batcher,
                self.refusals,
                self.connection_stats,
                clock=clock,
                api_token=settings.api_token,
                token_pepper=settings.token_pepper,
                alert_policy=settings.alert_policy(),
                oidc=settings.oidc(),
                metrics=[self.checkin_seconds, *service_collectors(settings)],
                trust_anchors=load_trust_anchors(settings.trust_anchor_paths()),
                server_wakes=settings.server_wakes,
            )
        )
        if settings.webhook_secret:
            self.api.include_router(
                webhook_router(
                    self.batcher, settings.webhook_secret, settings.engine_policy(), clock
                )
            )
        self._flusher: asyncio.Task[None] | None = None

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
                self._flusher = asyncio.create_task(self._flush_refusals())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._flusher is not None:
                    self._flusher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._flusher
                # every open refusal window closes: its count reaches the journal
                try:
                    await self.batcher.flush_refusals(everything=True)
                except Exception as exc:
                    log.error("could not journal the last refusal counts: %.300s", exc)
                self.batcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _flush_refusals(self) -> None:
        while True:
            await asyncio.sleep(REFUSAL_FLUSH_S)
            try:
                await self.batcher.flush_refusals()
            except Exception as exc:
                log.error("could not journal refusal counts: %.300s", exc)


def create_app(
    settings: Settings | None = None, ledger: Ledger | None = None, clock: Clock = SYSTEM_CLOCK
) -> RolloutApp:
    """Build the app on the configured (or given) ledger."""
    settings = settings or get_settings()
    ledger = ledger or Ledger.open(settings.resolved_database_url(), settings.sealer())
    return RolloutApp(ledger, settings, clock)
