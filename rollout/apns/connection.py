"""One multiplexed HTTP/2 connection to APNs, on ``h2`` over an asyncio TLS transport.

Why not httpx on the hot path: measured here, httpx's client layer alone costs ~180 µs per
request, a ceiling near 5,500 requests/s before any HTTP/2 work, while a bare ``h2`` protocol
object reaches 5,400-7,000. This module is that bare protocol: no task or future per push, every
stream started in one pass is written to the socket in one ``write`` call, and answers are
handed to the owner (the client) as plain callbacks.

Departures from stock ``h2`` (see ``_LeanH2Connection`` and ``hpack_codec``):

- ``open_outbound_streams`` is counted here instead of by scanning every stream on each new
  stream (an O(streams) loop per push with 1,000 streams in flight);
- a GOAWAY frame does not make later frames a protocol error, so the answers for streams the
  server promised to finish (id <= last_stream_id) are still read. Streams above
  last_stream_id were not processed and go back to the owner to be re-sent;
- request header blocks are pre-encoded, and answer header values nobody reads are not
  Huffman-decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import h2.events as ev
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, H2Error, NoAvailableStreamIDError
from h2.settings import SettingCodes

from rollout.apns.hpack_codec import LazyDecoder, PreEncodedEncoder
from rollout.apns.jobs import Job
from rollout.clock import Clock

if TYPE_CHECKING:
    from h2.frame_buffer import Frame

_STREAM_WINDOW = 1 << 20
_CONN_WINDOW = 1 << 24
_MAX_STREAM_ID = (1 << 31) - 1
_GC_EVERY = 512


class ClosedBeforeSettings(ConnectionError):
    """The server closed the connection after the TLS handshake without a single HTTP/2 frame.

    With TLS 1.3 the server checks the client certificate *after* the client considers the
    handshake done, so a refused certificate often shows up as exactly this (the alert may not
    reach us). The client treats it as a certificate failure when it happens twice in a row.
    """


class ConnectionOwner(Protocol):
    """What a connection reports to (the client)."""

    def on_ready(self, conn: ApnsConnection) -> None:
        """The server's first SETTINGS arrived: streams may start."""

    def on_answer(self, job: Job, status: int, body: bytes) -> None:
        """A complete response for ``job``."""

    def on_lost(self, job: Job, reason: str, processed: bool) -> None:
        """No response for ``job``; ``processed=False`` when the server said it never saw it."""

    def on_goaway(self, conn: ApnsConnection, reason: str) -> None:
        """The server is closing this connection: stop using it for new streams."""

    def on_closed(self, conn: ApnsConnection, exc: BaseException | None) -> None:
        """The transport is gone."""

    def after_events(self) -> None:
        """One batch of incoming frames was handled (capacity may have freed up)."""


class _LeanH2Connection(H2Connection):
    """``h2`` with an O(1) open-stream count and GOAWAY that lets promised answers through."""

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = PreEncodedEncoder()
        lazy = LazyDecoder(self.decoder.max_header_list_size)
        lazy.max_allowed_table_size = self.decoder.max_allowed_table_size
        self.decoder = lazy
        self.counted_open = 0

    @property
    def open_outbound_streams(self) -> int:
        return self.counted_open

    def collect_closed(self) -> None:
        """Drop closed streams from h2's table (stock h2 does this on every new stream)."""
        self._open_streams(1)

    def _receive_goaway_frame(self, frame: Frame) -> tuple[list[Frame], list[ev.Event]]:
        before = self.state_machine.state
        result = super()._receive_goaway_frame(frame)  # type: ignore[arg-type]
        if before is ConnectionState.CLIENT_OPEN:
            self.state_machine.state = before
        return result


