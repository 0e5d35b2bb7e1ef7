"""Fault tests: real Celery worker processes, a Redis of their own, PostgreSQL, the APNs
stand-in and simulated devices answering over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rollout.ledger import db
from rollout.ledger.models import CommandRow
from rollout.sim.fleet import FleetMix
from rollout.sim.world import World, WorldConfig
from tests.conftest import _unavailable
from tests.helpers import target_states

#: Mostly well-behaved devices, so "every device answered" is a crisp check; a few dead tokens.
MIX = FleetMix(
    ok=0.95, notnow_then_ok=0.0, error=0.0, format_error=0.0, offline=0.0, dead_token=0.05
)


class RedisServer:
    """A redis-server of the test's own on a free port, that the test may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path, redis_url: str) -> Iterator[RedisServer]:
    """A private Redis (the shared one proves Redis is installed and expected here)."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        _unavailable("redis-server (binary)", "not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rabbitmq_url() -> str:
    """The local RabbitMQ, when it runs."""
    url = os.environ.get("ROLLOUT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
    except OSError as exc:
        _unavailable("RabbitMQ", exc)
    return url


def make_world(
    tmp_path: Path, database_url: str, broker_url: str, devices: int = 240, **env: str
) -> World:
    engine_env = {"ROLLOUT_BATCH_SIZE": "20", **env}
    return World(
        WorldConfig(
            home=tmp_path / "world",
            devices=devices,
            seed=11,
            mix=MIX,
            database_url=database_url,
            broker_url=broker_url,
            fast=True,
            engine_env=engine_env,
        )
    )


def assert_ledger_consistent(world: World, rollout_id: int) -> dict[str, int]:
    """Kept counters equal the targets; one command row per target that has one."""
    assert world.engine is not None
    with db.transaction(world.engine) as s:
        actual = target_states(s, rollout_id)
        per_device = s.execute(
            select(CommandRow.device_id, func.count())
            .where(CommandRow.rollout_id == rollout_id)
            .group_by(CommandRow.device_id)
            .having(func.count() > 1)
        ).all()
    assert per_device == [], f"devices with more than one command row: {per_device[:5]}"
    return actual


def expected_end(world: World) -> dict[str, int]:
    assert world.fleet is not None
    mix = world.fleet.mix.counts(len(world.fleet.devices))
    return {"acknowledged": mix["ok"], "unreachable": mix["dead_token"]}
