"""The lean HTTP/1.1 client (and the httpx transport) against real local socket servers."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest

from rollout.sim.device import TransportError
from rollout.sim.http11 import Http11Client, Http11Error, Http11Timeout, HttpxTransport
from rollout.sim.pki import issue_leaf, make_ca
from tests.sim.servers import MiniMDM, RawHTTPServer

HEADERS = {"Content-Type": "application/x-apple-aspen-mdm; charset=UTF-8"}


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url) as client:
            for i in range(20):
                status, body = await client.put("/echo", f"body {i}".encode(), HEADERS)
                assert (status, body) == (200, f"body {i}".encode())
            assert server.connections == 1
            assert client.stats.connections_opened == 1
            assert client.stats.reused == 19
            method, path, headers, _ = server.requests[0]
            assert (method, path) == ("PUT", "/echo")
            assert headers["content-length"] == "6"
            assert headers["content-type"] == HEADERS["Content-Type"]
            assert headers["host"] == f"127.0.0.1:{server.port}"

    asyncio.run(main())


def test_concurrent_requests_share_a_bounded_pool() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url, connections=4) as c:
            bodies = [f"request {i}".encode() * (i + 1) for i in range(60)]
            answers = await asyncio.gather(*(c.put("/echo", b, HEADERS) for b in bodies))
            assert [a[1] for a in answers] == bodies
            assert c.stats.connections_opened <= 4
            assert server.connections == c.stats.connections_opened
            assert c.idle_connections == c.stats.connections_opened

    asyncio.run(main())


def test_empty_200_and_a_400() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url) as client:
            assert await client.put("/empty", b"<plist/>", HEADERS) == (200, b"")
            assert await client.put("/bad", b"<plist/>", HEADERS) == (400, b"refused")
            assert await client.put("/empty", b"", HEADERS) == (200, b"")
            assert server.connections == 1
            assert server.requests[-1][2]["content-length"] == "0"

    asyncio.run(main())


def test_chunked_100_continue_and_read_to_close_bodies() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url) as client:
            response = await client.request("PUT", "/chunked", b"x")
            assert (response.status, response.body) == (200, b"hello, world")
            assert response.header("Transfer-Encoding") == "chunked"
            response = await client.request("PUT", "/continue", b"x")
            assert (response.status, response.reason, response.body) == (201, "Created", b"made")
            assert server.connections == 1  # both kept the connection open
            assert await client.put("/eof", b"x", {}) == (200, b"until the end")
            assert await client.put("/echo", b"again", {}) == (200, b"again")
            assert server.connections == 2

    asyncio.run(main())


def test_connection_close_opens_a_new_connection() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url) as client:
            assert await client.put("/close", b"x", {}) == (200, b"bye")
            assert client.idle_connections == 0
            assert await client.put("/echo", b"y", {}) == (200, b"y")
            assert server.connections == 2

    asyncio.run(main())


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, Http11Client(server.base_url) as client:
            await client.put("/arm-drop", b"a", {})  # the server drops the next request
            assert await client.put("/echo", b"b", {}) == (200, b"b")
            assert client.stats.resent == 1
            assert server.connections == 2

            # A fresh connection that closes without answering is an error, not a loop.
            with pytest.raises(Http11Error):
                await client.put("/hangup", b"c", {})

    asyncio.run(main())


def test_refused_connection_and_timeout_raise_transport_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]

    async def main() -> None:
        client = Http11Client(f"http://127.0.0.1:{free_port}")
        with pytest.raises(TransportError):
            await client.put("/echo", b"x", {})
        async with RawHTTPServer() as server:
            slow = Http11Client(server.base_url, timeout=0.2)
            started = time.perf_counter()
            with pytest.raises(Http11Timeout):
                await slow.put("/slow", b"x", {})
            assert time.perf_counter() - started < 1.5
            assert slow.idle_connections == 0
            assert await slow.put("/echo", b"ok", {}) == (200, b"ok")
            await slow.aclose()

    asyncio.run(main())


def test_tls_with_a_given_context(tmp_path: Path) -> None:
    ca = make_ca("Sim Test TLS CA", key_kind="ec")
    leaf = issue_leaf(ca, "localhost", key_kind="ec", server_auth=True, ip_addresses=("127.0.0.1",))
    (tmp_path / "server.pem").write_bytes(leaf.cert_pem() + leaf.key_pem())
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.pem")
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem().decode())

    async def main() -> None:
        async with RawHTTPServer(server_ctx) as server:
            async with Http11Client(server.base_url, ssl_context=client_ctx) as client:
                for i in range(3):
                    assert await client.put("/echo", b"secret %d" % i, {}) == (
                        200,
                        b"secret %d" % i,
                    )
                assert client.stats.connections_opened == 1
            async with Http11Client(server.base_url) as untrusting:  # system trust store
                with pytest.raises(Http11Error):
                    await untrusting.put("/echo", b"x", {})

    asyncio.run(main())


def test_header_injection_is_refused() -> None:
    client = Http11Client("http://127.0.0.1:9")
    with pytest.raises(ValueError):
        asyncio.run(client.put("/echo", b"", {"X-Bad": "a\r\nInjected: 1"}))
    with pytest.raises(ValueError):
        Http11Client("ftp://example.com")


def test_base_url_prefix_is_prepended() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server:
            async with Http11Client(server.base_url + "/prefix/") as client:
                await client.put("/mdm/connect", b"x", {})
            assert server.requests[-1][1] == "/prefix/mdm/connect"

    asyncio.run(main())


def test_httpx_transport_against_the_same_server() -> None:
    async def main() -> None:
        async with RawHTTPServer() as server, HttpxTransport(server.base_url) as transport:
            assert await transport.put("/empty", b"<plist/>", HEADERS) == (200, b"")
            assert await transport.put("/bad", b"<plist/>", HEADERS) == (400, b"refused")
            assert await transport.put("/chunked", b"x", {}) == (200, b"hello, world")
        with pytest.raises(TransportError):
            async with HttpxTransport(server.base_url, timeout=1.0) as gone:
                await gone.put("/echo", b"x", {})

    asyncio.run(main())


def test_lean_client_throughput_against_uvicorn(mdm_server: MiniMDM) -> None:
    """A printout, not an assertion: requests/s of each transport against the uvicorn app."""

    async def measure(transport: Http11Client | HttpxTransport, n: int) -> float:
        async def worker(k: int) -> None:
            for _ in range(k):
                status, _ = await transport.put("/mdm/connect", b"not a plist", HEADERS)
                assert status == 400

        started = time.perf_counter()
        await asyncio.gather(*(worker(n // 8) for _ in range(8)))
        return n / (time.perf_counter() - started)

    async def main() -> None:
        async with Http11Client(mdm_server.base_url, connections=8) as lean:
            lean_rate = await measure(lean, 800)
        async with HttpxTransport(mdm_server.base_url, max_connections=8) as slow:
            httpx_rate = await measure(slow, 800)
        print(f"\nagainst uvicorn: lean {lean_rate:.0f} req/s, httpx {httpx_rate:.0f} req/s")

    asyncio.run(main())
