"""deploy/compose.yaml's settings run the product: its migration, web, worker-control,
worker-fanout and beat services, each started as a separate local process (not a container)
with the command line and the ROLLOUT_* settings the compose file gives it, take a staged
rollout (20 simulated devices, stages 10% and 100%) to completion.

Only what names a place changes: the database and Redis are the local test servers, the files
(push certificate, device CA, trust anchors, the token pepper's secret file) are made here, the
APNs endpoint is the stand-in, the workers' metrics ports are off (they would clash with other
tests), and the controller ticks every 0.5 s instead of 5 s so the test is short. Every other
setting, and every command line, is the compose file's own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from alembic import command
from alembic.script import ScriptDirectory

from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, db
from rollout.ledger.sealing import new_key
from rollout.operations import create_rollout, rollout_report
from rollout.profiles import parse_profile
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.fleet import SimFleet
from rollout.sim.http11 import Http11Client
from rollout.sim.profiles import make_apple_like_chain, make_profile
from rollout.spec import RolloutSpec, TargetSpec, parse_stages
from rollout.web.server import free_port
from tests.cli.support import rollout
from tests.faults.support import MIX
from tests.support import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.celery]

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
TOPIC = "com.apple.mgmt.External.3c4d5e6f-0a1b-4c2d-8e3f-425364758697"
CONTAINER_HOME = "/var/lib/rollout"
DEVICES = 20
SERVICES = ("web", "worker-control", "worker-fanout", "beat")


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """A service's command line (the image's entrypoint, `rollout`, unless it has its own) and
    its environment, as the compose file gives them."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    service = services[name]
    argv = [*service.get("entrypoint", ["rollout"]), *service["command"]]
    env = {str(k): str(v) for k, v in (service.get("environment") or {}).items()}
    return argv, env


def local_argv(argv: list[str], home: Path) -> list[str]:
    """The container's command run from this test's Python, with its paths under ``home``."""
    program = {
        "rollout": [sys.executable, "-m", "rollout"],
        "celery": [sys.executable, "-m", "celery"],
    }
    local = [*program[argv[0]], *argv[1:]]
    return [a.replace(CONTAINER_HOME, str(home)) for a in local]


@contextlib.contextmanager
def scratch_redis(shared_url: str) -> Iterator[str]:
    """An empty database of the local Redis (not the shared test one, whose queues other tests
    read); its keys are deleted afterwards, key by key, never with FLUSHALL."""
    base = shared_url.rsplit("/", 1)[0]
    chosen: redis.Redis | None = None
    for number in range(14, 0, -1):
        client = redis.Redis.from_url(f"{base}/{number}")
        # claim it: an empty database, marked, so a concurrent run picks another
        if client.dbsize() == 0 and client.set("rollout-test:claimed", "1", nx=True, ex=300):
            chosen = client
            break
        client.close()
    if chosen is None:
        unavailable("an empty Redis database", "databases 1-14 all hold keys")
    url = f"{base}/{chosen.connection_pool.connection_kwargs['db']}"
    try:
        yield url
    finally:
        for key in chosen.scan_iter(count=500):
            chosen.delete(key)
        chosen.close()


