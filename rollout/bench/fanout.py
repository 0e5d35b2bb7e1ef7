"""Fan-out benchmark: one rollout of N devices on PostgreSQL, Redis and two Celery workers.

Set-up (not timed): a database of its own on the local PostgreSQL (dropped afterwards), a Redis
database number of its own (flushed before and after), N devices with push tokens imported and a
started rollout created through the ledger API, an APNs endpoint, and two real ``celery worker``
processes (prefork) on the ``control`` and ``fanout`` queues.

Timed: from sending ``rollout.tick`` by name until every target is pushed or beyond
(``seconds_to_pushed``: its command queued and its push accepted), and until every target is
acknowledged in the ledger (``seconds_to_acknowledged``). Ticks are sent again, beat-like, while
planned targets remain and no tick is waiting in the control queue.

The APNs endpoint is nginx when ``/usr/sbin/nginx`` exists (HTTP/2 + TLS + client certificate,
``return 200``; it writes each pushed URI to a log the responder tails), because the Python
stand-in tops out near 3,500 pushes/s here and would measure itself; otherwise the stand-in runs
in this process and its ``on_push`` hook feeds the responder (``metrics.apns_server``).

Devices answer instantly: for each pushed token the responder reports ``Idle`` (which serves the
queued command and marks it delivered) and then ``Acknowledged`` for that command, in batches,
through :func:`rollout.ledger.queue.process_reports` (``metrics.ack_path == "ledger"``). The real
MDM endpoint costs about 1,200-1,800 requests/s per process here (two requests per device), so
it cannot keep up with a fan-out of tens of thousands of devices per second on two cores.

``peak_rss_mb`` is the highest VmHWM (peak resident set) of any worker process or its pool
children, read from ``/proc/<pid>/status`` after the run; ``rss_mb`` lists them all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from rollout.bench.push import NGINX, NGINX_CONF, TOPIC, Pki, free_port, make_pki, wait_port
from rollout.bench.services import check_postgres, check_redis, pg_admin_url, scratch_database
from rollout.clock import SYSTEM_CLOCK
from rollout.enrollment import IdentityPolicy
from rollout.inventory import DeviceRecord
from rollout.ledger import Ledger
from rollout.operations import create_rollout
from rollout.planning import TargetSpec
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports
from rollout.states import TargetState

REDIS_URL = os.environ.get("ROLLOUT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
WORKERS = 2
TICK_EVERY_S = 2.0  # like beat's controller tick, while planned targets remain
RESPONDER_NICE = int(os.environ.get("ROLLOUT_BENCH_RESPONDER_NICE", "10"))
TRACE = os.environ.get("ROLLOUT_BENCH_TRACE") == "1"
CONCURRENCY = int(os.environ.get("ROLLOUT_BENCH_CONCURRENCY", "1"))
RESPONDER_BATCH = 2000
CONTROL_QUEUE = (
    "control"  # the queue workers.app routes rollout.tick to (rollout never imports workers)
)
IMPORT_CHUNK = 20_000

_NOT_YET_PUSHED = (TargetState.PLANNED.value, TargetState.QUEUED.value)

_PUSH_LOG = (
    "log_format pushed '$uri';\n    access_log {dir}/pushed.log pushed buffer=256k flush=50ms;"
)


def udid(n: int) -> str:
    """The bench device number ``n``'s UDID (also its enrollment id)."""
    return f"00008030-{n:016X}"


def token(n: int) -> str:
    """The bench device number ``n``'s push token: the number itself, so no map is kept."""
    return f"{n:064x}"


# ---- services ------------------------------------------------------------------------------


@contextlib.contextmanager
def _flushed_redis(url: str) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


# ---- the APNs endpoint and the pushed-token feed -------------------------------------------


@dataclass
class _Endpoint:
    base_url: str
    ca_file: str
    cert_file: str
    kind: str
    pushed_log: Path | None = None  # nginx: the log of pushed URIs a responder may tail


