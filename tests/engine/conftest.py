"""Engine fixtures: an APNs stand-in, a push client for it, and a fleet in the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from rollout.apns import PushClient, PushConfig, load_pem
from rollout.clock import ManualClock
from rollout.inventory import read_inventory
from rollout.ledger import db
from rollout.ledger.devices import device_ids, import_devices
from rollout.ledger.rollouts import create_rollout, start_rollout
from rollout.sim.apns_server import ApnsStandIn
from tests.helpers import seed_profile, target_states

TOPIC = "com.apple.mgmt.External.0c0ffee0-1111-2222-3333-444455556666"


@pytest.fixture
def clock() -> ManualClock:
    """The one clock of an engine test: moved forward by the test, never slept on."""
    return ManualClock()


@pytest.fixture(scope="session")
def standin() -> Iterator[ApnsStandIn]:
    with ApnsStandIn(topic=TOPIC) as server:
        yield server


@pytest.fixture
def apns(standin: ApnsStandIn) -> Iterator[PushClient]:
    standin.reset()
    issued = standin.issue_push_certificate(TOPIC)
    config = PushConfig(
        base_url=standin.base_url,
        ca_file=standin.ca_file,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=3.0,
        max_attempts=4,
    )
    client = PushClient(load_pem(issued.cert_pem() + issued.key_pem()), config)
    try:
        yield client
    finally:
        client.close()


def udid(n: int) -> str:
    return f"00008030-{n:016X}"


def token(n: int) -> str:
    return f"{n:064x}"


@dataclass
class Fleet:
    engine: Engine
    rollout_id: int
    devices: dict[int, int]  # n -> device id


def make_fleet(engine: Engine, n: int, *, no_token: set[int] = frozenset()) -> Fleet:  # type: ignore[assignment]
    lines = ["udid,push_token,push_magic,topic"]
    for i in range(n):
        if i in no_token:
            lines.append(f"{udid(i)},,,")
        else:
            lines.append(f"{udid(i)},{token(i)},magic-{i},{TOPIC}")
    report = read_inventory(("\n".join(lines) + "\n").encode(), fmt="csv")
    assert not report.errors
    with db.transaction(engine) as s:
        import_devices(s, report.records)
        ids = device_ids(s, [udid(i) for i in range(n)])
        profile = seed_profile(s)
        r = create_rollout(s, name="t", profile_uuid=profile.uuid, device_ids=list(ids.values()))
        start_rollout(s, r.id)
        return Fleet(engine, r.id, {i: ids[udid(i)] for i in range(n)})


def states(engine: Engine, rollout_id: int) -> dict[str, int]:
    """The kept counters, checked against a GROUP BY of the targets."""
    with db.transaction(engine) as s:
        return target_states(s, rollout_id)
