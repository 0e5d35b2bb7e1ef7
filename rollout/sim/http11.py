"""Transports for simulated devices: a lean keep-alive HTTP/1.1 client, and one over httpx.

Both implement :class:`rollout.sim.device.Transport`: ``await put(path, body, headers)`` returns
``(status_code, body)`` and raises a :class:`~rollout.sim.device.TransportError` when no answer
came.

:class:`Http11Client` exists for benchmarks. httpx spends a few hundred microseconds of client
CPU per request, which caps a 2-core machine that must also run the server well below the
thousands of device requests per second a check-in benchmark needs. This client does only what
the MDM endpoints need, on asyncio streams:

* one origin (``http://`` or ``https://`` host and port, optional path prefix), a pool of up to
  ``connections`` keep-alive connections, opened on demand and reused last-in first-out;
* requests with a ``Content-Length`` body (never chunked uploads, no ``Expect: 100-continue``);
* responses with ``Content-Length``, ``Transfer-Encoding: chunked`` or read-to-close bodies,
  ``1xx`` interim responses skipped, ``Connection: close`` and HTTP/1.0 honoured;
* a request on a reused connection that the server had already closed (the usual keep-alive
  race: EOF or reset before any byte of the answer) is sent once more on a new connection;
* one overall time-out per request (waiting for a pool slot, connecting, sending, reading).

It is not a general client: no redirects, cookies, proxies, compression or HTTP/2. It must be
used from one event loop (the loop that first uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import httpx

from rollout.sim.device import TransportError

__all__ = [
    "ClientStats",
    "Http11Client",
    "Http11Error",
    "Http11Timeout",
    "HttpxTransport",
    "Response",
]

DEFAULT_USER_AGENT = "MDM/1.0"
"""What iOS sends on MDM requests."""

_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
_BAD_HEADER_CHARS = ("\r", "\n", "\0")


class Http11Error(TransportError):
    """The exchange failed: connection refused or lost, malformed response, over a limit."""


class Http11Timeout(Http11Error, TimeoutError):
    """The request took longer than the client's ``timeout``."""


