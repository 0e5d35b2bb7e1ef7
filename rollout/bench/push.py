"""Push benchmark: the product's APNs client against aioapns, same server, same run.

The server is nginx when ``/usr/sbin/nginx`` exists, because the Python stand-in would measure
itself rather than the client (:mod:`rollout.bench.apns_servers`). Without nginx the stand-in
runs in a child process, ``metrics.server`` says ``"stand-in"`` and ``note`` is told so.

``cpu_us_per_push`` is this process's CPU time (user + system) per push during the timed run;
the server runs in another process, so it is the client's cost alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout.apns import AsyncPushClient, PushCertificate, PushConfig, PushRequest, load_pem
from rollout.bench.apns_servers import (
    NGINX,
    TOPIC,
    Pki,
    make_pki,
    nginx,
    standin_note,
    standin_process,
)

ROUNDS = 3


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


def run_push_bench(size: int, *, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Push ``size`` MDM notifications with the product's client and with aioapns.

    Returns ``{"bench": "push", "size": N, "metrics": {...}}`` with ``pushes_per_s``,
    ``cpu_us_per_push``, ``aioapns_pushes_per_s`` and ``server`` ("nginx" or "stand-in").
    Each figure is the best of ``ROUNDS`` timed runs after a warm-up on the same connections.
    ``note`` is given one line when the figures are the stand-in's rather than the client's.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-push-"))
    try:
        pki = make_pki(workdir)
        use_nginx = Path(NGINX).exists()
        if not use_nginx and note is not None:
            note(standin_note("push", NGINX))
        server_cm = nginx(pki) if use_nginx else standin_process(pki)
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
