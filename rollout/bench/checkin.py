"""Check-in benchmark: whole device cycles through the MDM endpoint on PostgreSQL.

One cycle is what a device does when a renewal is waiting for it: ``Idle`` → the server answers
with ``InstallProvisioningProfile`` (a real test-signed profile) → the device reports
``Acknowledged`` → the server persists it and answers with the empty body. Two HTTP requests,
both signed (``Mdm-Signature``), both verified by the server (identity mode ``strict`` with the
fleet's device CA).

Three processes, so no two share a GIL: this one (set-up and checks), the server (uvicorn, one
worker, the product's app) and the load generator (many concurrent devices on the lean HTTP/1.1
client of :mod:`rollout.sim.http11`). The generator signs every body before the clock starts
(signing would otherwise dominate its CPU); it checks every answer (the command carries the
device's CommandUUID, the result gets exactly 0 bytes) and, after timing, runs a sample of the
commands it received through a real :class:`~rollout.sim.device.SimDevice` to show that the
results it sent are exactly what a device would have sent.

``baseline_checkins_per_s`` is a bare Starlette handler, measured in the same run by the same
generator: parse a ~1 KB plist, append one row to the ledger's journal in its own transaction,
answer 200. It is reported as requests/s; a product cycle is two requests.

The bench makes its own database (``rollout_bench_<hex>`` on the local server, or the server of
``ROLLOUT_BENCH_POSTGRES_URL``) and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import pickle
import plistlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.bench.services import check_postgres, pg_admin_url, scratch_database
from rollout.ledger.db import backend_pids

TOPIC = "com.apple.mgmt.External.c0ffee00-0000-4000-8000-0000000be7c1"
CONCURRENCY = 256
"""Devices in flight at once (each on its own keep-alive connection)."""
WARMUP_DEVICES = 64
"""Extra enrolled devices with nothing queued: their Idle requests warm the server up."""
SAMPLE_DEVICES = 8
"""Commands checked after timing with a real SimDevice."""
CONNECT_PATH = "/mdm/connect"
BASELINE_PATH = "/checkin"


# --- helpers shared by the processes ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each of the PostgreSQL backends ``pids`` (when it can be read)."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            out[pid] = _proc_cpu_s(pid)
    return out


def _postgres_cpu_since(before: dict[int, float], pids: Sequence[int]) -> float:
    after = _postgres_cpu(pids)
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


# --- the servers (child processes) -----------------------------------------------------------


def _serve_product(cfg: dict[str, Any]) -> None:
    import uvicorn

    from rollout.config import Settings
    from rollout.web.app import create_app

    settings = Settings(
        home=Path(cfg["home"]),
        database_url=cfg["database_url"],
        device_ca=cfg["device_ca"],
        identity_mode="strict",
    )
    app = create_app(settings)
    uvicorn.Server(_uvicorn_config(app, cfg["port"])).run()


def _uvicorn_config(app: Any, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=4096,
        proxy_headers=False,  # nothing stands in front of the bench servers
    )


def _serve_baseline(cfg: dict[str, Any]) -> None:
    """A bare check-in handler: parse the plist, append one row, answer 200."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from rollout.clock import SYSTEM_CLOCK
    from rollout.ledger import Event, Ledger, db

    ledger = Ledger(db.make_engine(cfg["database_url"], pool_size=20, max_overflow=0))

    def write(msg: dict[str, Any]) -> None:
        with ledger.checkin() as store:
            store.record(
                [
                    Event(
                        "bench.baseline",
                        {"status": msg.get("Status")},
                        enrollment_id=msg.get("UDID"),
                        command_uuid=msg.get("CommandUUID"),
                    )
                ],
                SYSTEM_CLOCK.now(),
            )

    async def checkin(request: Request) -> Response:
        msg = plistlib.loads(await request.body())
        await run_in_threadpool(write, msg)
        return Response(b"", status_code=200)

    app = Starlette(routes=[Route(BASELINE_PATH, checkin, methods=["PUT"])])
    uvicorn.Server(_uvicorn_config(app, cfg["port"])).run()


# --- the load generator (child process) ------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    udid: str
    cert_der: bytes
    command_uuid: str | None  # None for a warm-up device (nothing queued)


