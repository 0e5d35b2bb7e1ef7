"""The fan-out bench's fleet in the ledger: N pushable devices, numbered, and a started rollout
to all of them (set up through the ledger's API before timing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rollout.bench.apns_servers import TOPIC
from rollout.clock import SYSTEM_CLOCK
from rollout.inventory import DeviceRecord
from rollout.ledger import Ledger
from rollout.operations import create_rollout
from rollout.spec import ONE_STAGE, RolloutSpec, StageSpec, TargetSpec

IMPORT_CHUNK = 20_000


def udid(n: int) -> str:
    """The bench device number ``n``'s UDID (also its enrollment id)."""
    return f"00008030-{n:016X}"


def token(n: int) -> str:
    """The bench device number ``n``'s push token: the number itself, so no map is kept."""
    return f"{n:064x}"


def seed_rollout(ledger: Ledger, size: int, stages: Sequence[StageSpec] = ONE_STAGE) -> int:
    """Import ``size`` pushable devices and start a rollout to all of them, in ``stages``
    (automatic promotion behind the default gate); its id."""
    from rollout.profiles import parse_profile
    from rollout.sim.profiles import make_apple_like_chain, make_profile

    chain = make_apple_like_chain(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    data = make_profile(chain, name="Fan-out bench")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    for start in range(0, size, IMPORT_CHUNK):
        records = [
            DeviceRecord(
                line=i + 1,
                enrollment_id=udid(i),
                udid=udid(i),
                enrollment_type="device",
                platform="iOS",
                topic=TOPIC,
                push_token=token(i),
                push_magic=f"magic-{i}",
            )
            for i in range(start, min(size, start + IMPORT_CHUNK))
        ]
        with ledger.registry() as store:
            store.import_devices(records, SYSTEM_CLOCK.now())
    with ledger.library() as library:
        library.add(profile, data, SYSTEM_CLOCK.now())
    spec = RolloutSpec(
        profile=profile.uuid,
        targets=TargetSpec(everything=True),
        name="fan-out bench",
        stages=tuple(stages),
        verify=False,
    )
    summary = create_rollout(ledger, spec, actor="bench", now=SYSTEM_CLOCK.now(), start=True)
    return summary.rollout.id