class Processes:
    """Child processes in sessions of their own, stopped with TERM (then KILL) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        # beat first, then the workers and the web app: TERM to each main process
        for name in sorted(self.procs, key=lambda n: n != "beat"):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until_healthy(url: str, procs: Processes, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        procs.check()
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/healthz", timeout=2)
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"the web app did not answer /healthz: {procs.tail('web')}")
        time.sleep(0.1)


def check(settings: dict[str, str], home: Path) -> dict[str, Any]:
    """``rollout check --json`` with these settings, its JSON answer."""
    res = rollout("check", "--json", home=home, env=settings)
    answer: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == (0 if answer["ok"] else 1), res.stderr
    return answer


def failed(answer: dict[str, Any]) -> list[str]:
    return [c["name"] for c in answer["checks"] if c["status"] == "fail"]


def test_the_compose_services_settings_run_a_staged_rollout(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    procs = Processes(tmp_path)
    chain = make_apple_like_chain(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    fleet = SimFleet(DEVICES, seed=5, mix=MIX, topic=TOPIC, trust_anchors=chain.anchors)
    with (
        scratch_redis(redis_url) as broker_url,
        ApnsStandIn(topic=TOPIC, on_push=lambda token, _payload: fleet.wake(token)) as standin,
    ):
        for token in fleet.dead_tokens():
            standin.unregister(token)
        push = standin.issue_push_certificate(TOPIC)
        (home / "push.pem").write_bytes(push.cert_pem() + push.key_pem())
        (home / "device-ca.pem").write_bytes(fleet.ca.cert_pem())
        (home / "anchor.der").write_bytes(chain.root.cert_der())
        (home / "token-pepper").write_text("a-pepper-from-a-secret-file\n")
        (home / "ledger-keys").write_text(new_key() + "\n")
        # where the compose file names a place: here instead
        places = {
            "ROLLOUT_HOME": str(home),
            "ROLLOUT_DATABASE_URL": postgres_url,
            "ROLLOUT_BROKER_URL": broker_url,
            "ROLLOUT_APNS_CERT": str(home / "push.pem"),
            "ROLLOUT_DEVICE_CA": str(home / "device-ca.pem"),
            "ROLLOUT_TRUST_ANCHORS": str(home / "anchor.der"),
            "ROLLOUT_TOKEN_PEPPER_FILE": str(home / "token-pepper"),
            "ROLLOUT_LEDGER_KEYS_FILE": str(home / "ledger-keys"),
            "ROLLOUT_APNS_URL": standin.base_url,
            "ROLLOUT_APNS_CA": standin.ca_file,
            "ROLLOUT_WORKER_METRICS_PORT": "0",
            "ROLLOUT_TICK_INTERVAL_S": "0.5",
            "ROLLOUT_SWEEP_INTERVAL_S": "1",
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
        base["PYTHONUNBUFFERED"] = "1"

        def env_of(service: str) -> dict[str, str]:
            _, env = compose_service(service)
            # the test's local PostgreSQL takes no password: the URL is the whole story
            env.pop("ROLLOUT_DATABASE_PASSWORD_FILE", None)
            # the compose file's own settings stay (identity mode, rate limit, ...)
            assert "ROLLOUT_IDENTITY_MODE" in set(env) - set(places)
            return {**base, **env, **places}

        try:
            # the one-shot migration, as compose runs it before anything else
            argv, _ = compose_service("migrate")
            done = subprocess.run(
                local_argv(argv, home), env=env_of("migrate"), capture_output=True, timeout=60
            )
            assert done.returncode == 0, done.stdout + done.stderr

            # then the web app (on a free local port: the compose file's listens on
            # 0.0.0.0:8000), both workers and beat, all at once as compose starts them
            argv, _ = compose_service("web")
            port = free_port()
            argv[argv.index("--host") + 1] = "127.0.0.1"
            argv[argv.index("--port") + 1] = str(port)
            procs.start("web", local_argv(argv, home), env_of("web"))
            for service in ("worker-control", "worker-fanout", "beat"):
                argv, _ = compose_service(service)
                procs.start(service, local_argv(argv, home), env_of(service))
            url = f"http://127.0.0.1:{port}"
            assert wait_until_healthy(url, procs)["ok"] is True

            # enroll the fleet through the web process, then a rollout in two stages
            transport = Http11Client(url, connections=8)
            fleet.start_in_thread(transport)
            enrolled = fleet.submit(fleet.enroll_all(transport, 8)).result(timeout=30)
            assert all(r.ok for r in enrolled), enrolled
            ledger = Ledger.open(postgres_url)
            try:
                now = SYSTEM_CLOCK.now()
                data = make_profile(chain, name="Field App In-House")
                profile = parse_profile(data, trust_anchors=chain.anchors)
                with ledger.library() as store:
                    store.add(profile, data, now)
                spec = RolloutSpec(
                    profile=profile.uuid,
                    targets=TargetSpec(keys=tuple(d.udid for d in fleet.devices)),
                    name="compose settings",
                    stages=parse_stages("10%,100%"),
                )
                rid = create_rollout(ledger, spec, actor="test", now=now, start=True).rollout.id
                deadline = time.monotonic() + 40
                while True:
                    procs.check()
                    report = rollout_report(ledger, rid, SYSTEM_CLOCK.now())
                    # the last stage is marked passed just after its rollout completes
                    stages = [s["state"] for s in report["stages"]]
                    if report["rollout"]["state"] not in ("running", "draft") and (
                        "running" not in stages
                    ):
                        break
                    assert time.monotonic() < deadline, (report, procs.tail("worker-fanout"))
                    time.sleep(0.25)
            finally:
                ledger.dispose()

            # rollout check, with the web service's settings, passes against these processes
            # and fails, naming the part, when the broker is gone or the ledger is behind
            settings = {k: v for k, v in env_of("web").items() if k.startswith("ROLLOUT_")}
            checked = check(settings, home)
            assert checked["ok"] is True, checked
            statuses = {c["name"]: c["status"] for c in checked["checks"]}
            assert statuses["workers"] == statuses["ledger keys"] == "ok", checked
            gone = check({**settings, "ROLLOUT_BROKER_URL": "redis://127.0.0.1:9/0"}, home)
            assert failed(gone) == ["broker"], gone
            # one migration behind: the ledger's recorded revision is the one before the latest
            # (a real downgrade would refuse, the push secrets being sealed)
            cfg = db.alembic_config(postgres_url)
            before = ScriptDirectory.from_config(cfg).get_revision("head").down_revision
            command.stamp(cfg, str(before), purge=True)
            behind = check(settings, home)
            assert failed(behind) == ["ledger"], behind
        finally:
            procs.stop()
            fleet.stop()

    assert report["rollout"]["state"] == "completed", report
    expected = MIX.counts(DEVICES)
    assert report["states"] == {
        "verified": expected["ok"],
        "unreachable": expected["dead_token"],
    }, report["states"]
    assert [s["state"] for s in report["stages"]] == ["passed", "passed"], report["stages"]
    assert standin.counters()["requests"] >= expected["ok"]
