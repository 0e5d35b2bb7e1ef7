"""The check-in bench's fleet in the ledger: enrolled devices with one install queued each
(set up through the ledger's stores before timing), the checks made after it, and the
check-in-like bodies the baseline handler is sent."""

from __future__ import annotations

import datetime as dt
import plistlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOPIC = "com.apple.mgmt.External.c0ffee00-0000-4000-8000-0000000be7c1"
WARMUP_DEVICES = 64
"""Extra enrolled devices with nothing queued: their Idle requests warm the server up."""


@dataclass(frozen=True)
class BenchDevice:
    """One enrolled device as the load generator plays it."""

    udid: str
    cert_der: bytes
    command_uuid: str | None  # None for a warm-up device (nothing queued)


@dataclass
class Fleet:
    """What :func:`setup_ledger` made: the rollout, its devices, and their identity material
    (one key for every device certificate; the profile's trust anchors, in DER)."""

    rollout_id: int
    devices: list[BenchDevice]
    key_pem: bytes
    anchors: list[bytes]


def setup_ledger(url: str, size: int, workdir: Path) -> Fleet:
    """Enroll ``size`` devices (+ warm-up ones) and queue one install per device.

    The device CA's certificate is written to ``workdir/device-ca.pem`` for the server.
    """
    from cryptography.hazmat.primitives import hashes, serialization

    from rollout.ledger import Ledger, RunningRollout, SeedDevice
    from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
    from rollout.operations import create_rollout
    from rollout.profiles import parse_profile
    from rollout.sim.fleet import FleetIdentities
    from rollout.sim.identity import make_device_ca
    from rollout.sim.profiles import make_apple_like_chain, make_profile
    from rollout.spec import ONE_STAGE, RolloutSpec, TargetSpec

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
        spec = RolloutSpec(
            profile=profile.uuid,
            targets=TargetSpec(keys=tuple(udids[:size])),
            name="bench renewal",
            stages=ONE_STAGE,
            verify=False,
        )
        summary = create_rollout(ledger, spec, actor="bench", now=now, start=True)
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
    devices = [BenchDevice(u, certs[u], by_device[ids[u]] if u in ids else None) for u in udids]
    key = identities.key
    assert key is not None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    anchors = [c.public_bytes(serialization.Encoding.DER) for c in chain.anchors]
    return Fleet(rollout_id, devices, key_pem, anchors)


def check_ledger(url: str, rollout_id: int, size: int) -> dict[str, Any]:
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


def baseline_bodies(devices: Sequence[BenchDevice], count: int) -> list[bytes]:
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