class _LogTail:
    """Tokens nginx logged (one ``/3/device/<token>`` line per accepted push)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._rest = b""

    def read(self) -> list[str]:
        if self._fh is None:
            if not self.path.exists():
                return []
            self._fh = self.path.open("rb")
        data = self._rest + self._fh.read()
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return [ln.rsplit(b"/", 1)[-1].decode() for ln in lines if ln]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


@contextlib.contextmanager
def _nginx_endpoint(pki: Pki) -> Iterator[tuple[_Endpoint, Callable[[], list[str]]]]:
    port = free_port()
    conf = pki.dir / "nginx.conf"
    log = _PUSH_LOG.format(dir=pki.dir)
    conf.write_text(NGINX_CONF.format(dir=pki.dir, port=port, access_log=log))
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(pki.dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tail = _LogTail(pki.dir / "pushed.log")
    try:
        wait_port(port, proc)
        yield (
            _Endpoint(f"https://127.0.0.1:{port}", pki.ca_file, pki.client_pem, "nginx", tail.path),
            tail.read,
        )
    finally:
        tail.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _standin_endpoint(workdir: Path) -> Iterator[tuple[_Endpoint, Callable[[], list[str]]]]:
    from rollout.sim.apns_server import ApnsStandIn

    pushed: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_push(token_hex: str, _payload: Any) -> None:
        pushed.put(token_hex)

    def drain() -> list[str]:
        out: list[str] = []
        with contextlib.suppress(queue.Empty):
            while len(out) < 100_000:
                out.append(pushed.get_nowait())
        return out

    with ApnsStandIn(topic=TOPIC, on_push=on_push) as server:
        issued = server.issue_push_certificate(TOPIC)
        cert = workdir / "push.pem"
        cert.write_bytes(issued.cert_pem() + issued.key_pem())
        yield _Endpoint(server.base_url, server.ca_file, str(cert), "stand-in"), drain


def _endpoint(workdir: Path) -> Any:
    if Path(NGINX).exists():
        return _nginx_endpoint(make_pki(workdir))
    return _standin_endpoint(workdir)


# ---- the fleet in the ledger ---------------------------------------------------------------


def seed_rollout(ledger: Ledger, size: int) -> int:
    """Import ``size`` pushable devices and start a rollout to all of them; its id."""
    from rollout.profiles import parse_profile
    from rollout.sim.profiles import make_apple_like_chain, make_profile

    chain = make_apple_like_chain(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    data = make_profile(chain, name="Fan-out bench")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    for start in range(0, size, IMPORT_CHUNK):
        records = [
            DeviceRecord(
                line=i + 1,
                enrollment_id=udid(i),
                udid=udid(i),
                enrollment_type="device",
                platform="iOS",
                topic=TOPIC,
                push_token=token(i),
                push_magic=f"magic-{i}",
            )
            for i in range(start, min(size, start + IMPORT_CHUNK))
        ]
        with ledger.registry() as store:
            store.import_devices(records, SYSTEM_CLOCK.now())
    with ledger.library() as library:
        library.add(profile, data, SYSTEM_CLOCK.now())
    summary = create_rollout(
        ledger,
        profile_uuid=profile.uuid,
        spec=TargetSpec(everything=True),
        actor="bench",
        now=SYSTEM_CLOCK.now(),
        name="fan-out bench",
        start=True,
    )
    return summary.rollout.id


# ---- devices that answer instantly ---------------------------------------------------------


@dataclass
class Responder:
    """Acknowledges every pushed token through the ledger, in batches, on a thread."""

    ledger: Ledger
    feed: Callable[[], list[str]]
    batch: int = RESPONDER_BATCH
    acknowledged: int = 0
    reports: int = 0
    error: BaseException | None = None
    on_ack: Callable[[int], None] | None = None
    _stop: Any = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Responder:
        self._thread = threading.Thread(target=self._run, name="bench-responder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        pending: list[str] = []
        policy = IdentityPolicy(required=False)
        try:
            while not self._stop.is_set():
                pending.extend(self.feed())
                if not pending:
                    time.sleep(0.02)
                    continue
                chunk, pending = pending[: self.batch], pending[self.batch :]
                self._answer(chunk, policy)
        except BaseException as exc:  # reported by the bench, not lost in a thread
            self.error = exc

    def _answer(self, tokens: list[str], policy: IdentityPolicy) -> None:
        keys = [udid(int(t, 16)) for t in tokens]
        engine_policy = EnginePolicy()
        with self.ledger.checkin() as store:
            served = process_reports(
                store,
                [Report(k, "Idle") for k in keys],
                identity=policy,
                policy=engine_policy,
                now=SYSTEM_CLOCK.now(),
            )
        acks = [
            Report(k, "Acknowledged", command_uuid=o.served.command_uuid)
            for k, o in zip(keys, served, strict=True)
            if o.served is not None
        ]
        if acks:
            with self.ledger.checkin() as store:
                process_reports(
                    store, acks, identity=policy, policy=engine_policy, now=SYSTEM_CLOCK.now()
                )
        self.reports += len(keys) + len(acks)
        self.acknowledged += len(acks)
        if self.on_ack is not None:
            self.on_ack(self.acknowledged)


def _responder_child(url: str, log_path: str, acked: Any, stop: Any, nice: int) -> None:
    os.nice(nice)
    ledger = Ledger.open(url)
    tail = _LogTail(Path(log_path))

    def publish(n: int) -> None:
        acked.value = n

    responder = Responder(ledger, tail.read, on_ack=publish, _stop=stop)
    try:
        responder._run()
    finally:
        tail.close()
        ledger.dispose()
    if responder.error is not None:
        raise responder.error


class ChildResponder:
    """The same responder in a child process at a lower CPU priority (``nice``).

    The devices' answers are the bench's surroundings, not the fan-out it measures: on two
    cores a responder at normal priority takes CPU from the workers while they push. Niced, it
    answers with the CPU the fan-out leaves, and catches up once the pushes are done.
    """

    def __init__(self, url: str, log_path: Path, nice: int) -> None:
        ctx = mp.get_context("spawn")
        self._acked = ctx.Value("q", 0, lock=False)
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_responder_child,
            args=(url, str(log_path), self._acked, self._stop, nice),
            name="bench-responder",
            daemon=True,
        )

    def start(self) -> ChildResponder:
        self._proc.start()
        return self

    @property
    def acknowledged(self) -> int:
        return int(self._acked.value)

    @property
    def error(self) -> BaseException | None:
        code = self._proc.exitcode
        if code is None:  # still running
            return None
        return RuntimeError(f"the responder process exited early with {code}")

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# ---- worker processes ----------------------------------------------------------------------


def _worker_env(database_url: str, broker_url: str, ep: _Endpoint, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        {
            "ROLLOUT_HOME": str(home),
            "ROLLOUT_DATABASE_URL": database_url,
            "ROLLOUT_BROKER_URL": broker_url,
            "ROLLOUT_APNS_CERT": ep.cert_file,
            "ROLLOUT_APNS_URL": ep.base_url,
            "ROLLOUT_APNS_CA": ep.ca_file,
            # Nothing is re-pushed or timed out while the bench runs: it measures the first wave.
            "ROLLOUT_DISPATCH_GRACE_S": "3600",
            "ROLLOUT_RESPONSE_TIMEOUT_S": "3600",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key in ("ROLLOUT_BATCH_SIZE",):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _start_workers(
    env: dict[str, str], home: Path, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(WORKERS):
        log = open(home / f"worker{i + 1}.log", "ab")  # noqa: SIM115 - lives with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.app",
                    "worker",
                    "-n",
                    f"bench{i + 1}@%h",
                    "-Q",
                    "control,fanout",
                    "-c",
                    str(concurrency),
                    "-P",
                    "prefork",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "-l",
                    "WARNING",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds(pids: list[int], database: str) -> tuple[float, float]:
    """CPU seconds used so far by ``pids`` and their live descendants, and by the PostgreSQL
    backends connected to ``database`` (less noisy than wall time on a shared machine)."""
    tree = _children()
    workers = 0.0
    todo = list(pids)
    while todo:
        pid = todo.pop()
        workers += _cpu_s(pid)
        todo.extend(tree.get(pid, []))
    backends = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"postgres: ") and f" {database} ".encode() in cmd:
                backends += _cpu_s(int(entry))
    return workers, backends


def worker_peak_rss(pids: list[int]) -> dict[int, float]:
    """VmHWM in MB of every process in ``pids`` and of all their descendants."""
    tree = _children()
    out: dict[int, float] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        hwm = _vm_hwm_mb(pid)
        if hwm is not None:
            out[pid] = hwm
        todo.extend(tree.get(pid, []))
    return out


def _wait_ready(app: Any, procs: list[subprocess.Popen[bytes]], home: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a Celery worker exited with {proc.returncode}; see {home}")
        replies = app.control.ping(timeout=0.5)
        if len(replies) >= len(procs):
            return
    raise RuntimeError(f"Celery workers did not answer a ping within 60 s; see {home}")


# ---- the run -------------------------------------------------------------------------------


def _progress(ledger: Ledger, rollout_id: int) -> tuple[int, int, int]:
    """(planned, not yet pushed, acknowledged) from the kept counters."""
    with ledger.rollouts() as store:
        states = store.state_counts(rollout_id)
    planned = states.get(TargetState.PLANNED.value, 0)
    waiting = sum(states.get(s, 0) for s in _NOT_YET_PUSHED)
    return planned, waiting, states.get(TargetState.ACKNOWLEDGED.value, 0)


def _states(ledger: Ledger, rollout_id: int) -> dict[str, int]:
    """Targets by state over every stage, from the kept counters."""
    with ledger.rollouts() as store:
        return store.state_counts(rollout_id)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM raises SystemExit here, so the workers, nginx and the database are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_fanout_bench(
    size: int,
    *,
    postgres_admin: str | None = None,
    redis_url: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Fan a rollout of ``size`` devices out and return ``{"bench", "size", "metrics"}``."""
    if size < 1:
        raise ValueError("size must be >= 1")
    from celery import Celery

    admin = check_postgres(postgres_admin or pg_admin_url())
    broker = redis_url or REDIS_URL
    check_redis(broker)
    concurrency = concurrency or CONCURRENCY
    timeout = timeout or max(120.0, size / 500)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-bench-fanout-"))
    procs: list[subprocess.Popen[bytes]] = []
    done = False
    try:
        with (
            _terminate_cleanly(),
            scratch_database(admin, "rollout_bench_fanout") as url,
            _flushed_redis(broker),
            _endpoint(workdir) as (ep, feed),
        ):
            ledger = Ledger.open(url)
            app = Celery("rollout-bench", broker=broker)
            try:
                t_seed = time.perf_counter()
                rollout_id = seed_rollout(ledger, size)
                seed_s = time.perf_counter() - t_seed
                procs = _start_workers(_worker_env(url, broker, ep, workdir), workdir, concurrency)
                _wait_ready(app, procs, workdir)
                responder: Responder | ChildResponder
                if ep.pushed_log is not None and RESPONDER_NICE:
                    responder = ChildResponder(url, ep.pushed_log, RESPONDER_NICE).start()
                else:
                    responder = Responder(ledger, feed).start()
                try:
                    timings = _drive(
                        app, broker, ledger, rollout_id, size, procs, responder, timeout, workdir
                    )
                finally:
                    responder.stop()
                rss = worker_peak_rss([p.pid for p in procs])
                cpu = cpu_seconds([p.pid for p in procs], str(make_url(url).database))
                states = _states(ledger, rollout_id)
            finally:
                _stop_workers(procs)
                with contextlib.suppress(Exception):
                    app.close()
                ledger.dispose()
        done = True
    finally:
        if done:
            shutil.rmtree(workdir, ignore_errors=True)  # else the worker logs stay for a look
    pushed_s, acked_s, ticks = timings
    return {
        "bench": "fanout",
        "size": size,
        "metrics": {
            "seconds_to_pushed": round(pushed_s, 2),
            "seconds_to_acknowledged": round(acked_s, 2),
            "devices_per_s": round(size / pushed_s, 1),
            "peak_rss_mb": round(max(rss.values()), 1) if rss else None,
            "rss_mb": sorted(round(v, 1) for v in rss.values()),
            "states": states,
            "ack_path": "ledger",
            "responder": (
                f"process, nice {RESPONDER_NICE}"
                if isinstance(responder, ChildResponder)
                else "thread"
            ),
            "apns_server": ep.kind,
            "workers": WORKERS,
            "concurrency": concurrency,
            "batch_size": int(os.environ.get("ROLLOUT_BATCH_SIZE", "500")),
            "ticks_sent": ticks,
            "worker_cpu_s": round(cpu[0], 1),
            "postgres_cpu_s": round(cpu[1], 1),
            "cores": os.cpu_count(),
            "seed_seconds": round(seed_s, 1),
        },
    }


