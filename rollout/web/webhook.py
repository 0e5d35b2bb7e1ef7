"""The receiver of NanoMDM's (MicroMDM-style) webhook: ``POST /webhook/mdm/{secret}``.

NanoMDM posts every check-in and command report it takes as one JSON event (``topic``,
``event_id``, ``created_at``, and a ``checkin_event`` or ``acknowledge_event`` whose
``raw_payload`` is the device's own plist, base64). It signs nothing and never retries, so:

* the request must carry the shared secret (``ROLLOUT_WEBHOOK_SECRET``) as the last path
  segment or in the ``X-Webhook-Secret`` header, compared in constant time; anything else is
  refused 403 and nothing is stored;
* reports go through :func:`rollout.reconcile.process_reports`, exactly as the built-in
  endpoint's do (same states, ErrorChain and NotNow rules), idempotent on the CommandUUID, so a
  duplicated event is counted once; NanoMDM serves its own queue, so nothing is chosen to serve;
* enrollment events (Authenticate, TokenUpdate, CheckOut) keep the device registry in sync
  through :func:`rollout.enrollment.handle_checkin`; NanoMDM already checked the device's
  identity, so no certificate is asked for here;
* a lost event is found by the delivery sweep (:mod:`rollout.delivery.sweep`).

Answers: 200 once stored (or for an event rollout has no use for), 400 for a body that is not
a webhook event, 403 for a wrong or missing secret, 503 when the ledger cannot be reached.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from rollout.clock import Clock
from rollout.enrollment import IdentityPolicy, handle_checkin
from rollout.ledger import CheckinStore
from rollout.mdm import (
    Authenticate,
    CheckOut,
    MDMProtocolError,
    TokenUpdate,
    parse_checkin,
    parse_report,
)
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.web.batcher import LedgerBatcher, ledger_unavailable

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook/mdm"
SECRET_HEADER = "x-webhook-secret"
MAX_EVENT_BYTES = 4 * 1024 * 1024
_ENROLLMENT_TOPICS = frozenset({"mdm.Authenticate", "mdm.TokenUpdate", "mdm.CheckOut"})
# NanoMDM checked the device's identity before it posted: nothing to bind or compare here.
_TRUSTED = IdentityPolicy(required=False, bind_on_first_sight=False)


class BadEvent(ValueError):
    """The body is not a webhook event rollout can read."""


def webhook_router(
    batcher: LedgerBatcher, secret: str, policy: EnginePolicy, clock: Clock
) -> APIRouter:
    """The webhook route, refusing every request without ``secret``."""
    router = APIRouter(include_in_schema=False)
    expected = secret.encode()

    def authorised(request: Request, given: str | None) -> bool:
        offered = given if given is not None else request.headers.get(SECRET_HEADER, "")
        return bool(expected) and hmac.compare_digest(offered.encode(), expected)

    async def receive(request: Request, given: str | None) -> Response:
        if not authorised(request, given):
            return Response(status_code=403)
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            return Response(status_code=413)
        try:
            topic, payload = read_event(body)
        except BadEvent as exc:
            return Response(content=str(exc), status_code=400, media_type="text/plain")
        now = clock.now()
        work: Any
        if topic == "mdm.Connect":
            try:
                result = parse_report(payload)
            except (MDMProtocolError, ValueError, TypeError, RecursionError) as exc:
                return Response(content=f"raw_payload: {exc}"[:300], status_code=400)
            if result.enrollment.is_user_channel:
                return Response(status_code=200)
            report = Report.from_result(result, None)

            def work(store: CheckinStore) -> object:
                return process_reports(
                    store, [report], identity=_TRUSTED, policy=policy, now=now, serve=False
                )

        elif topic in _ENROLLMENT_TOPICS:
            try:
                msg = parse_checkin(payload)
            except (MDMProtocolError, ValueError, TypeError, RecursionError) as exc:
                return Response(content=f"raw_payload: {exc}"[:300], status_code=400)
            if msg.enrollment.is_user_channel or not isinstance(
                msg, Authenticate | TokenUpdate | CheckOut
            ):
                return Response(status_code=200)

            def work(store: CheckinStore) -> object:
                return handle_checkin(store, msg, None, _TRUSTED, now)

        else:
            return Response(status_code=200)  # an event rollout has no use for
        try:
            await batcher.run(work)
        except Exception as exc:
            if ledger_unavailable(exc):
                return Response(status_code=503)
            log.error("a webhook event could not be stored: %s", type(exc).__name__)
            return Response(status_code=400)
        return Response(status_code=200)

    @router.post(WEBHOOK_PATH)
    async def with_header(request: Request) -> Response:
        return await receive(request, None)

    @router.post(WEBHOOK_PATH + "/{given}")
    async def with_path(request: Request, given: str) -> Response:
        return await receive(request, given)

    return router


def read_event(body: bytes) -> tuple[str, bytes]:
    """The event's topic and its device plist (decoded from ``raw_payload``)."""
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadEvent("not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("topic"), str):
        raise BadEvent("no topic")
    topic: str = event["topic"]
    inner = event.get("acknowledge_event") or event.get("checkin_event")
    if not isinstance(inner, dict):
        if topic == "mdm.Connect" or topic in _ENROLLMENT_TOPICS:
            raise BadEvent(f"{topic} without its event")
        return topic, b""
    raw = inner.get("raw_payload")
    if not isinstance(raw, str):
        raise BadEvent("no raw_payload")
    try:
        return topic, base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent("raw_payload is not base64") from None
