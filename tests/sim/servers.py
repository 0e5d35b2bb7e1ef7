"""Real socket servers for the simulator tests.

* :class:`RawHTTPServer`: HTTP/1.1 by hand on ``asyncio.start_server``, with routes that answer
  in the awkward ways the lean client must handle (chunked, ``Connection: close``, read to EOF,
  ``100 Continue``, dropping a kept-alive connection, never answering).
* :class:`MiniMDM` + :class:`UvicornThread`: a tiny MDM server (Starlette on uvicorn) that
  checks every ``Mdm-Signature`` against the device CA, binds the certificate's CN to the UDID,
  serves queued commands and keeps NotNow'd ones for the next session (as nanomdm does).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rollout.mdm import (
    CheckinMessage,
    CommandResult,
    CommandTemplate,
    DeviceCATrust,
    IdentityConfig,
    IdentityError,
    MDMProtocolError,
    Status,
    identify,
    parse_checkin,
    parse_result,
)
from rollout.sim.pki import Issued

# --- a hand-written HTTP/1.1 server -----------------------------------------------------------


class RawHTTPServer:
    """HTTP/1.1 on a real socket; routes by path (see the module docs)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawHTTPServer:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_id = self.connections
        drop_next = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, path, headers, body))
                if drop_next or path == "/hangup":
                    return  # read the request, close without answering
                keep = await self._answer(writer, path, body, conn_id)
                await writer.drain()
                if path == "/arm-drop":
                    drop_next = True
                if not keep:
                    return
        finally:
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, path: str, body: bytes, conn_id: int
    ) -> bool:
        def send(status: str, content: bytes, *extra: str) -> None:
            head = [f"HTTP/1.1 {status}", f"Content-Length: {len(content)}", *extra, "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + content)

        if path in ("/echo", "/arm-drop"):
            send("200 OK", body, f"X-Conn: {conn_id}")
        elif path == "/empty":
            send("200 OK", b"", "Content-Type: application/xml; charset=UTF-8")
        elif path == "/bad":
            send("400 Bad Request", b"refused")
        elif path == "/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
                b"7;ext=1\r\n, world\r\n"
                b"0\r\nX-Trailer: yes\r\n\r\n"
            )
        elif path == "/close":
            send("200 OK", b"bye", "Connection: close")
            return False
        elif path == "/eof":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            return False
        elif path == "/continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            send("201 Created", b"made")
        elif path == "/slow":
            await asyncio.sleep(2.0)
            send("200 OK", b"late")
        else:
            send("404 Not Found", b"")
        return True


# --- a tiny MDM server ------------------------------------------------------------------------


def _cn(identity_subject: Any) -> str:
    attrs = identity_subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


class MiniMDM:
    """Check-in and connect endpoints over in-memory queues (thread-safe)."""

    def __init__(self, ca: Issued) -> None:
        self.config = IdentityConfig(trust=DeviceCATrust([ca.cert]))
        self.base_url = ""
        self.lock = threading.Lock()
        self.checkins: list[CheckinMessage] = []
        self.results: list[CommandResult] = []
        self.refusals: list[str] = []
        self.queues: dict[str, collections.deque[tuple[str, bytes]]] = collections.defaultdict(
            collections.deque
        )
        self.not_now: dict[str, list[tuple[str, bytes]]] = collections.defaultdict(list)
        self.sent: dict[str, tuple[str, bytes]] = {}
        self.fail_connect_with: int | None = None
        self.app = Starlette(
            routes=[
                Route("/mdm/checkin", self._checkin, methods=["PUT"]),
                Route("/mdm/connect", self._connect, methods=["PUT"]),
            ]
        )

    def enqueue(self, udid: str, template: CommandTemplate) -> str:
        """Queue a command for ``udid``; return its CommandUUID."""
        command_uuid = str(uuid.uuid4()).upper()
        with self.lock:
            self.queues[udid].append((command_uuid, template.render(command_uuid)))
        return command_uuid

    def final_statuses(self) -> dict[str, list[Status]]:
        """Statuses of non-Idle reports per UDID, in order."""
        out: dict[str, list[Status]] = collections.defaultdict(list)
        with self.lock:
            for r in self.results:
                if r.status is not Status.IDLE:
                    out[r.enrollment.device_key].append(r.status)
        return out

    def _verify(self, request: Request, body: bytes) -> str | Response:
        try:
            identity = identify(dict(request.headers), body, self.config)
        except IdentityError as exc:
            self.refusals.append(exc.reason)
            return Response(status_code=400)
        assert identity is not None
        return _cn(identity.certificate.subject)

    async def _checkin(self, request: Request) -> Response:
        body = await request.body()
        if not request.headers.get("content-type", "").startswith(
            "application/x-apple-aspen-mdm-checkin"
        ):
            return Response(status_code=400)
        who = self._verify(request, body)
        if isinstance(who, Response):
            return who
        try:
            message = parse_checkin(body)
        except MDMProtocolError:
            return Response(status_code=400)
        if message.enrollment.device_key != who:
            return Response(status_code=403)
        with self.lock:
            self.checkins.append(message)
        return Response(status_code=200)

    async def _connect(self, request: Request) -> Response:
        body = await request.body()
        if self.fail_connect_with is not None:
            return Response(status_code=self.fail_connect_with)
        who = self._verify(request, body)
        if isinstance(who, Response):
            return who
        try:
            result = parse_result(body)
        except MDMProtocolError:
            return Response(status_code=400)
        udid = result.enrollment.device_key
        if udid != who:
            return Response(status_code=403)
        with self.lock:
            self.results.append(result)
            queue = self.queues[udid]
            if result.status is Status.IDLE:
                # NotNow'd commands come back at the start of a later session.
                queue.extendleft(reversed(self.not_now.pop(udid, [])))
            elif result.command_uuid is not None:
                sent = self.sent.pop(result.command_uuid, None)
                if result.status is Status.NOT_NOW and sent is not None:
                    self.not_now[udid].append(sent)
            if not queue:
                return Response(status_code=200)
            command_uuid, command = queue.popleft()
            self.sent[command_uuid] = (command_uuid, command)
        return Response(command, media_type="application/xml; charset=UTF-8")


class UvicornThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Callable[..., Any]) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.port = 0

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