def _drive(
    app: Any,
    broker: str,
    ledger: Ledger,
    rollout_id: int,
    size: int,
    procs: list[subprocess.Popen[bytes]],
    responder: Responder | ChildResponder,
    timeout: float,
    home: Path,
) -> tuple[float, float, int]:
    import redis

    r = redis.Redis.from_url(broker)
    t0 = time.perf_counter()
    app.send_task("rollout.tick", queue=CONTROL_QUEUE)
    ticks, last_tick = 1, t0
    pushed_at: float | None = None
    try:
        while True:
            now = time.perf_counter()
            if now - t0 > timeout:
                raise RuntimeError(
                    f"fan-out of {size} not done after {timeout:.0f} s "
                    f"(pushed {'yes' if pushed_at else 'no'}, "
                    f"acknowledged {responder.acknowledged}); see the logs in {home}"
                )
            if responder.error is not None:
                raise RuntimeError(f"the bench responder failed: {responder.error!r}")
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Celery worker exited with {proc.returncode}")
            planned, waiting, acked = _progress(ledger, rollout_id)
            if TRACE:
                print(
                    f"{now - t0:7.2f}s planned {planned} waiting {waiting} acked {acked}",
                    file=sys.stderr,
                )
            if pushed_at is None and waiting == 0:
                pushed_at = now
            if acked >= size:
                return (pushed_at or now) - t0, now - t0, ticks
            if planned and now - last_tick >= TICK_EVERY_S and not r.llen(CONTROL_QUEUE):
                app.send_task("rollout.tick", queue=CONTROL_QUEUE)
                ticks, last_tick = ticks + 1, now
            time.sleep(0.05)
    finally:
        r.close()
