"""The MDM endpoints as a lean ASGI handler: check-in and connect.

``PUT /mdm/checkin`` takes check-in messages, ``PUT /mdm/connect`` takes command reports and
answers with the next command (or an empty body), and ``PUT /mdm`` dispatches on the content
type, so enrollment profiles with one ``ServerURL`` or with a separate ``CheckInURL`` both work.

A device is never answered 401 (it would remove its MDM profile): bad input gets 400, an
identity that does not fit 403, a body over the limit 413, a body that does not arrive in time
408, and every refusal is counted and recorded (sampled under a flood: see
:mod:`rollout.web.refusals`). Whatever a request holds, it gets a 4xx or its answer: a 5xx only
says the ledger cannot be reached (the device keeps its result and sends it again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Histogram

from rollout.clock import Clock
from rollout.enrollment import IDENTITY_REFUSALS, CheckinOutcome, handle_checkin
from rollout.ledger import CheckinStore, Event
from rollout.mdm import (
    Authenticate,
    CheckOut,
    Enrollment,
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
from rollout.mdm.identity import certificate_names, check_names_device, describe_forwarded_cert
from rollout.reconcile import Report
from rollout.web.batcher import LedgerBatcher, ledger_unavailable
from rollout.web.body import BodyDeadlines, BodyTimedOut, BodyTooLarge, ClientGone, read_body
from rollout.web.refusals import refusal_event

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
PROBE_PATH = "/mdm/identity-probe"
MDM_PATHS = frozenset({"/mdm", "/mdm/checkin", "/mdm/connect", PROBE_PATH})
_COMMAND_HEADERS = [(b"content-type", COMMAND_CONTENT_TYPE.encode())]
# The rest of an unread body would follow on the connection: end it instead of reading it.
_CLOSE = [(b"connection", b"close")]
_NAMES_KEPT = 20_000  # certificates whose names are kept (oldest dropped), like the verifier's


_Msg = TypeVar("_Msg")


@dataclass(frozen=True)
class MDMConfig:
    """What the endpoints need besides the ledger."""

    identity: IdentityConfig
    max_body_bytes: int = 1024 * 1024
    body_timeout_s: float = 30.0
    require_udid_in_cert: bool = False


@dataclass(slots=True)
class _Request:
    """What a refusal records about the request besides its reason."""

    path: str
    headers: dict[str, str]
    peer: str
    body: bytes = b""


async def respond(send: Send, status: int, body: bytes = b"", headers: Any = None) -> None:
    """Send a whole response with a Content-Length (an empty body is exactly 0 bytes)."""
    hdrs = [(b"content-length", str(len(body)).encode())]
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class MDMEndpoint:
    """The ASGI callable behind ``/mdm``, ``/mdm/checkin`` and ``/mdm/connect``."""

    def __init__(
        self,
        batcher: LedgerBatcher,
        config: MDMConfig,
        clock: Clock,
        checkin_seconds: Histogram | None = None,
    ) -> None:
        self.batcher = batcher
        self.config = config
        self.clock = clock
        self.verifier = IdentityVerifier(config.identity, clock)
        self.body_deadlines = BodyDeadlines(config.body_timeout_s)
        self._cert_names: dict[str, frozenset[str]] = {}  # certificate SHA-256 -> its names
        # the histogram's children, looked up once (one observe per request, no label lookup)
        self._latency = (
            {name: checkin_seconds.labels(name) for name in ("checkin", "connect", "other")}
            if checkin_seconds is not None
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()  # a measurement for the latency histogram, not a decision
        endpoint = "other"
        try:
            endpoint = await self._handle(scope, receive, send)
        except Exception as exc:
            # Not a device's fault (every input has its refusal): one line to find the bug by,
            # and an answer the device retries (if no answer had begun).
            log.error("MDM request failed: %s", _one_line(exc))
            with contextlib.suppress(Exception):
                await respond(send, 500, headers=_CLOSE)
        if self._latency is not None:
            self._latency[endpoint].observe(time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> str:
        """Answer one request; return which endpoint answered it (checkin, connect, other)."""
        path = scope["path"].rstrip("/") or "/"
        if path == PROBE_PATH and scope["method"] == "GET":
            await self._probe(send, scope)
            return "other"
        if scope["method"] not in ("PUT", "POST"):
            await respond(send, 405, headers=[(b"allow", b"PUT")])
            return "other"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        req = _Request(path, headers, peer=str(client[0]) if client else "unknown")
        declared = headers.get("content-length")
        try:
            body = await read_body(
                receive,
                self.config.max_body_bytes,
                int(declared) if declared and declared.isdigit() else None,
                self.body_deadlines,
            )
        except BodyTooLarge:
            await self._refuse(send, req, 413, "too_large", "body over the limit")
            return "other"
        except BodyTimedOut:
            await self._refuse(send, req, 408, "body_timeout", "the body did not arrive in time")
            return "other"
        except ClientGone:
            return "other"  # nobody to answer
        req.body = body
        content_type = headers.get("content-type", "")
        if path == "/mdm/checkin" or (
            path == "/mdm" and content_type.lower().startswith(CHECKIN_TYPE)
        ):
            await self._checkin(send, req)
            return "checkin"
        await self._connect(send, req)
        return "connect"

    async def _probe(self, send: Send, scope: Scope) -> None:
        """``GET /mdm/identity-probe``: what reached rollout of this request's identity, so
        ``rollout check --mdm-url`` can tell whether the TLS proxy forwards the client
        certificate, and drops one a client forged. Stores nothing; no device is named."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        identity = self.config.identity
        answer = {
            "service": "rollout-mdm",
            "sources": list(identity.sources),
            "cert_header": identity.cert_header,
            "client_cert": describe_forwarded_cert(headers, identity, self.clock.now()),
        }
        body = json.dumps(answer).encode()
        await respond(send, 200, body, headers=[(b"content-type", b"application/json")])

    async def _accept(
        self, send: Send, req: _Request, parse: Callable[..., _Msg]
    ) -> tuple[_Msg, str | None] | None:
        """Parse the body and verify the device identity; on failure answer and record the
        refusal (400 for the message, 403 for the identity) and return None."""
        try:
            msg = parse(req.body, max_bytes=self.config.max_body_bytes)
        except MDMProtocolError as exc:
            await self._refuse(send, req, 400, exc.reason, exc.message)
            return None
        except (RecursionError, ValueError, TypeError) as exc:
            # what plistlib underneath might still raise on input nobody foresaw
            await self._refuse(send, req, 400, "unreadable", _one_line(exc))
            return None
        try:
            sha256 = self._identity(req, getattr(msg, "enrollment", None))
        except IdentityError as exc:
            await self._refuse(send, req, 403, f"identity_{exc.reason}", str(exc))
            return None
        return msg, sha256

    def _identity(self, req: _Request, enrollment: Enrollment | None) -> str | None:
        """The SHA-256 of the certificate that vouches for the request; with
        ``require_udid_in_cert``, only when the certificate names the message's device."""
        if not self.config.require_udid_in_cert:
            return self.verifier.cert_sha256(req.headers, req.body)
        verified = self.verifier.identify(req.headers, req.body)
        if verified is None:
            return None  # no identity and none required (development)
        names = self._cert_names.get(verified.cert_sha256)
        if names is None:
            if len(self._cert_names) >= _NAMES_KEPT:
                self._cert_names.pop(next(iter(self._cert_names)))
            names = certificate_names(verified.certificate)
            self._cert_names[verified.cert_sha256] = names
        check_names_device(
            names,
            enrollment.udid if enrollment is not None else None,
            enrollment.enrollment_id if enrollment is not None else None,
        )
        return verified.cert_sha256

    async def _connect(self, send: Send, req: _Request) -> None:
        accepted = await self._accept(send, req, parse_report)
        if accepted is None:
            return
        result, cert = accepted
        if result.enrollment.is_user_channel:
            # Provisioning-profile commands are device-channel only: nothing is queued for a
            # user channel, so its session ends at once.
            await respond(send, 200)
            return
        report = Report.from_result(result, cert)
        try:
            answer = await self.batcher.connect(report)
        except Exception:
            # the ledger cannot be reached: the device keeps its result and sends it again
            await respond(send, 503)
            return
        if answer.outcome.refusal is not None:
            await respond(send, refusal_status(answer.outcome.refusal))
        elif answer.body:
            await respond(send, 200, answer.body, _COMMAND_HEADERS)
        else:
            await respond(send, 200)

    async def _checkin(self, send: Send, req: _Request) -> None:
        accepted = await self._accept(send, req, parse_checkin)
        if accepted is None:
            return
        msg, cert = accepted
        if msg.enrollment.is_user_channel or not isinstance(
            msg, Authenticate | TokenUpdate | CheckOut
        ):
            await self._other_checkin(send, req, msg)
            return
        policy = self.batcher.identity_policy
        clock = self.clock

        def work(store: CheckinStore) -> CheckinOutcome:
            return handle_checkin(store, msg, cert, policy, clock.now())

        try:
            outcome = await self.batcher.run(work)
        except Exception as exc:
            if ledger_unavailable(exc):
                await respond(send, 503)
            else:
                # This message cannot be stored (a value the ledger refuses): it fails alone.
                await self._refuse(send, req, 400, "unstorable", type(exc).__name__)
            return
        await respond(send, 200 if outcome.refusal is None else refusal_status(outcome.refusal))

    async def _other_checkin(self, send: Send, req: _Request, msg: Any) -> None:
        """A check-in this product does not act on (a user channel, a bootstrap token, an
        unknown type): answered as the protocol says, with its reason recorded."""
        reply = checkin_reply(msg)
        kind = getattr(msg, "message_type", type(msg).__name__)
        if reply.status_code == 400:
            # the device's input is wrong (an unknown type): a refusal like any other
            await self._refuse(
                send, req, 400, reply.reason or "unknown_message_type", f"MessageType {kind!r}"
            )
            return
        event = Event(
            "mdm.checkin_other",
            {"message_type": kind, "answered": reply.status_code, "reason": reply.reason},
            enrollment_id=msg.enrollment.enrollment_key,
        )
        try:
            await self.batcher.journal([event])
        except Exception:
            await respond(send, 503)
            return
        await respond(send, reply.status_code, reply.body)

    async def _refuse(
        self, send: Send, req: _Request, status: int, reason: str, message: str
    ) -> None:
        """Answer a refusal; count it, and journal it when it is the first of its kind from
        its source in the current window (see :mod:`rollout.web.refusals`)."""
        refusals = self.batcher.refusals
        now = self.clock.now()
        events = []
        if refusals.admit(reason, req.peer, now):
            events.append(
                refusal_event(
                    reason,
                    req.peer,
                    status=status,
                    path=req.path,
                    message=message,
                    content_type=req.headers.get("content-type"),
                    body=req.body,
                )
            )
        events += refusals.due(now)
        if events:
            try:
                await self.batcher.journal(events)
            except Exception as exc:
                log.error("could not record a refused MDM request: %s", _one_line(exc))
        # A 408 or 413 leaves body bytes on the connection that nobody will read.
        await respond(send, status, headers=_CLOSE if status in (408, 413) else None)


def refusal_status(reason: str) -> int:
    """The HTTP status of a refusal: 403 when the device's identity does not fit, 400 for
    anything else. Never 401: a device that gets 401 removes its MDM profile."""
    return 403 if reason in IDENTITY_REFUSALS else 400


def _one_line(exc: BaseException) -> str:
    """An exception as one short line with where it was raised (no traceback in the logs)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:200]}{where}"