class _StaleConnection(Exception):
    """The server closed a kept-alive connection before answering (safe to resend)."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, reason, headers (names lower-cased, in order) and body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@dataclass
class ClientStats:
    """Counters of an :class:`Http11Client`."""

    requests: int = 0
    connections_opened: int = 0
    reused: int = 0
    resent: int = 0
    failures: int = 0


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _check_header(name: str, value: str) -> None:
    if not name or ":" in name or any(c in name or c in value for c in _BAD_HEADER_CHARS):
        raise ValueError(f"header {name!r} has characters that are not allowed")


class Http11Client:
    """A pool of keep-alive HTTP/1.1 connections to one origin (see the module docs).

    ``base_url`` is ``http://host:port`` or ``https://host:port``, optionally with a path
    prefix that every request path is appended to. ``ssl_context`` is used for ``https``
    (default: the system trust store). ``timeout`` (seconds, None for none) bounds a whole
    request. ``headers`` are sent on every request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connections: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        max_body_bytes: int = _MAX_BODY_BYTES,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], not {base_url!r}")
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.host = url.hostname
        tls = url.scheme == "https"
        self.port = url.port or (443 if tls else 80)
        self.ssl_context: ssl.SSLContext | None = None
        if tls:
            self.ssl_context = ssl_context or ssl.create_default_context()
        self.prefix = url.path.rstrip("/")
        self.timeout = timeout
        self.max_connections = connections
        self.max_body_bytes = max_body_bytes
        self.stats = ClientStats()
        default_port = 443 if tls else 80
        host_header = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port != default_port:
            host_header = f"{host_header}:{self.port}"
        fixed = {"Host": host_header, "User-Agent": DEFAULT_USER_AGENT}
        fixed.update(headers or {})
        for name, value in fixed.items():
            _check_header(name, value)
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)
        self._closed = False

    # --- public --------------------------------------------------------------------------

    async def put(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """PUT ``body`` to ``path``; return ``(status, body)`` (the Transport protocol)."""
        response = await self.request("PUT", path, body, headers)
        return response.status, response.body

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and read the whole answer. Raises :class:`Http11Error`."""
        if self._closed:
            raise Http11Error("the client is closed")
        head = self._head(method, path, len(body), headers)
        payload = head + body if len(body) < 65536 else None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._slots:
                    response = await self._send(method, head, body, payload)
        except TimeoutError as exc:
            self.stats.failures += 1
            raise Http11Timeout(f"no answer within {self.timeout} s") from exc
        except Http11Error:
            self.stats.failures += 1
            raise
        self.stats.requests += 1
        return response

    async def aclose(self) -> None:
        """Close every idle connection; later requests fail."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.wait_closed(), 1.0)

    async def __aenter__(self) -> Http11Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def idle_connections(self) -> int:
        """How many open connections wait in the pool."""
        return len(self._idle)

    # --- internals -----------------------------------------------------------------------

    def _head(
        self, method: str, path: str, length: int, headers: Mapping[str, str] | None
    ) -> bytes:
        if not path.startswith("/"):
            path = "/" + path
        if any(c in path for c in " \r\n\0"):
            raise ValueError(f"path {path!r} has characters that are not allowed")
        parts = [f"{method} {self.prefix}{path} HTTP/1.1\r\n", self._fixed_headers]
        if headers:
            for name, value in headers.items():
                _check_header(name, value)
                parts.append(f"{name}: {value}\r\n")
        if length or method in ("PUT", "POST", "PATCH"):
            parts.append(f"Content-Length: {length}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("latin-1")

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_context,
                limit=_MAX_HEAD_BYTES,
            )
        except OSError as exc:
            raise Http11Error(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self.stats.connections_opened += 1
        return _Connection(reader, writer)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _send(self, method: str, head: bytes, body: bytes, payload: bytes | None) -> Response:
        conn = self._take_idle()
        reused = conn is not None
        if conn is None:
            conn = await self._connect()
        else:
            self.stats.reused += 1
        try:
            response, keep = await self._exchange(conn, method, head, body, payload)
        except _StaleConnection:
            conn.close()
            if not reused:
                raise Http11Error("the server closed the connection without answering") from None
            self.stats.resent += 1
            conn = await self._connect()
            try:
                response, keep = await self._exchange(conn, method, head, body, payload)
            except _StaleConnection:
                conn.close()
                raise Http11Error("the server closed the connection without answering") from None
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if keep and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    async def _exchange(
        self, conn: _Connection, method: str, head: bytes, body: bytes, payload: bytes | None
    ) -> tuple[Response, bool]:
        reader, writer = conn.reader, conn.writer
        try:
            if payload is not None:
                writer.write(payload)
            else:
                writer.writelines((head, body))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _StaleConnection() from exc
        except OSError as exc:
            raise Http11Error(f"sending failed: {exc}") from exc
        first = True
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if first and not exc.partial:
                    raise _StaleConnection() from exc
                raise Http11Error("the connection closed in the middle of a response") from exc
            except asyncio.LimitOverrunError as exc:
                raise Http11Error("response headers are too large") from exc
            except ConnectionResetError as exc:
                if first:
                    raise _StaleConnection() from exc
                raise Http11Error(f"reading failed: {exc}") from exc
            except OSError as exc:
                raise Http11Error(f"reading failed: {exc}") from exc
            first = False
            status, reason, headers, length, chunked, keep = self._parse_head(raw)
            if 100 <= status < 200 and status != 101:
                continue  # interim answer (100 Continue, 103 Early Hints): the real one follows
            break
        try:
            if method == "HEAD" or status in (204, 304) or status == 101:
                body_in = b""
            elif chunked:
                body_in = await self._read_chunked(reader)
            elif length is not None:
                if length > self.max_body_bytes:
                    raise Http11Error(f"response body of {length} bytes is over the limit")
                body_in = await reader.readexactly(length) if length else b""
            else:
                body_in = await self._read_to_close(reader)
                keep = False
        except asyncio.IncompleteReadError as exc:
            raise Http11Error("the connection closed in the middle of a response body") from exc
        except asyncio.LimitOverrunError as exc:
            raise Http11Error("a chunk-size line is too long") from exc
        except OSError as exc:
            raise Http11Error(f"reading failed: {exc}") from exc
        return Response(status, reason, headers, body_in), keep

    @staticmethod
    def _parse_head(
        raw: bytes,
    ) -> tuple[int, str, tuple[tuple[str, str], ...], int | None, bool, bool]:
        lines = raw[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
            raise Http11Error(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(rest[:3])
        reason = rest[4:].decode("latin-1")
        keep = version != b"HTTP/1.0"
        length: int | None = None
        chunked = False
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name_b, sep, value_b = line.partition(b":")
            if not sep or not name_b or name_b != name_b.strip():
                raise Http11Error(f"malformed header line {line[:80]!r}")
            name = name_b.decode("latin-1").lower()
            value = value_b.strip().decode("latin-1")
            headers.append((name, value))
            if name == "content-length":
                if not value.isdigit():
                    raise Http11Error(f"bad Content-Length {value!r}")
                if length is not None and length != int(value):
                    raise Http11Error("conflicting Content-Length headers")
                length = int(value)
            elif name == "transfer-encoding":
                codings = [c.strip().lower() for c in value.split(",")]
                if codings[-1] != "chunked":
                    raise Http11Error(f"unsupported Transfer-Encoding {value!r}")
                chunked = True
            elif name == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                if "close" in tokens:
                    keep = False
                elif "keep-alive" in tokens:
                    keep = True
        if chunked:
            length = None  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
        return status, reason, tuple(headers), length, chunked, keep

    async def _read_to_close(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total > self.max_body_bytes:
                raise Http11Error("response body is over the limit")
            parts.append(chunk)
        return b"".join(parts)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Http11Error(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                break
            total += size
            if total > self.max_body_bytes:
                raise Http11Error("chunked response body is over the limit")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise Http11Error("a chunk is not followed by CRLF")
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailer fields are ignored
        return b"".join(parts)


class HttpxTransport:
    """The Transport protocol over :class:`httpx.AsyncClient` (general use, HTTP/1.1 or 2).

    Give ``base_url`` (a client is made and owned here, with ``verify`` and ``timeout``) or an
    existing ``client`` (whose ``base_url`` is used; it is not closed by :meth:`aclose`).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 30.0,
        http2: bool = False,
        max_connections: int = 100,
    ) -> None:
        if client is None:
            if base_url is None:
                raise ValueError("give base_url or client")
            client = httpx.AsyncClient(
                base_url=base_url,
                verify=verify,
                timeout=timeout,
                http2=http2,
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
                headers={"User-Agent": DEFAULT_USER_AGENT},
            )
            self._owned = True
        else:
            self._owned = False
        self.client: httpx.AsyncClient = client

    async def put(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """PUT ``body`` to ``path`` (relative to the client's base URL)."""
        try:
            response = await self.client.put(path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise Http11Timeout(f"httpx: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"httpx: {exc!r}") from exc
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Close the client if this transport made it."""
        if self._owned:
            await self.client.aclose()

    async def __aenter__(self) -> HttpxTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
