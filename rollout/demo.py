"""The demo: renewal on autopilot over a simulated fleet, end to end, on the embedded default.

It enrolls a simulated fleet through the real MDM check-in endpoint; every device holds an
in-house profile (signed by a test chain shaped like Apple's) that expires in 20 days. Real
Celery worker and beat processes then do what they do in production: beat's renewal scan finds
the profile inside its 30-day window, finds no replacement in the library, asks Apple's
Enterprise Program API (a stand-in) for one, which makes it, and opens a renewal rollout in two
stages (a 10% canary, then the rest, each behind a gate). The workers fan it out through the
APNs stand-in while the devices answer over HTTP: most acknowledge (and list the profile when
asked, so the install is verified), some answer NotNow first, some fail with a real-looking
ErrorChain, some stay offline until they time out, and some have dead tokens.

The ``bad-canary`` scenario has Apple's stand-in sign the renewal with a chain the devices do
not trust: the canary refuses it, its gate fails, and the rollout halts before anything of
stage two is pushed. Both end with the summary by stage and state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.profiles import render_text
from rollout.sim.profiles import make_apple_like_chain
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
    scenario: str = "renewal"  # or bad-canary
    backend: str = "builtin"  # or nanomdm: the fleet is enrolled in a NanoMDM stand-in


SCENARIOS = ("renewal", "bad-canary")
BACKENDS = ("builtin", "nanomdm")
DAYS_LEFT = 20
RENEWAL_SETTINGS = {
    "ROLLOUT_RENEWAL_STAGES": "10%,100%",
    "ROLLOUT_RENEWAL_MIN_SUCCESS_RATE": "0.8",
    "ROLLOUT_RENEWAL_SCAN_INTERVAL_S": "2",
    "ROLLOUT_INVENTORY_SWEEP_DAYS": "0",  # the inventory comes from an import here
}
"""A 10% canary, then everyone. The fleet's mix fails about 4% of installs: a gate at 80% lets
a good canary through (a 30-device canary of a 300-device demo fails it about once in 3,000
runs) and stops a bad one at once. The scan runs every 2 s instead of hourly."""


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
            engine_env=dict(RENEWAL_SETTINGS),
            backend=cfg.backend,
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
        if world.nanomdm is not None:
            say(
                f"1. Enrolling {cfg.devices} simulated devices in NanoMDM (a stand-in at "
                f"{world.nanomdm.base_url}); its webhook tells rollout …"
            )
        else:
            say(f"1. Enrolling {cfg.devices} simulated devices through /mdm/checkin …")
        enrolled = world.enroll(progress=_every(cfg.devices, say, started))
        say(f"   {enrolled} enrolled (Authenticate + TokenUpdate, signed with their identities)")
        if world.nanomdm is not None:
            say("   commands go through NanoMDM's enqueue API, answers come back by its webhook")
        held = world.hold_expiring_profile(DAYS_LEFT)
        say(
            f"2. Every device holds {held.name!r} ({held.uuid}), which expires in "
            f"{DAYS_LEFT} days; no renewal is in the library"
        )
        impostor = (
            make_apple_like_chain(team_name="Wrong Signer")
            if cfg.scenario == "bad-canary"
            else None
        )
        world.start_apple_api(signed_by=impostor)
        say(
            f"3. {cfg.workers} Celery worker process(es) and beat; beat's renewal scan asks "
            "Apple's Enterprise Program API (a stand-in) for the renewal"
        )
        if impostor is not None:
            say(
                "   (scenario bad-canary: Apple's stand-in signs with a chain the devices "
                "do not trust)"
            )
        for i in range(cfg.workers):
            world.start_worker(name=f"w{i + 1}")
        world.start_beat()
        rollout_id = world.renewal_of(held.uuid, cfg.timeout)
        renewed = world.rollout_profile(rollout_id)
        say(f"4. Renewal rollout {rollout_id} opened and started: 10% canary, then 100%")
        say(_indent(render_text(renewed)))
        last = [""]

        def progress(s: dict[str, Any]) -> None:
            line = " | ".join(
                f"stage {st['stage']} {st['state']}: "
                + (
                    " ".join(f"{k} {v}" for k, v in st["states"].items() if k != "planned")
                    or "waiting"
                )
                for st in s["stages"]
                if st["state"] != "pending"
            )
            if line != last[0]:
                say(f"   {time.monotonic() - started:6.1f}s  {line}")
                last[0] = line

        summary = world.wait(rollout_id, cfg.timeout, progress)
        elapsed = time.monotonic() - started
        # what the next scan alerts on (it runs every 2 s here): a halted renewal, or devices
        # the finished renewal did not reach (they still hold only the old profile)
        reached = sum(summary["states"].get(s, 0) for s in ("verified", "acknowledged"))
        expect = (
            "renewal.halted"
            if summary["rollout"]["state"] == "halted"
            else "renewal.incomplete"
            if reached < cfg.devices
            else None
        )
        alerts = world.live_alerts(expect, timeout=15.0)
        fleet = world.fleet.mix.counts(cfg.devices)
    say(f"5. Rollout {summary['rollout']['state']} in {elapsed:.1f}s")
    if summary["rollout"].get("reason"):
        say(f"   {summary['rollout']['reason']}")
    for st in summary["stages"]:
        states = ", ".join(f"{k} {v}" for k, v in st["states"].items())
        say(f"   stage {st['stage']} ({st['reach']}, {st['state']}): {states}")
        say(f"     gate: {st['gate']['verdict']} - {st['gate']['why']}")
    say("   every device, by state:")
    width = max(len(k) for k in summary["states"]) if summary["states"] else 0
    for state, n in summary["states"].items():
        reasons = summary.get(state) if state in ("unreachable", "timed_out", "ineligible") else {}
        why = f"  ({', '.join(f'{r} {k}' for r, k in reasons.items())})" if reasons else ""
        say(f"   {state:{width}}  {n:>7}{why}")
    say(f"   {'total':{width}}  {sum(summary['states'].values()):>7}")
    for alert in alerts:
        say(f"   alert ({alert.severity}): {alert.title}")
    say("6. The demo's ledger stays for a look; for example:")
    say(f"   ROLLOUT_DATABASE_URL={world.database_url} rollout rollouts show {rollout_id}")
    return {
        "devices": cfg.devices,
        "rollout": {"id": summary["rollout"]["id"], "state": summary["rollout"]["state"]},
        "renewal": {"old": held.uuid, "new": renewed.uuid, "days_left": DAYS_LEFT},
        "states": summary["states"],
        "stages": [
            {
                "stage": st["stage"],
                "reach": st["reach"],
                "state": st["state"],
                "states": st["states"],
                "gate": st["gate"],
            }
            for st in summary["stages"]
        ],
        "ineligible": summary["ineligible"],
        "unreachable": summary["unreachable"],
        "timed_out": summary["timed_out"],
        "alerts": [{"kind": a.kind, "severity": a.severity, "title": a.title} for a in alerts],
        "fleet": fleet,
        "backend": cfg.backend,
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
