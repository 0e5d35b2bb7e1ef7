"""Devices enrolled in the MDM server before rollout was set up: ``rollout devices sync`` pulls
MicroMDM's device list into the registry (NanoMDM offers none: an inventory import instead),
and when the server wakes the devices they are targeted and get the profile through it without
rollout ever having seen their TokenUpdate."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rollout.config import Settings
from rollout.delivery import MicroMDMClient, NanoMDMClient
from rollout.delivery.server import MDMServerError, NoDeviceListError
from rollout.delivery.sync import inventory_of
from rollout.ledger import Ledger
from rollout.operations import OperationError, create_rollout, plan_rollout
from rollout.spec import RolloutSpec, StageSpec, TargetSpec
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer
from tests.cli.support import rollout
from tests.conftest import TEST_LEDGER_KEY
from tests.delivery.conftest import API_KEY, SECRET, Beside
from tests.delivery.test_nanomdm import ALL_OK
from tests.support import add_profile, checked_states

ONE_STAGE = (StageSpec(share=1.0),)
TOKEN = "operator-token-0123456789abcdef"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(ledger_url: str, server: str, url: str, key: str = API_KEY) -> dict[str, str]:
    env = {
        "ROLLOUT_DELIVERY": server,
        f"ROLLOUT_{server.upper()}_URL": url,
        f"ROLLOUT_{server.upper()}_API_KEY": key,
        "ROLLOUT_WEBHOOK_SECRET": SECRET,
    }
    if ledger_url.startswith("postgres"):
        env["ROLLOUT_LEDGER_KEYS"] = TEST_LEDGER_KEY
    return env


def _registry(ledger: Ledger, udids: list[str]) -> dict[str, str]:
    with ledger.registry() as store:
        infos = [store.get(u) for u in udids]
    return {i.enrollment_id: i.state for i in infos if i is not None}


def _spec(world: Beside) -> RolloutSpec:
    entry = add_profile(world.ledger, world.clock.now())
    return RolloutSpec(
        profile=entry.uuid,
        targets=TargetSpec(keys=tuple(d.udid for d in world.fleet)),
        stages=ONE_STAGE,
        verify=True,
    )


def _deliver_without_push_data(world: Beside) -> None:
    """With the server waking the devices, a rollout over devices rollout holds no push data
    for runs to the end, every device installing the profile from the server's queue; without
    it, planning refuses them as never pushable."""
    spec = _spec(world)
    with pytest.raises(OperationError, match="never_pushable"):
        plan_rollout(world.ledger, spec, world.clock.now())
    world.policy = dataclasses.replace(world.policy, server_wakes=True)
    summary = create_rollout(
        world.ledger, spec, actor="test", now=world.clock.now(), start=True, server_wakes=True
    )
    rid = summary.rollout.id
    assert world.run(rid) == "completed"
    n = len(world.fleet.devices)
    assert checked_states(world.ledger, rid) == {"verified": n}
    assert sum(1 for d in world.fleet if d.installed) == n
    assert world.nanomdm.counts.pushes >= n  # the server woke them


def test_sync_pulls_micromdms_devices_and_they_get_the_profile_through_it(
    beside: Callable[..., Beside], ledger_url: str, tmp_path: Path
) -> None:
    world = beside(devices=8, mix=ALL_OK, server="micromdm", webhook_at_enrollment=False)
    udids = [d.udid for d in world.fleet]
    assert _registry(world.ledger, udids) == {}  # rollout saw none of their enrollments
    # a device Apple's Device Enrollment list assigned that never enrolled is listed too
    world.nanomdm.listed_only.append({"serial_number": "C02DEPONLY01", "model": "iPhone15,2"})
    world.nanomdm.listed_only.append({"udid": "00008030-0000DEADBEEF0001", "enrolled": False})
    env = _env(ledger_url, "micromdm", world.nanomdm.base_url)

    synced = rollout("devices", "sync", "--json", home=tmp_path, db_url=ledger_url, env=env)
    assert synced.returncode == 0, synced.stderr
    out = json.loads(synced.stdout)
    assert out == {
        "server": world.nanomdm.base_url,
        "listed": 10,
        "not_enrolled": 2,
        "valid": 8,
        "invalid": 0,
        "created": 8,
        "updated": 0,
        "errors": [],
    }
    assert _registry(world.ledger, udids) == dict.fromkeys(udids, "imported")
    with world.ledger.registry() as store:
        first = store.get(udids[0])
        push = store.push_data(udids[0])
    device = world.fleet.devices[0]
    assert first is not None and first.serial_number == device.serial
    assert first.platform == device.platform and first.os_version == device.os_version
    assert push is None or push.token is None  # no push data was taken from the list

    again = rollout("devices", "sync", "--json", home=tmp_path, db_url=ledger_url, env=env)
    assert json.loads(again.stdout)["updated"] == 8 and json.loads(again.stdout)["created"] == 0

    # the CLI and the API plan with who wakes the devices, as the settings say
    uuid = add_profile(world.ledger, world.clock.now()).uuid
    listed = tmp_path / "devices.txt"
    listed.write_text("\n".join(udids) + "\n")
    argv = ("rollouts", "plan", "--profile", uuid, "--devices", str(listed), "--json")
    planned = rollout(*argv, home=tmp_path, db_url=ledger_url, env=env)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["eligible"] == 8
    assert json.loads(planned.stdout)["excluded"] == {}
    builtin = rollout(*argv, home=tmp_path, db_url=ledger_url, env={})
    assert builtin.returncode == 1 and "8 never_pushable" in builtin.stderr
    settings = Settings(
        home=tmp_path,
        delivery="micromdm",
        micromdm_url=world.nanomdm.base_url,
        micromdm_api_key=API_KEY,
        webhook_secret=SECRET,
        api_token=TOKEN,
        identity_mode="off",
    )
    web = BackgroundServer(create_app(settings, world.ledger, world.clock)).start()
    try:
        answer = httpx.post(
            f"{web.base_url}/api/v1/rollouts/plan",
            json={"profile": uuid, "targets": {"devices": udids}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    finally:
        web.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["eligible"] == 8

    _deliver_without_push_data(world)


def test_beside_nanomdm_inventory_devices_get_the_profile_when_nanomdm_pushes(
    beside: Callable[..., Beside], ledger_url: str, tmp_path: Path
) -> None:
    world = beside(devices=6, mix=ALL_OK, webhook_at_enrollment=False)
    env = _env(ledger_url, "nanomdm", world.nanomdm.base_url)
    refused = rollout("devices", "sync", home=tmp_path, db_url=ledger_url, env=env)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "offers no list" in lines[0], refused.stderr
    assert "TokenUpdate" in lines[0] and "rollout devices import" in lines[0]

    inventory = tmp_path / "fleet.csv"
    inventory.write_text("udid,platform\n" + "".join(f"{d.udid},iOS\n" for d in world.fleet))
    imported = rollout("devices", "import", str(inventory), home=tmp_path, db_url=ledger_url,
                       env=env)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    _deliver_without_push_data(world)


def test_sync_refusals_are_one_line_naming_the_server_and_never_the_key(
    beside: Callable[..., Beside], ledger_url: str, tmp_path: Path
) -> None:
    world = beside(devices=2, mix=ALL_OK, server="micromdm", webhook_at_enrollment=False)
    closed = f"http://127.0.0.1:{_closed_port()}"
    cases = {
        "unreachable": _env(ledger_url, "micromdm", closed),
        "refused the API key": _env(
            ledger_url, "micromdm", world.nanomdm.base_url, key="wrong-key-0123"
        ),
    }
    for why, env in cases.items():
        got = rollout("devices", "sync", home=tmp_path, db_url=ledger_url, env=env)
        lines = got.stderr.strip().splitlines()
        assert got.returncode == 1 and len(lines) == 1, got.stderr
        assert env["ROLLOUT_MICROMDM_URL"] in lines[0]
        assert env["ROLLOUT_MICROMDM_API_KEY"] not in got.stderr + got.stdout
        if why == "refused the API key":
            assert "refused the API key" in lines[0]
        else:
            assert "no answer" in lines[0]
    builtin = rollout("devices", "sync", home=tmp_path, db_url=ledger_url, env={})
    assert builtin.returncode == 1 and "builtin" in builtin.stderr
    assert _registry(world.ledger, [d.udid for d in world.fleet]) == {}  # nothing written


def test_a_device_list_routed_as_post_is_read_too(beside: Callable[..., Beside]) -> None:
    world = beside(devices=3, mix=ALL_OK, server="micromdm", webhook_at_enrollment=False)
    world.nanomdm.device_list_methods = ("POST",)
    client = MicroMDMClient(world.nanomdm.base_url, API_KEY)
    try:
        listed = client.devices()
    finally:
        client.close()
    assert sorted(d.udid for d in listed) == sorted(d.udid for d in world.fleet)
    assert all(d.enrolled for d in listed)
    assert world.nanomdm.counts.device_lists == 1  # the GET was answered 405, then the POST


def test_bad_entries_of_the_list_are_refused_with_their_reason_and_the_rest_kept() -> None:
    from rollout.delivery.server import ListedDevice

    found = inventory_of(
        [
            ListedDevice("00008030-001A2B3C4D5E6F01", True, product_name="iPad13,18"),
            ListedDevice("not-a-udid", True),
            ListedDevice("00008030-001A2B3C4D5E6F01", True),  # twice
            ListedDevice("00008030-001A2B3C4D5E6F02", False),
        ]
    )
    assert [r.udid for r in found.records] == ["00008030-001A2B3C4D5E6F01"]
    assert found.records[0].platform == "iPadOS"
    assert [u for u, _ in found.refused] == ["not-a-udid", "00008030-001A2B3C4D5E6F01"]
    assert "not a UDID" in found.refused[0][1]
    assert found.not_enrolled == 1


def test_nanomdm_has_no_device_list(beside: Callable[..., Beside]) -> None:
    world = beside(devices=1, mix=ALL_OK)
    client = NanoMDMClient(world.nanomdm.base_url, API_KEY)
    try:
        with pytest.raises(NoDeviceListError):
            client.devices()
        assert isinstance(NoDeviceListError("x"), MDMServerError)
    finally:
        client.close()


def test_the_server_wakes_unless_rollout_pushes_itself(tmp_path: Path) -> None:
    base = {"home": tmp_path, "webhook_secret": SECRET}
    nano = {"nanomdm_url": "http://n.example", "nanomdm_api_key": "k" * 16}
    micro = {"micromdm_url": "http://m.example", "micromdm_api_key": "k" * 16}
    assert not Settings(**base).engine_policy().server_wakes
    assert Settings(**base, delivery="nanomdm", **nano).engine_policy().server_wakes
    assert Settings(**base, delivery="micromdm", **micro).engine_policy().server_wakes
    assert (
        not Settings(**base, delivery="nanomdm", nanomdm_push="rollout", **nano)
        .engine_policy()
        .server_wakes
    )
    assert Settings(**base, delivery="micromdm", **micro).renewal_policy().server_wakes
