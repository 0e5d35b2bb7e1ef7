"""The check-in bench's load generator, run in a child process of its own so that it does not
share a GIL with the server it measures.

Many concurrent devices on the lean HTTP/1.1 client of :mod:`rollout.sim.http11`. Every body is
signed before the clock starts (signing would otherwise dominate the generator's CPU); every
answer is checked (the command carries the device's CommandUUID, the result gets exactly 0
bytes); after timing, a sample of the commands received is run through a real
:class:`~rollout.sim.device.SimDevice` to show that the results sent are exactly what a device
would have sent.
"""

from __future__ import annotations

import asyncio
import json
import plistlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rollout.bench.checkin.fleet import TOPIC, BenchDevice
from rollout.bench.checkin.servers import BASELINE_PATH, CONNECT_PATH
from rollout.bench.measure import cpu_s, cpu_s_by_pid, cpu_s_since, percentile
from rollout.ledger.db import backend_pids

SAMPLE_DEVICES = 8
"""Commands checked after timing with a real SimDevice."""


def generate(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` (``mode`` "product" or "baseline") and return what it measured."""
    if job["mode"] == "product":
        return asyncio.run(_generate_product(job))
    return asyncio.run(_generate_baseline(job))


@dataclass(frozen=True)
class _Timed:
    wall_s: float
    server_cpu_s: float
    postgres_cpu_s: float
    client_cpu_s: float


async def _timed(job: dict[str, Any], run: Callable[[], Awaitable[None]]) -> _Timed:
    """Wall time of ``run`` and the CPU the server, its PostgreSQL backends and this process
    used meanwhile."""
    pg_pids = backend_pids(job["admin"], job["database"])
    server_cpu0, client_cpu0 = cpu_s(job["server_pid"]), time.process_time()
    pg_cpu0 = cpu_s_by_pid(pg_pids)
    t_start = time.perf_counter()
    await run()
    wall = time.perf_counter() - t_start
    server_cpu = cpu_s(job["server_pid"]) - server_cpu0
    pg_cpu = cpu_s_since(pg_cpu0, pg_pids)
    return _Timed(wall, server_cpu, pg_cpu, time.process_time() - client_cpu0)


async def _each(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """``one(i)`` for every i below ``count``, ``concurrency`` at a time, in order of start."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _measured(timed: _Timed, failures: list[str], latencies: list[float]) -> dict[str, Any]:
    """What both runs report: times, CPU, failures and latency percentiles."""
    return {
        "wall_s": timed.wall_s,
        "server_cpu_s": timed.server_cpu_s,
        "postgres_cpu_s": timed.postgres_cpu_s,
        "client_cpu_s": timed.client_cpu_s,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "latencies_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
        },
    }


def _sim_devices(job: dict[str, Any]) -> list[Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from rollout.sim.device import SimDevice
    from rollout.sim.pki import Issued

    key = serialization.load_pem_private_key(job["key_pem"], None)
    anchors = tuple(x509.load_der_x509_certificate(a) for a in job["anchors"])
    out = []
    for d in job["devices"]:
        identity = Issued(cert=x509.load_der_x509_certificate(d.cert_der), key=key)  # type: ignore[arg-type]
        out.append(SimDevice(d.udid, identity, topic=TOPIC, trust_anchors=anchors))
    return out


async def _generate_product(job: dict[str, Any]) -> dict[str, Any]:
    from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
    from rollout.sim.device import CONNECT_CONTENT_TYPE
    from rollout.sim.http11 import Http11Client

    devices: list[BenchDevice] = job["devices"]
    sims = _sim_devices(job)
    # Everything a device sends, signed before the clock starts.
    prepared: list[tuple[bytes, dict[str, str], bytes, dict[str, str], bytes]] = []
    warm: list[tuple[bytes, dict[str, str]]] = []
    for d, sim in zip(devices, sims, strict=True):
        idle = sim.idle_body()
        idle_headers = sim.headers(idle, CONNECT_CONTENT_TYPE)
        if d.command_uuid is None:
            warm.append((idle, idle_headers))
            continue
        ack = plistlib.dumps(
            {"UDID": d.udid, "Status": "Acknowledged", "CommandUUID": d.command_uuid}
        )
        marker = f"<string>{d.command_uuid}</string>".encode()
        prepared.append((idle, idle_headers, ack, sim.headers(ack, CONNECT_CONTENT_TYPE), marker))
    cycle_sims = [s for d, s in zip(devices, sims, strict=True) if d.command_uuid is not None]

    concurrency = job["concurrency"]
    client = Http11Client(job["base_url"], connections=concurrency, timeout=60)
    kind = INSTALL_PROVISIONING_PROFILE.encode()
    failures: list[str] = []
    failed: set[int] = set()
    latencies: list[float] = []
    samples: dict[int, bytes] = {}
    try:
        # Warm-up: connections open, code paths hot; these devices have nothing queued.
        async def warm_one(i: int) -> None:
            body, headers = warm[i % len(warm)]
            status, reply = await client.put(CONNECT_PATH, body, headers)
            if status != 200 or reply:
                failures.append(f"warm-up: {status} {reply[:80]!r}")

        for _ in range(3):
            await asyncio.gather(*(warm_one(i) for i in range(concurrency)))
        if failures:
            raise RuntimeError(f"warm-up failed: {failures[0]}")

        perf = time.perf_counter

        async def cycle(i: int) -> None:
            idle, idle_headers, ack, ack_headers, marker = prepared[i]
            t0 = perf()
            status, reply = await client.put(CONNECT_PATH, idle, idle_headers)
            t1 = perf()
            if status != 200 or marker not in reply or kind not in reply:
                failures.append(f"Idle of device {i}: {status} {reply[:80]!r}")
                failed.add(i)
                return
            if i < SAMPLE_DEVICES:
                samples[i] = reply
            status, reply = await client.put(CONNECT_PATH, ack, ack_headers)
            t2 = perf()
            if status != 200 or reply != b"":
                failures.append(f"Acknowledged of device {i}: {status} {reply[:80]!r}")
                failed.add(i)
                return
            latencies.append(t1 - t0)
            latencies.append(t2 - t1)

        stats0 = json.loads((await client.request("GET", "/healthz")).body)
        timed = await _timed(job, lambda: _each(len(prepared), concurrency, cycle))
        stats = json.loads((await client.request("GET", "/healthz")).body)
    finally:
        await client.aclose()

    # A real device, given the commands it was served, answers with exactly what was sent.
    sample_ok = 0
    for i, reply in samples.items():
        outcome = cycle_sims[i].execute(reply)
        if outcome.request_type == INSTALL_PROVISIONING_PROFILE and outcome.body == prepared[i][2]:
            sample_ok += 1
        else:
            failures.append(f"device {i}: a SimDevice answers {outcome.status} to its command")
            failed.add(i)
    return {
        **_measured(timed, failures, latencies),
        "cycles": len(prepared) - len(failed),
        "requests": len(latencies),
        "sampled": len(samples),
        "sample_ok": sample_ok,
        "server_batches": stats.get("batches"),
        "writer_cpu_s": stats.get("write_cpu_s", 0.0) - stats0.get("write_cpu_s", 0.0),
        "writer_wall_s": stats.get("write_wall_s", 0.0) - stats0.get("write_wall_s", 0.0),
        "server_reports": stats.get("reports"),
    }


async def _generate_baseline(job: dict[str, Any]) -> dict[str, Any]:
    from rollout.sim.http11 import Http11Client

    bodies: list[bytes] = job["bodies"]
    headers = {"Content-Type": "application/x-apple-aspen-mdm; charset=UTF-8"}
    concurrency = job["concurrency"]
    client = Http11Client(job["base_url"], connections=concurrency, timeout=60)
    failures: list[str] = []
    latencies: list[float] = []
    try:
        await asyncio.gather(
            *(client.put(BASELINE_PATH, bodies[i % len(bodies)], headers) for i in range(200))
        )
        perf = time.perf_counter

        async def request(i: int) -> None:
            t0 = perf()
            status, _ = await client.put(BASELINE_PATH, bodies[i], headers)
            latencies.append(perf() - t0)
            if status != 200:
                failures.append(f"request {i}: {status}")

        timed = await _timed(job, lambda: _each(len(bodies), concurrency, request))
    finally:
        await client.aclose()
    return {**_measured(timed, failures, latencies), "requests": len(bodies) - len(failures)}
