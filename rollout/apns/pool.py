"""The client's few long-lived HTTP/2 connections to APNs: growth, failures and upkeep.

Apple asks for connections reused for hours and a PING when one has been idle; throughput comes
from many streams on each, so a new connection opens only when every open one is full (up to
``max_connections``; draining ones do not count, they are on their way out). While any is open,
upkeep runs on a timer: it times out unanswered streams, closes drained connections, PINGs idle
ones and drops those whose PING went unanswered. Those decisions read the client's clock; only
how often upkeep looks is real time (a loop timer), so a test moves a manual clock and calls
``upkeep`` (through ``AsyncPushClient.tick``) instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from rollout.apns.config import PushConfig
from rollout.apns.connection import (
    ApnsConnection,
    ClosedBeforeSettings,
    ConnectionOwner,
    is_handshake_rejection,
)
from rollout.clock import Clock

log = logging.getLogger("rollout.apns")


class ConnectionPool:
    """The open connections, and the policy for opening, failing and keeping them.

    ``on_open`` runs when a new connection is ready for streams; ``on_refused(reason)`` when a
    failed connection says APNs refused the certificate; ``on_stranded(exc)`` when a connection
    failed and no other can carry the queued pushes.
    """

    def __init__(
        self,
        owner: ConnectionOwner,
        config: PushConfig,
        ssl_context: ssl.SSLContext,
        clock: Clock,
        *,
        on_open: Callable[[], None],
        on_refused: Callable[[str], None],
        on_stranded: Callable[[BaseException], None],
    ) -> None:
        self.owner = owner
        self.config = config
        self.ssl_context = ssl_context
        self.clock = clock
        self.host, self.port = config.endpoint()
        self.on_open = on_open
        self.on_refused = on_refused
        self.on_stranded = on_stranded
        self.conns: list[ApnsConnection] = []
        self.connecting = 0
        self.closing = False
        self.opened = 0
        self.closed_pings_acked = 0
        self._early_closes = 0
        self._upkeep: asyncio.TimerHandle | None = None

    # ---- capacity ----------------------------------------------------------------------------

    def with_room(self) -> ApnsConnection | None:
        """The first connection that may start a stream now, if any."""
        for conn in self.conns:
            if conn.free > 0:
                return conn
        return None

    def grow(self) -> None:
        """Open one more connection unless one is opening or the pool is full."""
        if self.connecting or self.closing:
            return
        if sum(1 for c in self.conns if not c.draining) >= self.config.max_connections:
            return
        self.connecting += 1
        asyncio.get_running_loop().create_task(self._open())

    def in_flight(self) -> int:
        """Streams started and not yet answered, over every connection."""
        return sum(c.in_flight for c in self.conns)

    def pings_acked(self) -> int:
        """PINGs answered, over every connection this pool has had."""
        return self.closed_pings_acked + sum(c.pings_acked for c in self.conns)

    # ---- opening and losing connections -------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        conn = ApnsConnection(self.owner, self.config.max_streams, self.config.timeout, self.clock)
        try:
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn,
                        self.host,
                        self.port,
                        ssl=self.ssl_context,
                        server_hostname=self.host,
                    ),
                    self.config.connect_timeout,
                )
                self.conns.append(conn)
                self.opened += 1
                await asyncio.wait_for(conn.wait_ready(), self.config.connect_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                conn.abort("connect failed")
                self._open_failed(exc)
                return
        finally:
            self.connecting -= 1
        self._early_closes = 0
        self._ensure_upkeep()
        self.on_open()

    def _open_failed(self, exc: BaseException) -> None:
        if is_handshake_rejection(exc):
            self.on_refused(f"TLS handshake failed: {exc}")
            return
        if isinstance(exc, ClosedBeforeSettings):
            self._early_closes += 1
            if self._early_closes >= 2:
                self._early_closes = 0
                self.on_refused(
                    "TLS handshake failed: server closed every connection before HTTP/2 "
                    "started (client certificate refused?)"
                )
                return
        log.warning("apns connect to %s:%s failed: %r", self.host, self.port, exc)
        if any(c.ready and not c.draining for c in self.conns):
            return  # the other connections carry on with the queue
        self.on_stranded(exc)

    def closed(self, conn: ApnsConnection, exc: BaseException | None) -> None:
        """A connection's transport is gone: forget it (see ``ConnectionOwner.on_closed``)."""
        if conn in self.conns:
            self.conns.remove(conn)
            self.closed_pings_acked += conn.pings_acked
        if not conn.ready and is_handshake_rejection(exc):
            self.on_refused(f"TLS handshake failed: {exc}")

    # ---- winding down -------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop starting streams on the open connections (each closes once its streams end)."""
        for conn in self.conns:
            conn.draining = True
            if not conn.in_flight:
                conn.close()

    def close(self) -> None:
        """Close every connection gracefully (GOAWAY) and stop upkeep."""
        self.closing = True
        if self._upkeep is not None:
            self._upkeep.cancel()
            self._upkeep = None
        for conn in list(self.conns):
            conn.close()
        self.conns.clear()

    def abandon(self) -> None:
        """Drop every connection without a word: they belong to an event loop no longer used."""
        for conn in self.conns:
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    conn.transport.abort()
        self.conns.clear()
        self.connecting = 0
        self._upkeep = None

    def ping(self) -> None:
        """PING every open connection now."""
        for conn in self.conns:
            conn.ping()

    # ---- upkeep -------------------------------------------------------------------------------

    def _ensure_upkeep(self) -> None:
        if self._upkeep is None and not self.closing:
            interval = max(0.05, min(1.0, self.config.timeout / 4))
            self._upkeep = asyncio.get_running_loop().call_later(interval, self._upkeep_due)

    def _upkeep_due(self) -> None:
        self._upkeep = None
        self.upkeep(self.clock.monotonic())
        if self.conns:
            self._ensure_upkeep()

    def upkeep(self, now: float) -> None:
        """Time out late streams, close drained connections, PING idle ones, drop silent ones."""
        timeout, idle = self.config.timeout, self.config.ping_interval
        for conn in list(self.conns):
            if conn.closed:
                continue
            if conn.streams:
                conn.expire(now)
            if conn.draining and not conn.streams:
                conn.close()
                continue
            if conn.ping_sent_at is not None:
                if now - conn.ping_sent_at > timeout:
                    conn.abort("PING unanswered")
            elif not conn.streams and now - conn.last_activity > idle:
                conn.ping()