def _generate(job: dict[str, Any]) -> dict[str, Any]:
    if job["mode"] == "product":
        return asyncio.run(_generate_product(job))
    return asyncio.run(_generate_baseline(job))


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

    devices: list[_Device] = job["devices"]
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

        next_index = 0
        perf = time.perf_counter

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(prepared):
                i = next_index
                next_index += 1
                idle, idle_headers, ack, ack_headers, marker = prepared[i]
                t0 = perf()
                status, reply = await client.put(CONNECT_PATH, idle, idle_headers)
                t1 = perf()
                if status != 200 or marker not in reply or kind not in reply:
                    failures.append(f"Idle of device {i}: {status} {reply[:80]!r}")
                    failed.add(i)
                    continue
                if i < SAMPLE_DEVICES:
                    samples[i] = reply
                status, reply = await client.put(CONNECT_PATH, ack, ack_headers)
                t2 = perf()
                if status != 200 or reply != b"":
                    failures.append(f"Acknowledged of device {i}: {status} {reply[:80]!r}")
                    failed.add(i)
                    continue
                latencies.append(t1 - t0)
                latencies.append(t2 - t1)

        stats0 = json.loads((await client.request("GET", "/healthz")).body)
        pg_pids = backend_pids(job["admin"], job["database"])
        server_cpu0, client_cpu0 = _proc_cpu_s(job["server_pid"]), time.process_time()
        pg_cpu0 = _postgres_cpu(pg_pids)
        t_start = perf()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = perf() - t_start
        server_cpu = _proc_cpu_s(job["server_pid"]) - server_cpu0
        pg_cpu = _postgres_cpu_since(pg_cpu0, pg_pids)
        client_cpu = time.process_time() - client_cpu0
        health = await client.request("GET", "/healthz")
        stats = json.loads(health.body)
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
    cycles = len(prepared) - len(failed)
    requests = len(latencies)
    return {
        "wall_s": wall,
        "cycles": cycles,
        "requests": requests,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "latencies_ms": _percentiles(latencies),
        "server_cpu_s": server_cpu,
        "postgres_cpu_s": pg_cpu,
        "client_cpu_s": client_cpu,
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
        next_index = 0
        perf = time.perf_counter

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                t0 = perf()
                status, _ = await client.put(BASELINE_PATH, bodies[i], headers)
                latencies.append(perf() - t0)
                if status != 200:
                    failures.append(f"request {i}: {status}")

        pg_pids = backend_pids(job["admin"], job["database"])
        server_cpu0 = _proc_cpu_s(job["server_pid"])
        pg_cpu0 = _postgres_cpu(pg_pids)
        t_start = perf()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = perf() - t_start
        server_cpu = _proc_cpu_s(job["server_pid"]) - server_cpu0
        pg_cpu = _postgres_cpu_since(pg_cpu0, pg_pids)
    finally:
        await client.aclose()
    return {
        "wall_s": wall,
        "requests": len(bodies) - len(failures),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "latencies_ms": _percentiles(latencies),
        "server_cpu_s": server_cpu,
        "postgres_cpu_s": pg_cpu,
    }


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


# --- orchestration (this process) ------------------------------------------------------------


@contextlib.contextmanager
def _child(role: str, cfg: dict[str, Any], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m rollout.bench.checkin <role> <cfg.json>``; stop it on the way out."""
    cfg_path = workdir / f"{role}.json"
    cfg_path.write_text(json.dumps(cfg))
    log = open(workdir / f"{role}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout.bench.checkin", role, str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(cfg["port"], proc, workdir / f"{role}.log")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bench server exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"bench server did not listen on port {port}")


def _run_generator(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    job_path = workdir / f"job-{job['mode']}.pickle"
    out_path = workdir / f"result-{job['mode']}.json"
    job_path.write_bytes(pickle.dumps(job))
    proc = subprocess.run(
        [sys.executable, "-m", "rollout.bench.checkin", "generate", str(job_path), str(out_path)],
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


@dataclass
class _Setup:
    rollout_id: int
    devices: list[_Device]
    key_pem: bytes
    anchors: list[bytes]


def _setup_ledger(url: str, size: int, workdir: Path) -> _Setup:
    """Enroll ``size`` devices (+ warm-up ones) and queue one install per device."""
    from cryptography.hazmat.primitives import hashes, serialization

    from rollout.ledger import Ledger, RunningRollout, SeedDevice
    from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
    from rollout.operations import create_rollout
    from rollout.planning import TargetSpec
    from rollout.profiles import parse_profile
    from rollout.sim.fleet import FleetIdentities
    from rollout.sim.identity import make_device_ca
    from rollout.sim.profiles import make_apple_like_chain, make_profile

    ca = make_device_ca("Rollout Bench Device CA")
    (workdir / "device-ca.pem").write_bytes(ca.cert_pem())
    identities = FleetIdentities(ca)
    now = dt.datetime.now(dt.UTC)
    udids = [f"00008030-00{n:014X}" for n in range(1, size + WARMUP_DEVICES + 1)]
    certs: dict[str, bytes] = {}
    seeds: list[SeedDevice] = []
    for n, udid in enumerate(udids):
        issued = identities.issue(udid)
        certs[udid] = issued.cert_der()
        sha = issued.cert.fingerprint(hashes.SHA256()).hex()
        seeds.append(SeedDevice(udid, TOPIC, f"{n:064x}", f"magic-{n}", sha, "iOS", "17.5.1"))
    chain = make_apple_like_chain(not_before=now - dt.timedelta(days=30))
    data = make_profile(chain, name="Bench Field App In-House")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    ledger = Ledger.open(url)
    try:
        with ledger.bulk() as bulk:
            bulk.devices(seeds, now)
        with ledger.library() as library:
            library.add(profile, data, now)
        summary = create_rollout(
            ledger,
            profile_uuid=profile.uuid,
            spec=TargetSpec(keys=tuple(udids[:size])),
            actor="bench",
            now=now,
            name="bench renewal",
            start=True,
        )
        rollout_id = summary.rollout.id
        with ledger.fanout() as fanout:
            while fanout.claim_planned(
                RunningRollout(rollout_id, 0),
                5000,
                request_type=INSTALL_PROVISIONING_PROFILE,
                next_push_at=now + dt.timedelta(days=1),
                now=now,
            ):
                pass
        with ledger.registry() as registry:
            ids = registry.device_ids(udids[:size])
        with ledger.rollouts() as rollouts:
            by_device = rollouts.command_uuids(rollout_id)
    finally:
        ledger.dispose()
    devices = [_Device(u, certs[u], by_device[ids[u]] if u in ids else None) for u in udids]
    key = identities.key
    assert key is not None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    anchors = [c.public_bytes(serialization.Encoding.DER) for c in chain.anchors]
    return _Setup(rollout_id, devices, key_pem, anchors)


def _check_ledger(url: str, rollout_id: int, size: int) -> dict[str, Any]:
    """Every target acknowledged, every command acknowledged, kept counters = the rows."""
    from rollout.ledger import Ledger

    ledger = Ledger.open(url)
    try:
        with ledger.rollouts() as store:
            by_state = store.recount(rollout_id)
            commands = store.command_counts(rollout_id)
            kept = store.state_counts(rollout_id)
    finally:
        ledger.dispose()
    acknowledged = int(by_state.get("acknowledged", 0))
    return {
        "acknowledged": acknowledged,
        "all_acknowledged": acknowledged == size and commands == {"acknowledged": size},
        "counters_exact": kept == by_state,
        "target_states": by_state,
    }


def _baseline_bodies(devices: Sequence[_Device], count: int) -> list[bytes]:
    """~1 KB check-in-like plists (a report with a few command-specific keys)."""
    out = []
    for i in range(count):
        d = devices[i % len(devices)]
        msg = {
            "UDID": d.udid,
            "Status": "Acknowledged",
            "CommandUUID": d.command_uuid or f"WARM-{i}",
            "RequestType": "InstallProvisioningProfile",
            "ProvisioningProfileList": [
                {
                    "UUID": f"{i:08X}-0000-4000-8000-{n:012X}",
                    "Name": f"Field App In-House {n}",
                    "ExpiryDate": dt.datetime(2027, 1, 1, 12, 0, 0),
                }
                for n in range(3)
            ],
        }
        out.append(plistlib.dumps(msg))
    return out


def run_checkin_bench(size: int, *, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """Run ``size`` device cycles against the product and ``2 x size`` baseline requests.

    Returns ``{"bench": "checkin", "size": N, "metrics": {...}}``. Raises ``RuntimeError``
    when PostgreSQL is unreachable or when the ledger does not end with every target
    acknowledged and the kept counters exact.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    from sqlalchemy.engine import make_url

    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-checkin-"))
    try:
        with scratch_database(check_postgres(pg_admin_url()), "rollout_bench_checkin") as url:
            setup = _setup_ledger(url, size, workdir)
            concurrency = max(1, min(concurrency, size))
            port = _free_port()
            cfg = {
                "port": port,
                "home": str(workdir),
                "database_url": url,
                "device_ca": str(workdir / "device-ca.pem"),
            }
            with _child("serve-product", cfg, workdir) as server:
                ours = _run_generator(
                    {
                        "mode": "product",
                        "admin": pg_admin_url(),
                        "database": make_url(url).database,
                        "base_url": f"http://127.0.0.1:{port}",
                        "server_pid": server.pid,
                        "concurrency": concurrency,
                        "devices": setup.devices,
                        "key_pem": setup.key_pem,
                        "anchors": setup.anchors,
                    },
                    workdir,
                )
            ledger = _check_ledger(url, setup.rollout_id, size)
            port = _free_port()
            with _child("serve-baseline", {"port": port, "database_url": url}, workdir) as base:
                theirs = _run_generator(
                    {
                        "mode": "baseline",
                        "admin": pg_admin_url(),
                        "database": make_url(url).database,
                        "base_url": f"http://127.0.0.1:{port}",
                        "server_pid": base.pid,
                        "concurrency": concurrency,
                        "bodies": _baseline_bodies(setup.devices, 2 * size),
                    },
                    workdir,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    cycles_per_s = ours["cycles"] / ours["wall_s"]
    requests = ours["requests"]
    metrics: dict[str, Any] = {
        "checkins_per_s": round(cycles_per_s, 1),
        "baseline_checkins_per_s": round(theirs["requests"] / theirs["wall_s"], 1),
        "requests_per_s": round(requests / ours["wall_s"], 1),
        "server_cpu_us_per_request": round(ours["server_cpu_s"] / max(1, requests) * 1e6, 1),
        "postgres_cpu_us_per_request": round(ours["postgres_cpu_s"] / max(1, requests) * 1e6, 1),
        "writer_cpu_us_per_report": round(ours["writer_cpu_s"] / max(1, requests) * 1e6, 1),
        "writer_busy": round(ours["writer_wall_s"] / ours["wall_s"], 2),
        "client_cpu_us_per_request": round(ours["client_cpu_s"] / max(1, requests) * 1e6, 1),
        "baseline_server_cpu_us_per_request": round(
            theirs["server_cpu_s"] / max(1, theirs["requests"]) * 1e6, 1
        ),
        "p50_ms": ours["latencies_ms"]["p50"],
        "p99_ms": ours["latencies_ms"]["p99"],
        "baseline_postgres_cpu_us_per_request": round(
            theirs["postgres_cpu_s"] / max(1, theirs["requests"]) * 1e6, 1
        ),
        "baseline_p50_ms": theirs["latencies_ms"]["p50"],
        "baseline_p99_ms": theirs["latencies_ms"]["p99"],
        "batches": ours["server_batches"],
        "mean_batch": round((ours["server_reports"] or 0) / max(1, ours["server_batches"] or 0), 1),
        "concurrency": concurrency,
        "cycles": ours["cycles"],
        "failures": ours["failures"] + theirs["failures"],
        "sampled_devices_ok": f"{ours['sample_ok']}/{ours['sampled']}",
        "acknowledged": ledger["acknowledged"],
        "all_acknowledged": ledger["all_acknowledged"],
        "counters_exact": ledger["counters_exact"],
        "cores": os.cpu_count(),
        # uvicorn picks these up when they are importable (http="auto", loop="auto").
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }
    result = {"bench": "checkin", "size": size, "metrics": metrics}
    problems = []
    if ours["failures"]:
        problems.append(f"{ours['failures']} device cycles failed ({ours['first_failure']})")
    if theirs["failures"]:
        problems.append(f"{theirs['failures']} baseline requests failed")
    if not ledger["all_acknowledged"]:
        problems.append(f"not every target is acknowledged: {ledger['target_states']}")
    if not ledger["counters_exact"]:
        problems.append("the kept counters differ from the targets")
    if problems:
        raise RuntimeError("; ".join(problems) + f" -- {json.dumps(result)}")
    return result


def _main(argv: list[str]) -> int:
    role = argv[0]
    if role == "serve-product":
        _serve_product(json.loads(Path(argv[1]).read_text()))
    elif role == "serve-baseline":
        _serve_baseline(json.loads(Path(argv[1]).read_text()))
    elif role == "generate":
        job = pickle.loads(Path(argv[1]).read_bytes())
        Path(argv[2]).write_text(json.dumps(_generate(job)))
    else:
        print(f"unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
