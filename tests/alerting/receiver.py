"""A webhook receiver for tests: a real HTTP server on a free local port that records each
request, checks its signature with :func:`webhook.verify` as a real receiver would, and answers
by path (or from a script of statuses)."""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rollout.alerting import webhook
from rollout.clock import ManualClock

SECRET = b"wh-secret-7f3a9c"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


class Receiver:
    """A webhook receiver: records each request, verifies it, answers by path."""

    ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/ok": (200, {}, b"thanks"),
        "/accepted": (202, {}, b""),
        "/fail": (500, {}, b"boom\nat line 3"),
        "/missing": (404, {}, b"no such hook"),
        "/bad": (400, {}, b"bad signature"),
        "/timeout": (408, {}, b""),
        "/busy": (429, {"Retry-After": "120"}, b"slow down"),
        "/moved": (302, {"Location": "/ok?token=abc"}, b""),
        "/echo-secret": (400, {}, b"we got key " + SECRET + b" and refuse it"),
    }

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.unavailable_until: dt.datetime | None = None
        self.script: list[int] = []  # statuses to answer first, whatever the path
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = webhook.verify(
                    body,
                    SECRET,
                    headers.get("x-rollout-timestamp"),
                    headers.get("x-rollout-signature"),
                    now=receiver.clock.now().timestamp(),
                )
                with receiver.lock:
                    receiver.requests.append(Received(self.path, headers, body, verified))
                status, extra, content = receiver.answer(self.path)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.script:
                return self.script.pop(0), {}, b""
        if path == "/unavailable":
            assert self.unavailable_until is not None
            when = email.utils.format_datetime(self.unavailable_until, usegmt=True)
            return 503, {"Retry-After": when}, b"maintenance"
        return self.ANSWERS.get(path, (404, {}, b""))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]


@contextmanager
def running(clock: ManualClock) -> Iterator[Receiver]:
    """A started receiver, stopped at the end."""
    r = Receiver(clock)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join()