class ApnsConnection(asyncio.Protocol):
    """An HTTP/2 client connection that runs many APNs pushes at once."""

    def __init__(
        self, owner: ConnectionOwner, max_streams: int, timeout: float, clock: Clock
    ) -> None:
        self.owner = owner
        self.cap = max_streams
        self.timeout = timeout
        self._monotonic = clock.monotonic  # bound once: read on every batch of frames
        cfg = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self.h2 = _LeanH2Connection(cfg)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Job] = {}
        self._status: dict[int, int] = {}
        self._bodies: dict[int, bytes] = {}
        self._blocked: dict[int, bytes] = {}  # DATA waiting for flow-control window
        self.next_sid = 1
        self.max_streams = 0  # 0 until the server's SETTINGS arrive
        self.ready = False
        self.draining = False
        self.closed = False
        self.goaway_last: int | None = None
        self.goaway_reason = ""
        self.close_exc: BaseException | None = None
        self.last_activity = self._monotonic()
        self.ping_sent_at: float | None = None
        self.answered = 0
        self.pings_acked = 0
        self.received_any = False
        self._gc = 0
        self._ready_waiter: asyncio.Future[None] | None = None

    # ---- capacity --------------------------------------------------------------------------

    @property
    def free(self) -> int:
        """How many more streams may start now."""
        if not self.ready or self.draining or self.closed:
            return 0
        return self.max_streams - len(self.streams)

    @property
    def in_flight(self) -> int:
        """Streams started and not yet answered."""
        return len(self.streams)

    async def wait_ready(self) -> None:
        """Wait for the server's SETTINGS (or raise what closed the connection first)."""
        if self.ready:
            return
        if self.closed:
            if self.close_exc is None and not self.received_any:
                raise ClosedBeforeSettings("connection closed before any HTTP/2 frame")
            raise self.close_exc or ConnectionError("connection closed before SETTINGS")
        if self._ready_waiter is None:
            self._ready_waiter = asyncio.get_running_loop().create_future()
        await self._ready_waiter

    # ---- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the preface, our SETTINGS and a large connection window."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        h2c = self.h2
        h2c.initiate_connection()
        h2c.update_settings(
            {
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            }
        )
        h2c.increment_flow_control_window(_CONN_WINDOW - 65535)
        transport.write(h2c.data_to_send())

    def data_received(self, data: bytes) -> None:
        """Turn frames into owner callbacks; flush whatever h2 wants to answer (ACKs, windows)."""
        self.last_activity = self._monotonic()
        self.received_any = True
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self.abort(f"HTTP/2 protocol error: {exc}")
            return
        owner = self.owner
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is ev.ResponseReceived:
                hdrs = event.headers  # type: ignore[attr-defined]
                if hdrs and hdrs[0][0] == b":status":
                    self._status[event.stream_id] = int(hdrs[0][1])  # type: ignore[attr-defined]
                else:
                    for k, v in hdrs:
                        if k == b":status":
                            self._status[event.stream_id] = int(v)  # type: ignore[attr-defined]
            elif kind is ev.StreamEnded:
                sid = event.stream_id  # type: ignore[attr-defined]
                job = streams.pop(sid, None)
                if job is None:
                    continue
                self.h2.counted_open -= 1
                self.answered += 1
                self._gc += 1
                owner.on_answer(job, self._status.pop(sid, 0), self._bodies.pop(sid, b""))
            elif kind is ev.DataReceived:
                sid = event.stream_id  # type: ignore[attr-defined]
                self._bodies[sid] = self._bodies.get(sid, b"") + event.data  # type: ignore[attr-defined]
                length = event.flow_controlled_length  # type: ignore[attr-defined]
                if length:
                    self.h2.acknowledge_received_data(length, sid)
            elif kind is ev.RemoteSettingsChanged:
                changed = event.changed_settings  # type: ignore[attr-defined]
                setting = changed.get(SettingCodes.MAX_CONCURRENT_STREAMS)
                if setting is not None:
                    self.max_streams = min(self.cap, setting.new_value)
                elif not self.ready:
                    self.max_streams = self.cap
                if not self.ready:
                    self.max_streams = self.max_streams or self.cap
                    self.ready = True
                    if self._ready_waiter is not None and not self._ready_waiter.done():
                        self._ready_waiter.set_result(None)
                    owner.on_ready(self)
            elif kind is ev.StreamReset:
                sid = event.stream_id  # type: ignore[attr-defined]
                job = streams.pop(sid, None)
                self._status.pop(sid, None)
                self._bodies.pop(sid, None)
                self._blocked.pop(sid, None)
                if job is not None:
                    self.h2.counted_open -= 1
                    refused = event.error_code == ErrorCodes.REFUSED_STREAM  # type: ignore[attr-defined]
                    owner.on_lost(job, "StreamReset", not refused)
            elif kind is ev.WindowUpdated:
                if self._blocked:
                    self._send_blocked()
            elif kind is ev.PingAckReceived:
                self.ping_sent_at = None
                self.pings_acked += 1
            elif kind is ev.ConnectionTerminated:
                self._on_goaway(event)  # type: ignore[arg-type]
        if self._gc >= _GC_EVERY:
            self._gc = 0
            self.h2.collect_closed()
        if self.draining and not streams and not self.closed:
            self.close()
        self.flush()
        owner.after_events()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Hand back every unanswered stream and tell the owner."""
        self.closed = True
        self.close_exc = exc
        if self._ready_waiter is not None and not self._ready_waiter.done():
            if exc is None and not self.received_any:
                exc = ClosedBeforeSettings("connection closed before any HTTP/2 frame")
            self._ready_waiter.set_exception(
                exc or ConnectionError("connection closed before SETTINGS")
            )
            self._ready_waiter.exception()  # mark retrieved
        streams, self.streams = self.streams, {}
        self.h2.counted_open = 0
        reason = "GOAWAY" if self.goaway_last is not None else "ConnectionLost"
        for job in streams.values():
            self.owner.on_lost(job, reason, True)
        self.owner.on_closed(self, exc)
        self.owner.after_events()

    # ---- sending ----------------------------------------------------------------------------

    def send_jobs(self, jobs: Sequence[Job], now: float) -> None:
        """Start one stream per job (the caller respects ``free``) and write them in one go."""
        h2c = self.h2
        streams = self.streams
        deadline = now + self.timeout
        sid = self.next_sid
        for pos, job in enumerate(jobs):
            job.attempts += 1  # on_lost(..., False) gives it back
            try:
                if sid > _MAX_STREAM_ID:
                    raise NoAvailableStreamIDError("stream ids exhausted")
                h2c.send_headers(sid, job.headers)
            except H2Error as exc:
                # This connection cannot start streams any more (ids used up, closing): hand
                # this job and the rest back unsent; a fresh connection takes over.
                self.draining = True
                for later in jobs[pos + 1 :]:
                    later.attempts += 1
                for back in jobs[pos:]:
                    self.owner.on_lost(back, type(exc).__name__, False)
                break
            try:
                h2c.send_data(sid, job.body, end_stream=True)
            except FlowControlError:
                self._blocked[sid] = job.body
            h2c.counted_open += 1
            job.deadline = deadline
            streams[sid] = job
            sid += 2
        self.next_sid = sid
        self.last_activity = now
        self.flush()

    def _send_blocked(self) -> None:
        h2c = self.h2
        for sid, body in list(self._blocked.items()):
            if min(h2c.outbound_flow_control_window, h2c.local_flow_control_window(sid)) < len(
                body
            ):
                break
            h2c.send_data(sid, body, end_stream=True)
            del self._blocked[sid]

    def flush(self) -> None:
        """Write whatever h2 has queued, as one write."""
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    # ---- upkeep -----------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Reset streams past their deadline (oldest first); return how many."""
        expired: list[tuple[int, Job]] = []
        for sid, job in self.streams.items():
            if job.deadline > now:
                break  # ids and deadlines grow together
            expired.append((sid, job))
        for sid, job in expired:
            del self.streams[sid]
            self._status.pop(sid, None)
            self._bodies.pop(sid, None)
            self._blocked.pop(sid, None)
            self.h2.counted_open -= 1
            with contextlib.suppress(H2Error):
                self.h2.reset_stream(sid, ErrorCodes.CANCEL)
            self.owner.on_lost(job, "Timeout", True)
        if expired:
            self.flush()
        return len(expired)

    def ping(self) -> None:
        """Send a PING (answered with an ACK, which proves the connection is alive)."""
        if self.closed:
            return
        self.ping_sent_at = self._monotonic()
        self.h2.ping(b"rollout!")
        self.flush()

    def close(self) -> None:
        """Close gracefully (GOAWAY, then the transport)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.draining = True
        try:
            self.h2.close_connection()
            self.flush()
        except H2Error:
            pass
        self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection now; unanswered streams go back to the owner."""
        self.goaway_reason = self.goaway_reason or reason
        self.draining = True
        if self.transport is not None:
            self.transport.abort()

    def _on_goaway(self, event: ev.ConnectionTerminated) -> None:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        self.draining = True
        self.goaway_last = last
        reason = "GOAWAY"
        if event.additional_data:
            try:
                reason = json.loads(event.additional_data).get("reason") or reason
            except (ValueError, AttributeError):
                reason = event.additional_data.decode("utf-8", "replace")
        self.goaway_reason = reason
        unprocessed = [sid for sid in self.streams if sid > last]
        for sid in unprocessed:
            job = self.streams.pop(sid)
            self._status.pop(sid, None)
            self._bodies.pop(sid, None)
            self._blocked.pop(sid, None)
            self.h2.counted_open -= 1
            self.owner.on_lost(job, "GOAWAY", False)
        self.owner.on_goaway(self, reason)


def is_handshake_rejection(exc: BaseException | None) -> bool:
    """True for a TLS failure that points at our client certificate (not the server's)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False  # we refused the server: a trust-store problem, not our certificate
    return isinstance(exc, ssl.SSLError)
