"""The demo: a renewal rollout over a simulated fleet, end to end, on the embedded default.

It signs a renewed in-house profile with a test chain shaped like Apple's, enrolls a simulated
fleet through the real MDM check-in endpoint, starts a rollout, and lets real Celery worker and
beat processes fan it out through the APNs stand-in while the devices answer over HTTP: most
acknowledge, some answer NotNow first, some fail with a real-looking ErrorChain, some stay
offline until they time out, and some have dead tokens. It ends with the ledger's summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.profiles import render_text
from rollout.sim.world import World, WorldConfig

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs."""

    home: Path
    devices: int = 2000
    seed: int = 7
    fast: bool = False
    database_url: str | None = None
    broker_url: str | None = None
    workers: int = 1
    timeout: float = 600.0


def run_demo(cfg: DemoConfig, say: Say = print) -> dict[str, Any]:
    """Run the whole demo and return its summary (the ``--json`` object)."""
    world = World(
        WorldConfig(
            home=cfg.home,
            devices=cfg.devices,
            seed=cfg.seed,
            fast=cfg.fast,
            database_url=cfg.database_url,
            broker_url=cfg.broker_url,
        )
    )
    started = time.monotonic()
    with world:
        assert world.fleet is not None and world.chain is not None
        where = world.database_url.split("@")[-1]
        broker = (
            "embedded (files)" if world.broker_url.startswith("filesystem") else world.broker_url
        )
        say(f"ledger {where}; broker {broker}")
        say(f"1. Enrolling {cfg.devices} simulated devices through /mdm/checkin …")
        enrolled = world.enroll(progress=_every(cfg.devices, say, started))
        say(f"   {enrolled} enrolled (Authenticate + TokenUpdate, signed with their identities)")
        rollout_id = world.open_rollout()
        assert world.profile is not None
        say("2. The renewed profile in the library:")
        say(_indent(render_text(world.profile)))
        say(f"3. Rollout {rollout_id} started; {cfg.workers} Celery worker process(es) and beat")
        for i in range(cfg.workers):
            world.start_worker(name=f"w{i + 1}")
        world.start_beat()
        last = [""]

        def progress(s: dict[str, Any]) -> None:
            line = "  ".join(f"{k} {v}" for k, v in s["states"].items())
            if line != last[0]:
                say(f"   {time.monotonic() - started:6.1f}s  {line}")
                last[0] = line

        summary = world.wait(rollout_id, cfg.timeout, progress)
        elapsed = time.monotonic() - started
        fleet = world.fleet.mix.counts(cfg.devices)
    say(f"4. Rollout {summary['rollout']['state']} in {elapsed:.1f}s; every device, by state:")
    width = max(len(k) for k in summary["states"]) if summary["states"] else 0
    for state, n in summary["states"].items():
        reasons = summary.get(state) if state in ("unreachable", "timed_out", "ineligible") else {}
        why = f"  ({', '.join(f'{r} {k}' for r, k in reasons.items())})" if reasons else ""
        say(f"   {state:{width}}  {n:>7}{why}")
    say(f"   {'total':{width}}  {sum(summary['states'].values()):>7}")
    say("5. The demo's ledger stays for a look; for example:")
    say(f"   ROLLOUT_DATABASE_URL={world.database_url} rollout rollouts show {rollout_id}")
    return {
        "devices": cfg.devices,
        "rollout": {"id": summary["rollout"]["id"], "state": summary["rollout"]["state"]},
        "states": summary["states"],
        "stages": summary["stages"],
        "ineligible": summary["ineligible"],
        "unreachable": summary["unreachable"],
        "timed_out": summary["timed_out"],
        "fleet": fleet,
        "seconds": round(elapsed, 1),
    }


def _every(total: int, say: Say, started: float) -> Callable[[int], None]:
    """Report enrollment progress about every tenth of the fleet (and at the end)."""
    step = max(1, total // 10)

    def progress(done: int) -> None:
        if done % step == 0 or done == total:
            say(f"   {time.monotonic() - started:6.1f}s  {done}/{total} enrolled")

    return progress


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
