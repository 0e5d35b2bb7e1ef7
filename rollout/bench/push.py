"""Push benchmark: the product's APNs client against aioapns, same server, same run.

The server is nginx when ``/usr/sbin/nginx`` exists (HTTP/2 + TLS + client-certificate check,
``return 200`` with the ``apns-id`` echoed), because the Python stand-in tops out near 3,500
requests/s here and would measure itself rather than the client. Without nginx the stand-in runs
in a child process and ``metrics.server`` says ``"stand-in"``.

``cpu_us_per_push`` is this process's CPU time (user + system) per push during the timed run;
the server runs in another process, so it is the client's cost alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollout.apns import AsyncPushClient, PushCertificate, PushConfig, PushRequest, load_pem
from rollout.sim.pki import Issued, issue_leaf, make_ca

NGINX = "/usr/sbin/nginx"
TOPIC = "com.apple.mgmt.External.b3c1e0c4-0000-4000-8000-00000000be7c"
ROUNDS = 3

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        ssl_client_certificate {dir}/client-ca.pem;
        ssl_verify_client on;
        http2_max_concurrent_streams 1000;
        location /3/device/ {{
            add_header apns-id $http_apns_id always;
            return 200;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Pki:
    ca: Issued
    client: Issued
    dir: Path

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def client_pem(self) -> str:
        return str(self.dir / "client.pem")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pki(workdir: Path) -> Pki:
    ca = make_ca("Rollout bench CA")
    client = issue_leaf(ca, "APSP:bench", client_auth=True, UID=TOPIC)
    server = issue_leaf(
        ca, "localhost", server_auth=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    )
    (workdir / "ca.pem").write_bytes(ca.cert_pem())
    (workdir / "client-ca.pem").write_bytes(ca.cert_pem())
    (workdir / "client.pem").write_bytes(client.cert_pem() + client.key_pem())
    (workdir / "server.crt").write_bytes(server.cert_pem())
    (workdir / "server.key").write_bytes(server.key_pem())
    return Pki(ca=ca, client=client, dir=workdir)


@contextlib.contextmanager
def _nginx(pki: Pki) -> Iterator[int]:
    port = free_port()
    conf = pki.dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=pki.dir, port=port, access_log="access_log off;"))
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(pki.dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _standin_main(ca_cert: bytes, ca_key: bytes, port: int, stop: Any) -> None:
    from rollout.sim.apns_server import ApnsStandIn

    key = serialization.load_pem_private_key(ca_key, None)
    ca = Issued(cert=x509.load_pem_x509_certificate(ca_cert), key=key)  # type: ignore[arg-type]
    with ApnsStandIn(port=port, server_ca=ca, client_ca=ca):
        stop.wait()


@contextlib.contextmanager
def _standin(pki: Pki) -> Iterator[int]:
    port = free_port()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(
        target=_standin_main,
        args=(pki.ca.cert_pem(), pki.ca.key_pem(), port, stop),
        daemon=True,
    )
    proc.start()
    try:
        wait_port(port, None)
        yield port
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def wait_port(port: int, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"nginx exited: {err.strip()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"bench server did not listen on port {port}")


def _tokens(n: int) -> list[str]:
    return [os.urandom(32).hex() for _ in range(n)]


async def _run_ours(cert: PushCertificate, cfg: PushConfig, tokens: list[str]) -> dict[str, Any]:
    client = AsyncPushClient(cert, cfg)
    try:
        await client.push_many([PushRequest(t, "warm-up") for t in tokens[:200]])
        best: dict[str, Any] = {}
        for _ in range(ROUNDS):
            items = [PushRequest(t, "bench-magic") for t in tokens]
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = await client.push_many(items)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            ok = sum(1 for r in results if r.ok)
            if ok != len(items):
                raise RuntimeError(f"product client: only {ok}/{len(items)} pushes succeeded")
            rate = len(items) / wall
            if not best or rate > best["pushes_per_s"]:
                best = {
                    "pushes_per_s": rate,
                    "cpu_us_per_push": cpu / len(items) * 1e6,
                    "connections": client.stats()["connections_opened"],
                }
        return best
    finally:
        await client.aclose()


async def _run_aioapns(pki: Pki, port: int, cfg: PushConfig, tokens: list[str]) -> float:
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    ctx = ssl.create_default_context(cafile=pki.ca_file)
    ctx.set_alpn_protocols(["h2"])  # aioapns sets none; nginx needs ALPN to speak HTTP/2
    apns = APNs(
        client_cert=pki.client_pem,
        topic=TOPIC,
        max_connections=cfg.max_connections,
        ssl_context=ctx,
    )
    # Point aioapns at the bench server: its host and port are class attributes of the protocol.
    apns.pool.protocol_class = type(
        "BenchProtocol",
        (APNsProductionClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": port},
    )

    def request(token: str) -> NotificationRequest:
        return NotificationRequest(
            device_token=token,
            message={"mdm": "bench-magic"},
            priority=10,
            time_to_live=86_400,
            push_type=PushType.MDM,
        )

    try:
        await asyncio.gather(*(apns.send_notification(request(t)) for t in tokens[:200]))
        best = 0.0
        for _ in range(ROUNDS):
            reqs = [request(t) for t in tokens]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(apns.send_notification(r) for r in reqs))
            wall = time.perf_counter() - t0
            ok = sum(1 for r in results if r.is_successful)
            if ok != len(reqs):
                raise RuntimeError(f"aioapns: only {ok}/{len(reqs)} pushes succeeded")
            best = max(best, len(reqs) / wall)
        return best
    finally:
        apns.pool.close()
        await asyncio.sleep(0.05)


def run_push_bench(size: int) -> dict[str, Any]:
    """Push ``size`` MDM notifications with the product's client and with aioapns.

    Returns ``{"bench": "push", "size": N, "metrics": {...}}`` with ``pushes_per_s``,
    ``cpu_us_per_push``, ``aioapns_pushes_per_s`` and ``server`` ("nginx" or "stand-in").
    Each figure is the best of ``ROUNDS`` timed runs after a warm-up on the same connections.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-push-"))
    try:
        pki = make_pki(workdir)
        use_nginx = Path(NGINX).exists()
        server_cm = _nginx(pki) if use_nginx else _standin(pki)
        with server_cm as port:
            cfg = PushConfig(
                base_url=f"https://127.0.0.1:{port}", ca_file=pki.ca_file, max_connections=4
            )
            cert = load_pem(pki.client_pem)
            tokens = _tokens(size)
            ours = asyncio.run(_run_ours(cert, cfg, tokens))
            theirs = asyncio.run(_run_aioapns(pki, port, cfg, tokens))
        return {
            "bench": "push",
            "size": size,
            "metrics": {
                "pushes_per_s": round(ours["pushes_per_s"], 1),
                "cpu_us_per_push": round(ours["cpu_us_per_push"], 1),
                "aioapns_pushes_per_s": round(theirs, 1),
                "server": "nginx" if use_nginx else "stand-in",
                "connections": ours["connections"],
                "rounds": ROUNDS,
            },
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
