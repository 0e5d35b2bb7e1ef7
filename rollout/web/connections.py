"""Connection guards for uvicorn: a deadline for request headers and a cap on connections.

uvicorn times out idle keep-alive connections but never a request that is being sent: a client
that opens a connection and sends nothing, or half a header and then stalls, holds its socket
for as long as it likes, and uvicorn accepts as many such connections as the kernel hands it.
:func:`guarded_protocol` closes both gaps in uvicorn's own HTTP/1.1 protocol (httptools):

* **slow headers**: a timer is armed when a connection opens, and again when the first byte of
  a later request arrives on it; if the request's whole header has not arrived when it fires,
  the client gets ``408`` and the connection is closed. It is one absolute deadline per
  request, so trickling a byte at a time does not extend it.
* **too many connections**: a connection beyond the cap is answered ``503`` and closed at once,
  before it costs a parser or a task.

Slow *bodies* are the endpoint's to time out (:class:`rollout.web.mdm.MDMEndpoint`): it knows
the request and records the refusal.
"""

from __future__ import annotations

import asyncio
import resource
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    """What one web process allows a connection (see ``ROLLOUT_HEADER_TIMEOUT_S`` and
    ``ROLLOUT_MAX_CONNECTIONS``)."""

    header_timeout_s: float = 15.0
    max_connections: int = 1000


class ConnectionStats:
    """What the guards did, for ``/healthz`` (plain counters: one event loop writes them)."""

    def __init__(self) -> None:
        self.open = 0
        self.header_timeouts = 0
        self.refused_over_cap = 0

    def as_json(self) -> dict[str, int]:
        """The counters by name."""
        return {
            "open": self.open,
            "header_timeouts": self.header_timeouts,
            "refused_over_cap": self.refused_over_cap,
        }


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    stats: ClassVar[ConnectionStats]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self.connections) >= self.limits.max_connections:
            # Refused before uvicorn registers it: no parser work, no task, no timer.
            self._refused = True
            self.stats.refused_over_cap += 1
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self.stats.open = len(self.connections)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_header_timer()
        super().connection_lost(exc)
        self.stats.open = len(self.connections)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Decided once uvicorn has parsed the bytes (cheaper than a hook per parser event): a
        # request whose header is complete has an open cycle, so its deadline goes. Otherwise
        # the bytes begin a request (or are blank lines before one) while none is served, and
        # uvicorn has just cancelled its keep-alive timer on them: the header deadline takes
        # over, so a trickle of bytes cannot hold the connection open.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()

    def _between_requests(self) -> bool:
        return not self.transport.is_closing() and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_timed_out
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self._between_requests():
            return  # a request is being served: its header did arrive
        self.stats.header_timeouts += 1
        self.transport.write(_TIMED_OUT)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits, stats: ConnectionStats) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class with ``limits`` applied and counted in ``stats``."""
    return type("GuardedHttpToolsProtocol", (_GuardedProtocol,), {"limits": limits, "stats": stats})


def open_file_limit() -> int | None:
    """The process's soft limit on open files (every connection holds one), if known."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft
