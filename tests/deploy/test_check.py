"""``rollout check`` against real parts: PostgreSQL, Redis as the broker, a real Celery worker
process on both queues (its tick writes the heartbeat), the APNs stand-in with a push
certificate it accepts, and a device CA. Then one part at a time is broken: the broker on a
closed port, the ledger one migration behind, no worker on ``fanout``."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from celery import Celery

from rollout.clock import ManualClock
from rollout.config import load_settings
from rollout.deploy_check import (
    check_delivery,
    check_device_ca,
    check_identity,
    check_push_certificate,
)
from rollout.ledger import Ledger, db
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.nanomdm import NanoMDMStandIn
from rollout.sim.pki import make_ca
from tests.cli.support import rollout
from tests.conftest import TEST_LEDGER_KEY

REPO = Path(__file__).resolve().parents[2]
WORKER = "check-test@localhost"


def _own_db(redis_url: str, number: int = 12) -> str:
    """A Redis database of this file's own, so no other test's worker answers its pings."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{number}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    home: Path
    db_url: str
    env: dict[str, str]  # the check's settings (ROLLOUT_HOME and the ledger aside)
    app: Celery  # a client of the broker, to drive the worker


def _wait(what: str, done: Any, worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()
        if done():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} never happened\n{log.read_text()}")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    db_url: str
    broker: str


@pytest.fixture(scope="module")
def worker(
    postgres_admin: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A Celery worker process on both queues, started at once (it boots while the other
    fixtures are made), over its own ledger database and Redis database."""
    tmp = tmp_path_factory.mktemp("worker")
    broker = _own_db(redis_url)
    redis.Redis.from_url(broker).flushdb()
    db_url = db.create_database(postgres_admin, "rollout_test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(tmp / "home"),
        ROLLOUT_DATABASE_URL=db_url,
        ROLLOUT_BROKER_URL=broker,
        PYTHONUNBUFFERED="1",
    )
    log = tmp / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
             "control,fanout", "-c", "1", "-P", "solo", "-n", WORKER, "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        db.upgrade(db_url)
        yield Worker(process, log, db_url, broker)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        db.drop_database(postgres_admin, db_url)
        redis.Redis.from_url(broker).flushdb()


@pytest.fixture(scope="module")
def deployment(
    worker: Worker,
    standin: ApnsStandIn,
    push_cert_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """Everything up: a migrated ledger, the broker, the worker answering, its tick's heartbeat
    in the ledger, the APNs stand-in, a device CA (also the trust anchor)."""
    tmp = tmp_path_factory.mktemp("check")
    ca = tmp / "device-ca.pem"
    ca.write_bytes(make_ca("Check Device CA", days=400).cert_pem())
    app = Celery("check-test", broker=worker.broker, set_as_current=False)
    ledger = Ledger.open(worker.db_url)
    try:
        _wait(
            "the worker answering a ping",
            lambda: bool(app.control.inspect(timeout=0.3).ping()),
            worker.process,
            worker.log,
        )
        app.send_task("rollout.tick", queue="control")

        def ticked() -> bool:
            with ledger.heartbeats() as store:
                return "tick" in store.heartbeats()

        _wait("the tick's heartbeat", ticked, worker.process, worker.log)
        yield Deployment(
            home=tmp / "home",
            db_url=worker.db_url,
            env={
                "ROLLOUT_BROKER_URL": worker.broker,
                "ROLLOUT_APNS_CERT": str(push_cert_file),
                "ROLLOUT_APNS_URL": standin.base_url,
                "ROLLOUT_APNS_CA": standin.ca_file,
                "ROLLOUT_DEVICE_CA": str(ca),
                "ROLLOUT_TRUST_ANCHORS": str(ca),
                "ROLLOUT_LEDGER_KEYS": TEST_LEDGER_KEY,
            },
            app=app,
        )
    finally:
        app.close()
        ledger.dispose()


def _check(dep: Deployment, db_url: str | None = None, **env: str) -> tuple[int, dict[str, Any]]:
    done = rollout("check", "--json", home=dep.home, db_url=db_url or dep.db_url,
                   env={**dep.env, **env})  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_working_deployment_passes_every_check(deployment: Deployment) -> None:
    started = time.monotonic()
    code, report = _check(deployment)
    assert time.monotonic() - started < 30  # bounded time-outs: never a hang
    checks = _by_name(report)
    assert code == 0 and report["ok"] is True, report
    assert list(checks) == [
        "ledger", "broker", "workers", "beat", "ledger keys", "push certificate", "apns",
        "device ca", "trust anchors", "identity", "delivery",
    ]  # fmt: skip
    assert checks.pop("delivery")["status"] == "skip"  # builtin: nothing beside to ask
    assert {c["status"] for c in checks.values()} == {"ok"}, report
    assert set(report["checks"][0]) == {"name", "status", "detail"}
    assert f"revision {db.head_revision()} (latest)" in checks["ledger"]["detail"]
    assert WORKER in checks["workers"]["detail"]
    assert "last tick" in checks["beat"]["detail"]
    assert "com.apple.mgmt.External." in checks["push certificate"]["detail"]
    assert "HTTP/2" in checks["apns"]["detail"]
    assert "Check Device CA" in checks["device ca"]["detail"]

    table = rollout("check", home=deployment.home, db_url=deployment.db_url, env=deployment.env)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "all checks passed" in table.stdout and "push certificate" in table.stdout


def test_a_closed_broker_port_fails_the_broker_check(deployment: Deployment) -> None:
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    started = time.monotonic()
    code, report = _check(deployment, ROLLOUT_BROKER_URL=closed)
    assert time.monotonic() - started < 30  # bounded time-outs: never a hang
    checks = _by_name(report)
    assert code == 1 and report["ok"] is False
    assert checks["broker"]["status"] == "fail"
    assert closed in checks["broker"]["detail"]
    assert checks["workers"]["status"] == "skip"
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["broker"]

    table = rollout("check", home=deployment.home, db_url=deployment.db_url,
                    env={**deployment.env, "ROLLOUT_BROKER_URL": closed})  # fmt: skip
    assert table.returncode == 1 and "failed: broker" in table.stdout


def test_a_ledger_one_migration_behind_names_both_revisions(
    deployment: Deployment, postgres_url: str
) -> None:
    from alembic import command

    db.upgrade(postgres_url)
    command.downgrade(db.alembic_config(postgres_url), "-1")
    behind = db.current_revision(postgres_url)
    head = db.head_revision()
    assert behind is not None and head is not None and behind != head
    code, report = _check(deployment, db_url=postgres_url)
    ledger = _by_name(report)["ledger"]
    assert code == 1 and ledger["status"] == "fail"
    assert f"revision {behind}" in ledger["detail"] and f"latest is {head}" in ledger["detail"]
    assert "rollout db upgrade" in ledger["detail"]
    assert _by_name(report)["beat"]["status"] == "skip"


def test_no_worker_on_fanout_fails_naming_the_queue(deployment: Deployment) -> None:
    control = deployment.app.control
    control.cancel_consumer("fanout", destination=[WORKER], reply=True, timeout=5)
    try:
        code, report = _check(deployment)
    finally:
        control.add_consumer("fanout", destination=[WORKER], reply=True, timeout=5)
    workers = _by_name(report)["workers"]
    assert code == 1 and workers["status"] == "fail"
    assert "fanout" in workers["detail"] and "control" not in workers["detail"].split(";")[0]


# ---- the checks on their own, with the one clock ----------------------------------------------


def test_the_push_certificate_warns_near_its_expiry_and_fails_after(
    push_cert_file: Path, tmp_path: Path
) -> None:
    from rollout.apns import load_push_certificate

    settings = load_settings(home=tmp_path, apns_cert=str(push_cert_file))
    expiry = load_push_certificate(push_cert_file).not_after
    for before, status in ((dt.timedelta(days=60), "ok"), (dt.timedelta(days=10), "warn"),
                           (-dt.timedelta(days=1), "fail")):  # fmt: skip
        got = check_push_certificate(settings, ManualClock(expiry - before))
        assert got.status == status, got
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    got = check_push_certificate(load_settings(home=tmp_path, apns_cert=str(broken)), ManualClock())
    assert got.status == "fail" and str(broken) in got.detail
    assert check_push_certificate(load_settings(home=tmp_path), ManualClock()).status == "skip"


def test_a_device_ca_that_is_no_ca_or_unreadable_fails(
    push_cert_file: Path, tmp_path: Path
) -> None:
    leaf = check_device_ca(
        load_settings(home=tmp_path, device_ca=str(push_cert_file)), ManualClock()
    )
    assert leaf.status == "fail" and "not a CA" in leaf.detail
    missing = tmp_path / "missing.pem"
    gone = check_device_ca(load_settings(home=tmp_path, device_ca=str(missing)), ManualClock())
    assert gone.status == "fail" and str(missing) in gone.detail


def test_the_identity_settings_are_reported_and_inconsistencies_fail(tmp_path: Path) -> None:
    proxied = load_settings(home=tmp_path, identity_sources="client-cert,mdm-signature")
    got = check_identity(proxied, ManualClock())
    assert got.status == "ok" and "Client-Cert" in got.detail
    bad = load_settings(
        home=tmp_path, identity_sources="client-cert", client_cert_header="Client Cert"
    )
    got = check_identity(bad, ManualClock())
    assert got.status == "fail" and "ROLLOUT_CLIENT_CERT_HEADER" in got.detail
    assert (
        check_identity(load_settings(home=tmp_path, identity_mode="off"), ManualClock()).status
        == "warn"
    )


@pytest.mark.parametrize("server", ["nanomdm", "micromdm"])
def test_the_delivery_check_asks_the_mdm_server_with_the_key(server: str, tmp_path: Path) -> None:
    key = "the-api-key-0123456789"
    standin = NanoMDMStandIn(api_key=key, user=server).start()
    try:

        def check(url: str, api_key: str, **more: str) -> tuple[str, str]:
            settings = load_settings(
                home=tmp_path,
                delivery=server,
                webhook_secret="webhook-secret-0123456789",
                **{f"{server}_url": url, f"{server}_api_key": api_key},
                **more,
            )
            got = check_delivery(settings, ManualClock())
            assert got.name == "delivery"
            return got.status, got.detail

        status, detail = check(standin.base_url, key)
        assert status == "ok", detail
        assert f"{server} at {standin.base_url}" in detail and "it wakes the devices" in detail
        if server == "nanomdm":
            assert "v0.0.0-standin" in detail  # its version, read from /version
        status, detail = check(standin.base_url, key, nanomdm_push="rollout")
        assert status == "ok" and "rollout wakes the devices" in detail

        status, detail = check(standin.base_url, "a-wrong-key-0123456789")
        assert status == "fail" and "refused the API key" in detail
        assert "a-wrong-key" not in detail and standin.base_url in detail

        closed = f"http://user:pass-in-url@127.0.0.1:{_free_port()}"
        started = time.monotonic()
        status, detail = check(closed, key)
        assert time.monotonic() - started < 10
        assert status == "fail" and closed.split("@")[1] in detail, detail
        assert "pass-in-url" not in detail and key not in detail
    finally:
        standin.stop()
    assert check_delivery(load_settings(home=tmp_path), ManualClock()).status == "skip"  # builtin


def test_a_server_delivery_without_a_webhook_secret_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    got = rollout(
        "check",
        home=tmp_path,
        env={"ROLLOUT_DELIVERY": "nanomdm", "ROLLOUT_NANOMDM_URL": "http://127.0.0.1:9",
             "ROLLOUT_NANOMDM_API_KEY": "k" * 20},
    )  # fmt: skip
    lines = got.stderr.strip().splitlines()
    assert got.returncode != 0 and len(lines) == 1, got.stderr
    assert "ROLLOUT_WEBHOOK_SECRET" in lines[0]
