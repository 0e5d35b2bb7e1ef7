"""The simulated fleet: deterministic build, behaviour mix, enrollment and sessions end to end."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rollout.inventory import read_inventory
from rollout.mdm import DeviceCATrust, Status, TokenUpdate, install_provisioning_profile
from rollout.sim.device import SimDevice
from rollout.sim.fleet import FleetMix, SimFleet
from rollout.sim.http11 import Http11Client, HttpxTransport
from rollout.sim.pki import Issued
from tests.sim.servers import MiniMDM


def test_fleet_build_timing_printout() -> None:
    started = time.perf_counter()
    fleet = SimFleet(10_000, seed=1)
    built = time.perf_counter() - started
    started = time.perf_counter()
    for device in fleet.devices[:1000]:
        _ = device.identity
    issued = time.perf_counter() - started
    print(f"\n10,000 devices built in {built:.2f} s; 1,000 shared-key identities in {issued:.2f} s")
    assert len(fleet) == 10_000
    assert fleet.identities.issued == 1000


def test_same_seed_same_fleet_and_exact_mix() -> None:
    a, b = SimFleet(200, seed=5), SimFleet(200, seed=5)
    assert [d.udid for d in a] == [d.udid for d in b]
    assert [d.behavior for d in a] == [d.behavior for d in b]
    assert [d.udid for d in SimFleet(200, seed=6)] != [d.udid for d in a]
    assert len({d.udid for d in a}) == 200 and len({d.push_token_hex for d in a}) == 200
    assert a.behavior_counts() == {
        "ok": 170,
        "notnow_then_ok": 10,
        "error": 6,
        "format_error": 2,
        "offline": 12,  # 8 offline + 4 with a dead token (gone devices are offline too)
        "dead_token": 4,
    }
    assert len(a.dead_tokens()) == 4
    assert all(a.by_token(t).behavior.dead_token for t in a.dead_tokens())  # type: ignore[union-attr]


def test_mix_must_add_up() -> None:
    with pytest.raises(ValueError):
        FleetMix(ok=0.5)
    assert sum(FleetMix().counts(7).values()) == 7
    assert FleetMix(ok=0.5, offline=0.5, notnow_then_ok=0, error=0, format_error=0, dead_token=0)


def test_slow_fraction_and_lookups() -> None:
    fleet = SimFleet(100, seed=2, slow_fraction=0.1, slow_delay_s=0.25)
    assert fleet.behavior_counts()["slow"] == 9  # 10 % of the 94 online devices
    device = fleet.devices[17]
    assert fleet.by_token(device.push_token_hex.upper()) is device
    assert fleet.by_udid(device.udid) is device
    row = fleet.inventory_rows()[17]
    assert row == {
        "udid": device.udid,
        "platform": "iOS",
        "os_version": "17.5.1",
        "serial_number": device.serial,
        "model": "iPhone15,2",
        "topic": fleet.topic,
        "push_token": device.push_token_hex,
        "push_magic": device.push_magic,
    }


def test_inventory_file_reads_back_without_errors() -> None:
    fleet = SimFleet(50, seed=8)
    report = read_inventory(fleet.inventory_jsonl(), fmt="jsonl")
    assert report.errors == ()
    assert [r.udid for r in report.records] == [d.udid for d in fleet]
    assert report.records[3].push_token == fleet.devices[3].push_token_hex


def test_shared_key_identities_are_distinct_trusted_certificates() -> None:
    fleet = SimFleet(3, seed=1, mix=FleetMix(1, 0, 0, 0, 0, 0))
    trust = DeviceCATrust([fleet.ca.cert])
    certs = [d.identity.cert for d in fleet]
    assert len({c.serial_number for c in certs}) == 3
    for device, cert in zip(fleet, certs, strict=True):
        trust.check(cert)
        assert device.udid in cert.subject.rfc4514_string()
    own = SimFleet(2, seed=1, shared_key=False)
    keys = [d.identity.key.public_key().public_numbers() for d in own]
    assert keys[0] != keys[1]


def _queue_installs(server: MiniMDM, fleet: SimFleet, profile: bytes) -> None:
    template = install_provisioning_profile(profile)
    for device in fleet:
        server.enqueue(device.udid, template)


def test_enroll_and_sessions_end_to_end_with_the_lean_client(
    mdm_server: MiniMDM, device_ca: Issued, enterprise_profile: bytes
) -> None:
    fleet = SimFleet(40, seed=9, ca=device_ca, keep_results=True)

    async def main() -> None:
        async with Http11Client(mdm_server.base_url, connections=4) as transport:
            enrolled = await fleet.enroll_all(transport, concurrency=8)
            assert all(r.ok for r in enrolled)
            _queue_installs(mdm_server, fleet, enterprise_profile)
            first = await fleet.run_sessions(None, transport, concurrency=8)
            assert all(r.ok for r in first)
            second = await fleet.run_sessions(None, transport, concurrency=8)
            assert all(r.ok for r in second)

    asyncio.run(main())

    tokens = [m for m in mdm_server.checkins if isinstance(m, TokenUpdate)]
    assert len(tokens) == 40 and mdm_server.refusals == []
    statuses = mdm_server.final_statuses()
    for device in fleet:
        expected = {
            "ok": [Status.ACKNOWLEDGED],
            "notnow_then_ok": [Status.NOT_NOW, Status.ACKNOWLEDGED],
            "error": [Status.ERROR],
            "format_error": [Status.COMMAND_FORMAT_ERROR],
            "offline": [],
        }[device.behavior.mode]
        assert statuses.get(device.udid, []) == expected, device
    summary = fleet.summary()
    assert summary["enrolled"] == 40
    assert summary["counters"]["installs"] == fleet.behavior_counts()["ok"] + 2
    assert fleet.stats.sessions == len(fleet.results) == 2 * len(fleet.online())


def test_non_200_ends_the_session_and_is_counted(mdm_server: MiniMDM, device_ca: Issued) -> None:
    fleet = SimFleet(3, seed=1, ca=device_ca, mix=FleetMix(1, 0, 0, 0, 0, 0))
    mdm_server.fail_connect_with = 500

    async def main() -> None:
        async with HttpxTransport(mdm_server.base_url) as transport:
            results = await fleet.run_sessions(None, transport)
        assert [r.http_status for r in results] == [500, 500, 500]

    asyncio.run(main())
    assert fleet.stats.http_statuses == {500: 3}


def test_pushes_from_another_thread_wake_devices(
    mdm_server: MiniMDM, device_ca: Issued, enterprise_profile: bytes
) -> None:
    fleet = SimFleet(30, seed=4, ca=device_ca, notnow_repoll_s=0.05)
    transport = Http11Client(mdm_server.base_url, connections=4)
    loop = fleet.start_in_thread(transport)
    try:
        assert loop.is_running()
        assert all(r.ok for r in fleet.submit(fleet.enroll_all(transport)).result(30))
        _queue_installs(mdm_server, fleet, enterprise_profile)

        woken: list[bool] = []

        def pusher() -> None:  # the APNs stand-in's server thread, in real use
            for device in fleet:
                payload = {"mdm": device.push_magic}
                woken.append(fleet.would_wake(device.push_token_hex, payload))
                fleet.wake(device.push_token_hex, payload)
            fleet.wake("00" * 32, {"mdm": "x"})
            assert not fleet.would_wake(fleet.devices[0].push_token_hex, {"mdm": "wrong magic"})
            fleet.wake(fleet.devices[0].push_token_hex, {"mdm": "wrong magic"})

        thread = threading.Thread(target=pusher)
        thread.start()
        thread.join()
        assert woken.count(True) == len(fleet.online())

        # NotNow devices poll again by themselves (notnow_repoll_s) and then acknowledge.
        deadline = time.monotonic() + 10
        notnow = [d for d in fleet if d.behavior.mode == "notnow_then_ok"]
        while time.monotonic() < deadline:
            fleet.submit(fleet.wait_idle(10)).result(15)
            if all(d.counters.installs == 1 for d in notnow):
                break
            time.sleep(0.02)
    finally:
        fleet.stop()
    assert not loop.is_running()

    statuses = mdm_server.final_statuses()
    for device in fleet:
        got = statuses.get(device.udid, [])
        if device.behavior.mode in ("ok", "notnow_then_ok"):
            assert got[-1] is Status.ACKNOWLEDGED, device
        elif device.is_offline:
            assert got == []
    stats = fleet.stats
    assert stats.wakes_unknown_token == 1 and stats.wakes_wrong_magic == 1
    assert stats.wakes_ignored_offline == len(fleet) - len(fleet.online())
    assert stats.repolls == len(notnow)


def test_a_wake_during_a_session_runs_one_more_session(device_ca: Issued) -> None:
    fleet = SimFleet(1, seed=1, ca=device_ca, mix=FleetMix(1, 0, 0, 0, 0, 0))
    device = fleet.devices[0]

    class SlowTransport:
        calls = 0

        async def put(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            self.calls += 1
            await asyncio.sleep(0.05)
            return 200, b""

    async def main() -> SlowTransport:
        transport = SlowTransport()
        fleet.attach(transport)
        for _ in range(4):  # all four fold into the first session (it has not started yet)
            fleet.wake(device.push_token_hex)
        await asyncio.sleep(0.01)
        fleet.wake(device.push_token_hex)  # during the session: one more session afterwards
        await fleet.wait_idle(5)
        return transport

    transport = asyncio.run(main())
    assert transport.calls == 2
    assert fleet.stats.sessions == 2
    assert fleet.stats.wakes == 5
    assert fleet.stats.wakes_coalesced == 2


def test_wake_before_attach_is_ignored() -> None:
    fleet = SimFleet(2, seed=1)
    assert not fleet.would_wake(fleet.devices[0].push_token_hex)
    fleet.wake(fleet.devices[0].push_token_hex)
    assert fleet.stats.wakes_unattached == 1


def test_generated_device_matches_its_fleet_index(device_ca: Issued) -> None:
    fleet = SimFleet(5, seed=3, ca=device_ca)
    again = SimDevice.generate(4, seed=3, ca=device_ca)
    assert fleet.devices[4].udid == again.udid
