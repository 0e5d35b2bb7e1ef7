"""What the web tests share: the served app, a hand-driven device, a queued rollout and
reads of the ledger behind the app."""

from __future__ import annotations

import plistlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rollout.clock import SYSTEM_CLOCK, Clock
from rollout.config import Settings
from rollout.inventory import read_inventory
from rollout.ledger import DeviceInfo, EventEntry, Ledger, RunningRollout, TargetInfo
from rollout.mdm.commands import INSTALL_PROVISIONING_PROFILE
from rollout.operations import create_rollout
from rollout.profiles import Profile, parse_profile
from rollout.sim.identity import issue_device_identity, sign_body
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile
from rollout.spec import ONE_STAGE, RolloutSpec, TargetSpec
from rollout.web.app import RolloutApp
from rollout.web.server import BackgroundServer

CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm; charset=UTF-8"
TOPIC = "com.apple.mgmt.External.test"


@dataclass
class Served:
    """The app under test and what the test needs to talk to it."""

    base_url: str
    ledger: Ledger
    device_ca: Issued
    server: BackgroundServer


def serve(
    ledger: Ledger,
    tmp_path: Path,
    device_ca: Issued,
    *,
    clock: Clock = SYSTEM_CLOCK,
    batch_linger_s: float | None = None,
    **overrides: object,
) -> BackgroundServer:
    """The app on ``ledger`` trusting ``device_ca``, served on a loopback port; ``overrides``
    are settings by field name."""
    ca_file = tmp_path / "device-ca.pem"
    ca_file.write_bytes(device_ca.cert_pem())
    settings = Settings(
        home=tmp_path,
        device_ca=str(ca_file),
        max_body_bytes=64 * 1024,
        **overrides,  # type: ignore[arg-type]
    )
    app = RolloutApp(ledger, settings, clock, batch_linger_s=batch_linger_s)
    return BackgroundServer(app).start()


class Device:
    """A hand-driven device: just enough to exercise the endpoints message by message."""

    def __init__(self, web: Served, udid: str, identity: Issued | None = None) -> None:
        self.web = web
        self.udid = udid
        self.identity = identity or issue_device_identity(web.device_ca, udid)
        self.client = httpx.Client(base_url=web.base_url, timeout=10)

    def put(self, path: str, msg: dict[str, Any], ctype: str, sign: bool = True) -> httpx.Response:
        body = plistlib.dumps(msg)
        headers = {"Content-Type": ctype}
        if sign:
            headers["Mdm-Signature"] = sign_body(self.identity, body)
        return self.client.put(path, content=body, headers=headers)

    def checkin(self, message_type: str, path: str = "/mdm/checkin", **keys: Any) -> int:
        msg = {"MessageType": message_type, "UDID": self.udid, "Topic": TOPIC, **keys}
        return self.put(path, msg, CHECKIN).status_code

    def enroll(self) -> None:
        assert (
            self.checkin(
                "Authenticate", OSVersion="17.5", SerialNumber="SER", ProductName="iPhone14,2"
            )
            == 200
        )
        assert self.checkin("TokenUpdate", Token=b"\x01" * 32, PushMagic="magic") == 200

    def report(self, status: str, uuid: str | None = None, path: str = "/mdm/connect",
               **keys: Any) -> httpx.Response:  # fmt: skip
        msg: dict[str, Any] = {"UDID": self.udid, "Status": status, **keys}
        if uuid:
            msg["CommandUUID"] = uuid
        return self.put(path, msg, CONNECT)


def install_rollout(web: Served, chain: AppleLikeChain, udids: list[str]) -> int:
    """A running rollout of a freshly signed profile to ``udids``, every command queued."""
    data = make_profile(chain, name="Renewed")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    now = SYSTEM_CLOCK.now()
    with web.ledger.library() as store:
        store.add(profile, data, now)
    spec = RolloutSpec(
        profile=profile.uuid, targets=TargetSpec(keys=tuple(udids)), stages=ONE_STAGE, verify=False
    )
    summary = create_rollout(web.ledger, spec, actor="test", now=now, start=True)
    rid = summary.rollout.id
    with web.ledger.fanout() as fanout:
        fanout.claim_planned(
            RunningRollout(rid, 0),
            1000,
            request_type=INSTALL_PROVISIONING_PROFILE,
            next_push_at=now,
            now=now,
        )
    return rid


def device(web: Served, udid: str) -> DeviceInfo:
    with web.ledger.registry() as store:
        found = store.get(udid)
    assert found is not None
    return found


def target(web: Served, rollout_id: int, udid: str) -> TargetInfo:
    dev = device(web, udid)
    with web.ledger.rollouts() as store:
        return store.targets(rollout_id, [dev.id])[dev.id]


def events(web: Served, kind: str) -> list[EventEntry]:
    with web.ledger.checkin() as store:
        return store.events(kind=kind)


def fleet_holding(
    web: Served,
    chain: AppleLikeChain,
    n: int,
    *,
    held_by: int = 0,
    **profile: Any,
) -> tuple[list[Device], Profile]:
    """``n`` devices enrolled through the endpoint and a signed profile (``make_profile``'s
    keywords) in the library, held (by the inventory) by the first ``held_by`` of them."""
    devices = [Device(web, f"00008020-00000000000000{k:02d}") for k in range(n)]
    for device in devices:
        device.enroll()
    data = make_profile(chain, **profile)
    parsed = parse_profile(data, trust_anchors=chain.anchors)
    now = SYSTEM_CLOCK.now()
    with web.ledger.library() as store:
        store.add(parsed, data, now)
    if held_by:
        rows = "udid,profiles\n" + "".join(f"{d.udid},{parsed.uuid}\n" for d in devices[:held_by])
        with web.ledger.registry() as reg:
            reg.import_devices(read_inventory(rows.encode(), fmt="csv").records, now)
    return devices, parsed
