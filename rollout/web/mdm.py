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

from sqlalchemy.orm import Session

from rollout.ledger.enrollment import (
    Authentication,
    CheckinResult,
    authenticate,
    check_out,
    token_update,
)
from rollout.ledger.events import record_event
from rollout.ledger.queue import Report
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
from rollout.web.batcher import LedgerBatcher

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
MDM_PATHS = frozenset({"/mdm", "/mdm/checkin", "/mdm/connect"})
_COMMAND_HEADERS = [(b"content-type", b"application/xml; charset=UTF-8")]
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

    def __init__(self, batcher: LedgerBatcher, config: MDMConfig) -> None:
        self.batcher = batcher
        self.config = config
        self.verifier = IdentityVerifier(config.identity)

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
        enrollment = result.enrollment
        if enrollment.is_user_channel:
            # Provisioning-profile commands are device-channel only: nothing is queued for a
            # user channel, so its session ends at once.
            await respond(send, 200)
            return
        report = Report(
            enrollment_id=enrollment.device_key,
            status=result.status.value,
            command_uuid=result.command_uuid,
            error_chain=tuple(
                {
                    "ErrorCode": e.code,
                    "ErrorDomain": e.domain,
                    "LocalizedDescription": e.localized_description,
                    **(
                        {"USEnglishDescription": e.us_english_description}
                        if e.us_english_description is not None
                        else {}
                    ),
                }
                for e in result.error_chain
            ),
            cert_sha256=cert,
            extra=_extra_keys(result.raw),
        )
        try:
            answer = await self.batcher.connect(report)
        except Exception:
            await respond(send, 500)  # the device keeps its result and retries
            return
        outcome = answer.outcome
        if outcome.status_code != 200:
            await respond(send, outcome.status_code)
        elif answer.body:
            await respond(send, 200, answer.body, _COMMAND_HEADERS)
        else:
            await respond(send, 200)

    async def _checkin(self, send: Send, path: str, headers: dict[str, str], body: bytes) -> None:
        accepted = await self._accept(send, path, headers, body, parse_checkin)
        if accepted is None:
            return
        msg, cert = accepted
        enrollment = msg.enrollment
        policy = self.batcher.identity_policy
        work: Callable[[Session], CheckinResult]
        if enrollment.is_user_channel or not isinstance(msg, Authenticate | TokenUpdate | CheckOut):
            reply = checkin_reply(msg)
            kind = msg.message_type if hasattr(msg, "message_type") else type(msg).__name__

            def note(session: Session) -> CheckinResult:
                record_event(
                    session,
                    "mdm.checkin_other",
                    enrollment_id=enrollment.enrollment_key,
                    data={"message_type": kind, "answered": reply.status_code},
                )
                return CheckinResult(reply.status_code)

            work = note
        elif isinstance(msg, Authenticate):
            auth = Authentication(
                enrollment_id=enrollment.device_key,
                udid=enrollment.udid,
                enrollment_type="user" if enrollment.is_user_enrollment else "device",
                topic=msg.topic,
                details={
                    "os_version": msg.os_version,
                    "build_version": msg.build_version,
                    "product_name": msg.product_name,
                    "serial_number": msg.serial_number,
                    "device_name": getattr(msg, "device_name", None),
                    "model": getattr(msg, "model", None),
                },
            )

            def work(session: Session) -> CheckinResult:
                return authenticate(session, auth, cert, policy)

        elif isinstance(msg, TokenUpdate):
            token_msg = msg

            def work(session: Session) -> CheckinResult:
                return token_update(
                    session,
                    enrollment.device_key,
                    token_hex=token_msg.token_hex,
                    push_magic=token_msg.push_magic,
                    topic=token_msg.topic,
                    cert_sha256=cert,
                    policy=policy,
                )

        else:

            def work(session: Session) -> CheckinResult:
                return check_out(session, enrollment.device_key, cert, policy)

        try:
            result = await self.batcher.run(work)
        except Exception:
            await respond(send, 500)
            return
        await respond(send, result.status_code)

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

        def note(session: Session) -> None:
            record_event(session, "mdm.refused", data=data)

        try:
            await self.batcher.run(note)
        except Exception:
            log.exception("could not record a refused MDM request")
        await respond(send, status)


_NOT_EXTRA = frozenset(
    {"UDID", "EnrollmentID", "CommandUUID", "Status", "ErrorChain", "UserID",
     "UserShortName", "UserLongName", "EnrollmentUserID", "NotOnConsole"}
)  # fmt: skip


def _extra_keys(raw: Any) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in _NOT_EXTRA}
