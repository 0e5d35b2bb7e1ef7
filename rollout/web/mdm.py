"""The MDM endpoints as a lean ASGI handler: check-in and connect.

``PUT /mdm/checkin`` takes check-in messages, ``PUT /mdm/connect`` takes command reports and
answers with the next command (or an empty body), and ``PUT /mdm`` dispatches on the content
type, so enrollment profiles with one ``ServerURL`` or with a separate ``CheckInURL`` both work.
A device is never answered 401 (it would remove its MDM profile): bad input gets 400, an
identity that does not fit gets 403, a body over the limit 413, and each refusal is recorded.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from rollout.clock import Clock
from rollout.enrollment import IDENTITY_REFUSALS, CheckinOutcome, handle_checkin
from rollout.ledger import CheckinStore, Event
from rollout.mdm import (
    Authenticate,
    CheckOut,
    IdentityConfig,
    IdentityError,
    IdentityVerifier,
    MDMProtocolError,
    TokenUpdate,
    checkin_reply,
    parse_checkin,
    parse_report,
)
from rollout.mdm.commands import COMMAND_CONTENT_TYPE
from rollout.reconcile import Report
from rollout.web.batcher import LedgerBatcher

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
MDM_PATHS = frozenset({"/mdm", "/mdm/checkin", "/mdm/connect"})
_COMMAND_HEADERS = [(b"content-type", COMMAND_CONTENT_TYPE.encode())]
_EXCERPT = 4096


_Msg = TypeVar("_Msg")


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


@dataclass(frozen=True)
class MDMConfig:
    """What the endpoints need besides the ledger."""

    identity: IdentityConfig
    max_body_bytes: int = 1024 * 1024


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The request body, refused before parsing once it is over ``limit``."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes = b"", headers: Any = None) -> None:
    """Send a whole response with a Content-Length (an empty body is exactly 0 bytes)."""
    hdrs = [(b"content-length", str(len(body)).encode())]
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class MDMEndpoint:
    """The ASGI callable behind ``/mdm``, ``/mdm/checkin`` and ``/mdm/connect``."""

    def __init__(self, batcher: LedgerBatcher, config: MDMConfig, clock: Clock) -> None:
        self.batcher = batcher
        self.config = config
        self.verifier = IdentityVerifier(config.identity, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/") or "/"
        if scope["method"] not in ("PUT", "POST"):
            await respond(send, 405, headers=[(b"allow", b"PUT")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        try:
            body = await read_body(
                receive,
                self.config.max_body_bytes,
                int(declared) if declared and declared.isdigit() else None,
            )
        except BodyTooLarge:
            await self._refuse(send, 413, path, "too_large", "body over the limit", headers, b"")
            return
        content_type = headers.get("content-type", "")
        if path == "/mdm/checkin" or (
            path == "/mdm" and content_type.lower().startswith(CHECKIN_TYPE)
        ):
            await self._checkin(send, path, headers, body)
        else:
            await self._connect(send, path, headers, body)

    async def _accept(
        self,
        send: Send,
        path: str,
        headers: dict[str, str],
        body: bytes,
        parse: Callable[..., _Msg],
    ) -> tuple[_Msg, str | None] | None:
        """Parse the body and verify the device identity; on failure answer and record the
        refusal (400 for the message, 403 for the identity) and return None."""
        try:
            msg = parse(body, max_bytes=self.config.max_body_bytes)
        except MDMProtocolError as exc:
            await self._refuse(send, 400, path, exc.reason, exc.message, headers, body)
            return None
        try:
            sha256 = self.verifier.cert_sha256(headers, body)
        except IdentityError as exc:
            await self._refuse(send, 403, path, f"identity_{exc.reason}", str(exc), headers, body)
            return None
        return msg, sha256

    async def _connect(self, send: Send, path: str, headers: dict[str, str], body: bytes) -> None:
        accepted = await self._accept(send, path, headers, body, parse_report)
        if accepted is None:
            return
        result, cert = accepted
        if result.enrollment.is_user_channel:
            # Provisioning-profile commands are device-channel only: nothing is queued for a
            # user channel, so its session ends at once.
            await respond(send, 200)
            return
        try:
            answer = await self.batcher.connect(Report.from_result(result, cert))
        except Exception:
            await respond(send, 500)  # the device keeps its result and retries
            return
        if answer.outcome.refusal is not None:
            await respond(send, refusal_status(answer.outcome.refusal))
        elif answer.body:
            await respond(send, 200, answer.body, _COMMAND_HEADERS)
        else:
            await respond(send, 200)

    async def _checkin(self, send: Send, path: str, headers: dict[str, str], body: bytes) -> None:
        accepted = await self._accept(send, path, headers, body, parse_checkin)
        if accepted is None:
            return
        msg, cert = accepted
        if msg.enrollment.is_user_channel or not isinstance(
            msg, Authenticate | TokenUpdate | CheckOut
        ):
            await self._other_checkin(send, msg)
            return
        policy = self.batcher.identity_policy
        clock = self.batcher.clock

        def work(store: CheckinStore) -> CheckinOutcome:
            return handle_checkin(store, msg, cert, policy, clock.now())

        try:
            outcome = await self.batcher.run(work)
        except Exception:
            await respond(send, 500)
            return
        await respond(send, 200 if outcome.refusal is None else refusal_status(outcome.refusal))

    async def _other_checkin(self, send: Send, msg: Any) -> None:
        """A check-in this product does not act on (a user channel, a bootstrap token, …):
        answered as the protocol says, and noted."""
        reply = checkin_reply(msg)
        kind = getattr(msg, "message_type", type(msg).__name__)
        clock = self.batcher.clock
        event = Event(
            "mdm.checkin_other",
            {"message_type": kind, "answered": reply.status_code, "reason": reply.reason},
            enrollment_id=msg.enrollment.enrollment_key,
        )

        def note(store: CheckinStore) -> None:
            store.record([event], clock.now())

        try:
            await self.batcher.run(note)
        except Exception:
            await respond(send, 500)
            return
        await respond(send, reply.status_code)

    async def _refuse(
        self,
        send: Send,
        status: int,
        path: str,
        reason: str,
        message: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        """Answer a refusal and record it with enough of the request to look into it later."""
        data = {
            "reason": reason,
            "message": message[:500],
            "path": path,
            "status": status,
            "content_type": headers.get("content-type"),
            "size": len(body),
            "body_b64": base64.b64encode(body[:_EXCERPT]).decode(),
        }

        clock = self.batcher.clock

        def note(store: CheckinStore) -> None:
            store.record([Event("mdm.refused", data)], clock.now())

        try:
            await self.batcher.run(note)
        except Exception:
            log.exception("could not record a refused MDM request")
        await respond(send, status)


def refusal_status(reason: str) -> int:
    """The HTTP status of a refusal: 403 when the device's identity does not fit, 400 for
    anything else. Never 401: a device that gets 401 removes its MDM profile."""
    return 403 if reason in IDENTITY_REFUSALS else 400
