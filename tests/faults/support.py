"""What the fault tests share: a Redis server of their own and a simulated world."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
from rollout.sim.fleet import FleetMix
from rollout.sim.world import World, WorldConfig
from tests.support import checked_states

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
    """Kept counters equal the targets; one install command per target that has one."""
    assert world.ledger is not None
    actual = checked_states(world.ledger, rollout_id)
    with world.ledger.rollouts() as store:
        installs = store.command_counts(rollout_id, INSTALL_PROVISIONING_PROFILE)
        commands = sum(installs.values())
        with_command = len(store.command_uuids(rollout_id))
    assert commands == with_command, f"{commands} command rows for {with_command} targets"
    return actual


def expected_end(world: World) -> dict[str, int]:
    assert world.fleet is not None
    mix = world.fleet.mix.counts(len(world.fleet.devices))
    return {"acknowledged": mix["ok"], "unreachable": mix["dead_token"]}
