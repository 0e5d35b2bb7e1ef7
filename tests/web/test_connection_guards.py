"""Slow clients and connection floods, over real sockets: headers that never finish, bodies that
stall, idle connections past the cap. Time-outs are set short for the tests; the sockets wait
for the server to act (with a generous limit), they do not stand in for time passing.

The guards sit below the ledger, so these run on SQLite only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rollout.ledger import Ledger, db
from rollout.web.server import BackgroundServer, free_port
from tests.web.support import CONNECT

WAIT_S = 10.0  # the longest any test waits for the server to act


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    db.upgrade(sqlite_url)
    opened = Ledger.open(sqlite_url)
    yield opened
    opened.dispose()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    else:
        pytest.fail(f"the server kept the connection open for {WAIT_S} s")
    return received


def one_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (it may arrive in several segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the server did not get there in time")
        time.sleep(0.02)


HALF_HEADERS = b"PUT /mdm/connect HTTP/1.1\r\nHost: mdm.example.com\r\nContent-Type: "


def test_half_sent_headers_are_answered_408_and_closed(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(header_timeout_s=0.3)
    with connect(server.port) as sock:
        sock.sendall(HALF_HEADERS)
        began = time.monotonic()
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - began >= 0.25
    assert server.app.connection_stats.header_timeouts == 1


def test_a_connection_that_never_sends_anything_is_closed(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(header_timeout_s=0.3)
    with connect(server.port) as sock:
        assert until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_trickled_header_bytes_do_not_extend_the_deadline(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(header_timeout_s=0.5)
    with connect(server.port) as sock:
        began = time.monotonic()
        try:
            for byte in HALF_HEADERS * 10:  # one byte every 50 ms: ~2 s of headers
                sock.send(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed it while the client was still trickling
        until_closed(sock)
    assert time.monotonic() - began < 2.0  # closed at the deadline, not after the last byte


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(header_timeout_s=0.3)
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert one_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(HALF_HEADERS)
        assert until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_is_answered_408_closed_and_recorded(
    started: Callable[..., BackgroundServer], ledger: Ledger
) -> None:
    server = started(body_timeout_s=0.3, header_timeout_s=30)
    with connect(server.port) as sock:
        sock.sendall(
            b"PUT /mdm/connect HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: {CONNECT}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b"<?xml version"  # ... and nothing more
        )
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    with ledger.checkin() as store:
        [event] = store.events(kind="mdm.refused")
    assert event.data["reason"] == "body_timeout" and event.data["status"] == 408


def test_a_slow_but_steady_body_within_the_time_out_is_served(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(body_timeout_s=5, header_timeout_s=5)
    body = b"not a plist, but whole"
    with connect(server.port) as sock:
        sock.sendall(
            b"PUT /mdm/connect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Type: {CONNECT}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for i in range(0, len(body), 4):
            sock.sendall(body[i : i + 4])
            time.sleep(0.02)
        assert until_closed(sock).startswith(b"HTTP/1.1 400 ")  # read whole, then refused


def test_a_thousand_idle_connections_past_the_cap_are_refused_then_timed_out(
    started: Callable[..., BackgroundServer],
) -> None:
    server = started(max_connections=300, header_timeout_s=5.0)
    stats = server.app.connection_stats
    flood = [connect(server.port) for _ in range(1000)]
    try:
        # (the header deadline is long enough for a busy machine to accept all 1,000 first)
        wait_for(lambda: stats.refused_over_cap + stats.open + stats.header_timeouts >= 1000)
        assert stats.refused_over_cap == 700 and stats.open == 300
        # the refused ones were told so and closed at once
        assert until_closed(flood[-1]).startswith(b"HTTP/1.1 503 ")
        # the held ones do not stay: the header deadline frees every slot ...
        wait_for(lambda: stats.open == 0)
        assert stats.header_timeouts == 300
        # ... and the endpoint serves again
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    finally:
        for sock in flood:
            sock.close()


def test_rollout_serve_has_the_same_guards(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ROLLOUT_HOME": str(tmp_path),
        "ROLLOUT_IDENTITY_MODE": "off",
        "ROLLOUT_HEADER_TIMEOUT_S": "2",
        "ROLLOUT_MAX_CONNECTIONS": "2",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollout", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"rollout serve did not start: {log.read_text()}")
                time.sleep(0.1)
        with probe, connect(port) as second, connect(port) as third:
            assert until_closed(third).startswith(b"HTTP/1.1 503 ")  # over the cap of 2
            second.sendall(HALF_HEADERS)
            assert until_closed(second).startswith(b"HTTP/1.1 408 ")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
