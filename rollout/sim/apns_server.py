"""An APNs look-alike for tests, the demo and benchmarks: real HTTP/2 over TLS with client certs.

It speaks Apple's wire contract for MDM pushes: ``POST /3/device/<hex token>``, the ``apns-id``
header echoed back (generated when absent), ``200`` with an empty body, errors as JSON
``{"reason": ...}`` (plus ``timestamp`` for 410), and SETTINGS_MAX_CONCURRENT_STREAMS advertised.
The TLS listener requires a client certificate issued by its client CA (``ssl.CERT_REQUIRED``).

Everything is scriptable while it runs, from any thread::

    with ApnsStandIn() as server:
        cert = server.issue_push_certificate("com.apple.mgmt.External.test")
        server.unregister("ab12...", timestamp_ms=...)   # 410 Unregistered for that token
        server.fail_next(429, "TooManyRequests", 3)      # the next 3 requests
        server.fail_for(503, "ServiceUnavailable", 2.0)  # every request for 2 s
        server.goaway_after(50)                          # GOAWAY once 50 more streams arrive
        server.set_delay(0.2)                            # answer slowly
        ... PushConfig(base_url=server.base_url, ca_file=server.ca_file) ...

``on_push(token_hex, payload)`` runs (in the server thread) for every accepted push, so a
simulated fleet can be woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import string
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from rollout.sim.pki import Issued, issue_leaf, make_ca

PushHook = Callable[[str, dict[str, Any]], None]

_HEX = frozenset(string.hexdigits)
_MIN_TOKEN_HEX = 16
_MAX_TOKEN_HEX = 200


@dataclass
class _Failure:
    status: int
    reason: str
    remaining: int = 0
    until: float = 0.0


class _Script:
    """Run-time behaviour, shared between the test thread and the server loop (under a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.unregistered: dict[str, int] = {}
        self.next_failures: deque[_Failure] = deque()
        self.timed_failure: _Failure | None = None
        self.goaway_after: int | None = None
        self.drop_after: int | None = None
        self.delay = 0.0
        self.topic: str | None = None
        self.topic_reason = "DeviceTokenNotForTopic"
        self.reject_certs = False

    def scripted_failure(self) -> _Failure | None:
        with self.lock:
            while self.next_failures:
                head = self.next_failures[0]
                if head.remaining > 0:
                    head.remaining -= 1
                    if head.remaining == 0:
                        self.next_failures.popleft()
                    return head
                self.next_failures.popleft()
            tf = self.timed_failure
            if tf is not None:
                if time.monotonic() < tf.until:
                    return tf
                self.timed_failure = None
            return None

    def tick_goaway(self) -> bool:
        with self.lock:
            if self.goaway_after is None:
                return False
            self.goaway_after -= 1
            if self.goaway_after <= 0:
                self.goaway_after = None
                return True
            return False

    def tick_drop(self) -> bool:
        with self.lock:
            if self.drop_after is None:
                return False
            self.drop_after -= 1
            if self.drop_after <= 0:
                self.drop_after = None
                return True
            return False


class _Stream:
    __slots__ = ("body", "headers")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = b""


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: ApnsStandIn) -> None:
        self.server = server
        self.h2 = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.cert_topic: str | None = None
        self.gone = False
        self.pending: set[int] = set()
        self.stream_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        with server._counter_lock:
            server.connections += 1
        server._live.add(self)
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
            if uids:
                value = uids[0].value
                self.cert_topic = value.decode() if isinstance(value, bytes) else str(value)
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            }
        )
        self.h2.increment_flow_control_window((1 << 24) - 65535)
        transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = True
        self.server._live.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            self._abort()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = _Stream(list(event.headers))
                if len(self.streams) > self.server.peak_streams:
                    self.server.peak_streams = len(self.streams)
            elif isinstance(event, DataReceived):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.body += event.data
                if event.flow_controlled_length:
                    self.h2.acknowledge_received_data(
                        event.flow_controlled_length,
                        event.stream_id,
                    )
            elif isinstance(event, StreamEnded):
                self._on_request(event.stream_id)
                if self.gone:
                    return
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.discard(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.gone = True
                if self.transport is not None:
                    self.transport.close()
                return
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _abort(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.abort()

    def _on_request(self, sid: int) -> None:
        server = self.server
        script = server.script
        self.stream_count += 1
        if script.tick_drop():
            self._abort()
            return
        goaway = script.tick_goaway()
        delay = script.delay
        if delay > 0 and not goaway:
            self.pending.add(sid)
            asyncio.get_running_loop().call_later(delay, self._answer_later, sid)
        else:
            self._answer(sid)
        if goaway:
            with server._counter_lock:
                server.goaways_sent += 1
            if delay > 0:
                # As APNs may: GOAWAY first, then the answers it promised (ids <= sid) later.
                self.pending = {p for p in self.pending if p <= sid}
                self.pending.add(sid)
                loop = asyncio.get_running_loop()
                for other in self.pending:
                    loop.call_later(delay, self._answer_later, other)
                self.h2.close_connection(
                    error_code=ErrorCodes.NO_ERROR,
                    additional_data=b'{"reason":"Shutdown"}',
                    last_stream_id=sid,
                )
                self.h2.state_machine.state = ConnectionState.SERVER_OPEN  # keep answering
                self._flush()
                self.gone = True  # read nothing more
                return
            for other in sorted(self.pending):
                if other <= sid:
                    self._answer(other)
            self.pending.clear()
            self.h2.close_connection(
                error_code=ErrorCodes.NO_ERROR,
                additional_data=b'{"reason":"Shutdown"}',
                last_stream_id=sid,
            )
            self._flush()
            self.gone = True
            if self.transport is not None:
                self.transport.close()

    def _answer_later(self, sid: int) -> None:
        if sid not in self.pending or self.transport is None or self.transport.is_closing():
            return
        self.pending.discard(sid)
        self._answer(sid)
        self._flush()
        if self.gone and not self.pending:
            self.transport.close()  # a GOAWAY was sent and every promised answer is out

    def _answer(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        status, reason, ts, apns_id = self.server._decide(st, self.cert_topic)
        headers = [(b":status", str(status).encode()), (b"apns-id", apns_id)]
        try:
            if status == 200:
                self.h2.send_headers(sid, headers, end_stream=True)
            else:
                doc: dict[str, Any] = {"reason": reason}
                if ts is not None:
                    doc["timestamp"] = ts
                body = json.dumps(doc).encode()
                headers.append((b"content-type", b"application/json"))
                headers.append((b"content-length", str(len(body)).encode()))
                self.h2.send_headers(sid, headers)
                self.h2.send_data(sid, body, end_stream=True)
        except H2Error:
            return  # the client reset the stream meanwhile


class ApnsStandIn:
    """The APNs stand-in: start it, point a ``PushConfig`` at ``base_url``, script it, stop it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_ca: Issued | None = None,
        server_ca: Issued | None = None,
        topic: str | None = None,
        max_concurrent_streams: int = 1000,
        on_push: PushHook | None = None,
        record: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.server_ca = server_ca or make_ca("Rollout APNs stand-in server CA")
        self.client_ca = client_ca or self.server_ca
        self.max_concurrent_streams = max_concurrent_streams
        self.on_push = on_push
        self.record = record
        self.recorded: list[dict[str, str]] = []
        """With ``record=True``: every request's headers (decoded) plus ``body``."""
        self.script = _Script()
        self.script.topic = topic
        self._counter_lock = threading.Lock()
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.reasons: Counter[str] = Counter()
        self.connections = 0
        self.handshake_failures = 0
        self.goaways_sent = 0
        self.peak_streams = 0
        """Most requests ever open at once on one connection."""
        self._live: set[_ServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._dir: Path | None = None
        self._decoy_ctx: ssl.SSLContext | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``https://host:port`` for ``PushConfig(base_url=...)``."""
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """PEM file of the CA that signed the server certificate (the client's trust anchor)."""
        assert self._dir is not None, "start() first"
        return str(self._dir / "server-ca.pem")

    def start(self) -> ApnsStandIn:
        """Listen in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="apns-standin-"))
        leaf = issue_leaf(
            self.server_ca,
            "localhost",
            server_auth=True,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        )
        (self._dir / "server.pem").write_bytes(leaf.cert_pem() + leaf.key_pem())
        (self._dir / "server-ca.pem").write_bytes(self.server_ca.cert_pem())
        (self._dir / "client-ca.pem").write_bytes(self.client_ca.cert_pem())
        ctx = self._server_context(self._dir / "client-ca.pem")
        # A decoy CA for reject_client_certs(): switching the context during the handshake
        # makes every client certificate fail verification, exactly as a wrong CA would.
        decoy_ca = make_ca("Rollout APNs stand-in decoy CA")
        (self._dir / "decoy-ca.pem").write_bytes(decoy_ca.cert_pem())
        self._decoy_ctx = self._server_context(self._dir / "decoy-ca.pem")
        ctx.sni_callback = self._sni

        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _ServerConnection(self), self.host, self.port, ssl=ctx, backlog=512
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="apns-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection and the listener, stop the thread, remove temp files."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._live):
                if conn.transport is not None:
                    conn.transport.abort()
            await asyncio.sleep(0.01)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ApnsStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _server_context(self, client_ca_file: Path) -> ssl.SSLContext:
        assert self._dir is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._dir / "server.pem")
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if self.script.reject_certs and self._decoy_ctx is not None:
            sslobj.context = self._decoy_ctx

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, ssl.SSLError | ConnectionError):
            with self._counter_lock:
                self.handshake_failures += 1
            return
        loop.default_exception_handler(context)

    # ---- certificates for clients -------------------------------------------------------------

    def issue_push_certificate(
        self, topic: str = "com.apple.mgmt.External.00000000-0000-4000-8000-000000000000"
    ) -> Issued:
        """A client certificate from the trusted client CA, with ``topic`` as subject UID."""
        return issue_leaf(self.client_ca, f"APSP:{topic[-36:]}", client_auth=True, UID=topic)

    # ---- scripting (thread-safe) ------------------------------------------------------------

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """Answer 410 Unregistered (with ``timestamp``) for this token from now on."""
        with self.script.lock:
            self.script.unregistered[token.lower()] = timestamp_ms or int(time.time() * 1000)

    def fail_next(self, status: int, reason: str, count: int = 1) -> None:
        """Answer the next ``count`` requests with this status and reason (queued in order)."""
        with self.script.lock:
            self.script.next_failures.append(_Failure(status, reason, remaining=count))

    def fail_for(self, status: int, reason: str, seconds: float) -> None:
        """Answer every request with this status and reason for ``seconds``."""
        with self.script.lock:
            self.script.timed_failure = _Failure(status, reason, until=time.monotonic() + seconds)

    def goaway_after(self, streams: int) -> None:
        """Send GOAWAY (last_stream_id = that stream) when ``streams`` more requests arrived."""
        with self.script.lock:
            self.script.goaway_after = streams

    def drop_after(self, streams: int) -> None:
        """Drop the TCP connection without a word when ``streams`` more requests arrived."""
        with self.script.lock:
            self.script.drop_after = streams

    def set_delay(self, seconds: float) -> None:
        """Answer each request after ``seconds``."""
        with self.script.lock:
            self.script.delay = seconds

    def set_topic(self, topic: str | None, reason: str = "DeviceTokenNotForTopic") -> None:
        """Require ``apns-topic`` == topic (else 400 ``reason``); None = the cert's UID."""
        with self.script.lock:
            self.script.topic = topic
            self.script.topic_reason = reason

    def reject_client_certs(self, reject: bool = True) -> None:
        """Fail new TLS handshakes, as if every client certificate came from another CA."""
        with self.script.lock:
            self.script.reject_certs = reject

    def reset(self) -> None:
        """Forget every scripted behaviour and counter."""
        with self.script.lock:
            topic = self.script.topic
            self.script.__init__()  # type: ignore[misc]
            self.script.topic = topic
        with self._counter_lock:
            self.requests = 0
            self.statuses.clear()
            self.reasons.clear()
            self.recorded.clear()
            self.goaways_sent = 0
            self.handshake_failures = 0
            self.peak_streams = 0

    def drop_connections(self) -> None:
        """Abort every open client connection now."""
        loop = self._loop
        if loop is None:
            return
        for conn in list(self._live):
            loop.call_soon_threadsafe(conn._abort)

    def counters(self) -> dict[str, Any]:
        """A snapshot: requests, per-status counts, TLS connections, handshake failures."""
        with self._counter_lock:
            return {
                "requests": self.requests,
                "statuses": dict(self.statuses),
                "reasons": dict(self.reasons),
                "connections": self.connections,
                "open_connections": len(self._live),
                "handshake_failures": self.handshake_failures,
                "goaways": self.goaways_sent,
                "peak_streams": self.peak_streams,
            }

    # ---- the decision -------------------------------------------------------------------------

    def _decide(self, st: _Stream, cert_topic: str | None) -> tuple[int, str, int | None, bytes]:
        hdr: dict[bytes, bytes] = {}
        for k, v in st.headers:
            hdr[k] = v
        apns_id = hdr.get(b"apns-id") or str(uuid.uuid4()).encode()
        status, reason, ts = self._judge(hdr, st.body, cert_topic)
        with self._counter_lock:
            self.requests += 1
            self.statuses[status] += 1
            if reason:
                self.reasons[reason] += 1
            if self.record:
                seen = {k.decode(): v.decode() for k, v in st.headers}
                seen["body"] = st.body.decode("utf-8", "replace")
                self.recorded.append(seen)
        if status == 200 and self.on_push is not None:
            token = hdr[b":path"].rsplit(b"/", 1)[-1].decode()
            try:
                payload = json.loads(st.body)
            except ValueError:
                payload = {}
            self.on_push(token, payload)
        return status, reason, ts, apns_id

    def _judge(
        self, hdr: dict[bytes, bytes], body: bytes, cert_topic: str | None
    ) -> tuple[int, str, int | None]:
        script = self.script
        if hdr.get(b":method") != b"POST":
            return 405, "MethodNotAllowed", None
        path = hdr.get(b":path", b"")
        if not path.startswith(b"/3/device/"):
            return 404, "BadPath", None
        failure = script.scripted_failure()
        if failure is not None:
            return failure.status, failure.reason, None
        token = path[len(b"/3/device/") :].decode("latin-1")
        if not token:
            return 400, "MissingDeviceToken", None
        if (
            not _HEX.issuperset(token)
            or len(token) % 2
            or not _MIN_TOKEN_HEX <= len(token) <= _MAX_TOKEN_HEX
        ):
            return 400, "BadDeviceToken", None
        if not body:
            return 400, "PayloadEmpty", None
        if len(body) > 4096:
            return 413, "PayloadTooLarge", None
        push_type = hdr.get(b"apns-push-type")
        if push_type is not None and push_type not in (b"mdm", b"alert", b"background"):
            return 400, "InvalidPushType", None
        with script.lock:
            wanted = script.topic or cert_topic
            topic_reason = script.topic_reason
            dead = script.unregistered.get(token.lower())
        topic = hdr.get(b"apns-topic")
        if topic is None and wanted is None:
            return 400, "MissingTopic", None
        if wanted is not None and topic is not None and topic.decode() != wanted:
            return 400, topic_reason, None
        if dead is not None:
            return 410, "Unregistered", dead
        return 200, "", None
