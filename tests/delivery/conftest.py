"""A fleet enrolled in the NanoMDM stand-in, rollout beside it: its web app (the webhook), a
NanoMDM client, and a tick loop that hands batches over, all on one manual clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from rollout import controller
from rollout.apns import PushClient
from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.delivery import MDMServer, MicroMDMClient, NanoMDMClient
from rollout.delivery.handover import hand_over_batch
from rollout.dispatch import InlineDispatcher
from rollout.ledger import Ledger
from rollout.policy import EnginePolicy
from rollout.sim.fleet import FleetMix, SimFleet
from rollout.sim.http11 import HttpxTransport
from rollout.sim.nanomdm import NanoMDMStandIn
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer
from tests.support import TOPIC, signing_chain

SECRET = "webhook-secret-0123456789abcdef"
API_KEY = "nanomdm-api-key-test"
MIX = FleetMix(ok=0.7, notnow_then_ok=0.1, error=0.1, format_error=0.0, offline=0.1,
               dead_token=0.0)  # fmt: skip


@dataclass
class Beside:
    """Everything a NanoMDM delivery test drives."""

    ledger: Ledger
    clock: ManualClock
    policy: EnginePolicy
    web: BackgroundServer
    nanomdm: NanoMDMStandIn
    client: MDMServer
    fleet: SimFleet
    handed: list[dict[str, int]]
    pusher: PushClient | None = None  # rollout wakes the devices itself (nopush=1)

    @property
    def webhook_url(self) -> str:
        return f"{self.web.base_url}/webhook/mdm/{SECRET}"

    def hand_over(self, rollout_id: int, ids: Sequence[int]) -> None:
        self.handed.append(
            hand_over_batch(
                self.ledger,
                self.client,
                rollout_id,
                ids,
                self.policy,
                self.clock,
                pusher=self.pusher,
            )
        )

    def tick(self) -> controller.TickReport:
        """One controller tick at the clock's time; then wait for the devices it woke."""
        report = controller.tick(
            self.ledger, InlineDispatcher(self.hand_over), self.policy, self.clock.now()
        )
        self.settle()
        return report

    def settle(self) -> None:
        self.fleet.submit(self.fleet.wait_idle(30)).result(60)

    def run(self, rollout_id: int, *, ticks: int = 40, step: float = 6.0) -> str:
        """Tick (moving the clock on ``step`` seconds each time) until the rollout ends."""
        state = ""
        for _ in range(ticks):
            self.tick()
            with self.ledger.rollouts() as store:
                info = store.get(rollout_id)
            assert info is not None
            state = info.state
            if state in ("completed", "halted", "aborted"):
                return state
            self.clock.advance(step)
        return state


@pytest.fixture
def beside(ledger: Ledger, tmp_path: Path) -> Iterator[Callable[..., Beside]]:
    made: list[Beside] = []

    def make(
        devices: int = 20,
        mix: FleetMix = MIX,
        seed: int = 5,
        server: str = "nanomdm",
        webhook_at_enrollment: bool = True,
    ) -> Beside:
        """``webhook_at_enrollment`` False: the fleet enrolls in the server before its webhook
        points at rollout (devices enrolled before rollout was set up)."""
        clock = ManualClock(dt.datetime.now(dt.UTC))
        settings = Settings(home=tmp_path, webhook_secret=SECRET, identity_mode="off", fast=True)
        web = BackgroundServer(create_app(settings, ledger, clock)).start()
        fleet = SimFleet(
            devices, seed=seed, mix=mix, topic=TOPIC, trust_anchors=signing_chain().anchors
        )
        standin = NanoMDMStandIn(
            api_key=API_KEY,
            webhook_url=f"{web.base_url}/webhook/mdm/{SECRET}" if webhook_at_enrollment else "",
            on_push=fleet.wake,
            user=server,
        ).start()
        client: MDMServer = (
            MicroMDMClient(standin.base_url, API_KEY)
            if server == "micromdm"
            else NanoMDMClient(standin.base_url, API_KEY)
        )
        fleet.start_in_thread(HttpxTransport(standin.base_url))
        world = Beside(
            ledger,
            clock,
            settings.engine_policy(),
            web,
            standin,
            client,
            fleet,
            [],
        )
        made.append(world)
        transport = HttpxTransport(standin.base_url)
        fleet.submit(fleet.enroll_all(transport)).result(60)
        fleet.submit(transport.aclose()).result(10)
        standin.webhook_url = world.webhook_url
        return world

    yield make
    for world in made:
        world.fleet.stop()
        world.client.close()
        world.nanomdm.stop()
        world.web.stop()
