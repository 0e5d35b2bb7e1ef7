"""Simulated devices (the real MDM plist protocol over HTTP, signed) against the real app."""

from __future__ import annotations

import asyncio

from rollout.mdm import Status
from rollout.sim.device import DeviceBehavior, SessionResult, SimDevice
from rollout.sim.http11 import Http11Client
from rollout.sim.identity import issue_device_identity
from rollout.sim.profiles import AppleLikeChain
from tests.web.support import Served, install_rollout, target


def device(web: Served, n: int, chain: AppleLikeChain, behavior: DeviceBehavior) -> SimDevice:
    udid = f"00008110-{n:016X}"
    return SimDevice(
        udid,
        issue_device_identity(web.device_ca, udid),
        behavior=behavior,
        trust_anchors=chain.anchors,
    )


def sessions(web: Served, dev: SimDevice, count: int) -> list[SessionResult]:
    async def run() -> list[SessionResult]:
        async with Http11Client(web.base_url, connections=2) as transport:
            return [await dev.run_session(transport) for _ in range(count)]

    return asyncio.run(run())


def enroll(web: Served, dev: SimDevice) -> None:
    async def run() -> None:
        async with Http11Client(web.base_url, connections=2) as transport:
            assert (await dev.enroll(transport)).ok

    asyncio.run(run())


def test_a_simulated_device_enrolls_installs_and_reports(
    web: Served, profile_chain: AppleLikeChain
) -> None:
    dev = device(web, 1, profile_chain, DeviceBehavior())
    enroll(web, dev)
    rid = install_rollout(web, profile_chain, [dev.udid])
    [result] = sessions(web, dev, 1)
    assert result.ok and [o.status for o in result.outcomes] == [Status.ACKNOWLEDGED]
    assert target(web, rid, dev.udid).state == "acknowledged"
    assert len(dev.installed) == 1  # the device really parsed, checked and kept the profile


def test_notnow_then_success_over_two_sessions(web: Served, profile_chain: AppleLikeChain) -> None:
    dev = device(web, 2, profile_chain, DeviceBehavior(mode="notnow_then_ok", notnow_times=1))
    enroll(web, dev)
    rid = install_rollout(web, profile_chain, [dev.udid])
    first, second = sessions(web, dev, 2)
    assert [o.status for o in first.outcomes] == [Status.NOT_NOW]
    assert [o.status for o in second.outcomes] == [Status.ACKNOWLEDGED]
    assert target(web, rid, dev.udid).state == "acknowledged"


def test_error_device_reports_a_real_looking_error_chain(
    web: Served, profile_chain: AppleLikeChain
) -> None:
    dev = device(web, 3, profile_chain, DeviceBehavior(mode="error"))
    enroll(web, dev)
    rid = install_rollout(web, profile_chain, [dev.udid])
    sessions(web, dev, 1)
    t = target(web, rid, dev.udid)
    assert t.state == "failed" and t.error_chain
    assert t.reason == f"{t.error_chain[0]['ErrorDomain']}:{t.error_chain[0]['ErrorCode']}"
