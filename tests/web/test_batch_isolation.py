"""The group-commit writer on its own: a report that cannot be stored fails alone, its batch
neighbours are stored and answered, and the refusals decided in the failed attempt are counted
once.

Reports reach the writer already parsed and bounded when they come through the endpoint; a
webhook receiver hands ``Report`` values in directly, so the writer's own guarantee is tested
with one that no JSON encoder takes."""

from __future__ import annotations

import asyncio
import datetime as dt

from rollout.clock import ManualClock
from rollout.enrollment import IdentityPolicy
from rollout.ledger import Ledger
from rollout.policy import EnginePolicy
from rollout.reconcile import Report
from rollout.web.batcher import LedgerBatcher
from rollout.web.refusals import RefusalLimits, RefusalLog
from tests.engine.support import CERT, enrolled, queued_rollout, state
from tests.support import udid


def test_a_report_that_cannot_be_stored_fails_alone_and_refusals_count_once(
    clock: ManualClock, ledger: Ledger
) -> None:
    devices = enrolled(ledger, clock, 1, 2, 3, 4)
    rid, uuids, _ = queued_rollout(ledger, clock, [1, 2, 3, 4])
    refusals = RefusalLog(RefusalLimits(window=dt.timedelta(seconds=60)))
    batcher = LedgerBatcher(
        ledger,
        identity=IdentityPolicy(),
        policy=EnginePolicy(),
        clock=clock,
        refusals=refusals,
        linger_s=0.2,
    )
    good = [
        Report(udid(n), "Acknowledged", command_uuid=uuids[dev], cert_sha256=CERT[n])
        for n, dev in zip((1, 2, 3), devices, strict=False)
    ]
    # an acknowledged result whose command-specific keys no JSON encoder takes
    unstorable = Report(
        udid(4), "Acknowledged", command_uuid=uuids[devices[3]], cert_sha256=CERT[4],
        extra={"Tags": {"a", "set"}},
    )  # fmt: skip
    stranger = Report(udid(9), "Idle", cert_sha256=CERT[9])  # refused: nobody enrolled it

    async def send() -> list[str | None]:
        # a first lone report makes the writer linger for the rest: they form one batch
        await batcher.connect(Report(udid(1), "Idle", cert_sha256=CERT[1]))
        await batcher.connect(Report(udid(2), "Idle", cert_sha256=CERT[2]))
        answers = await asyncio.gather(*(batcher.connect(r) for r in [*good, unstorable, stranger]))
        return [a.outcome.refusal for a in answers]

    batcher.start()
    try:
        outcomes = asyncio.run(send())
    finally:
        batcher.stop()
    assert outcomes == [None, None, None, "unstorable", "unknown_enrollment"]
    assert batcher.split_batches == 1
    for dev in devices[:3]:
        assert state(ledger, rid, dev) == "acknowledged"
    assert state(ledger, rid, devices[3]) == "queued"  # its result not stored: sent again later
    assert refusals.counts() == {"unstorable": 1, "unknown_enrollment": 1}
    with ledger.checkin() as store:
        refused = store.events(kind="mdm.refused")
    assert sorted(e.data["reason"] for e in refused) == ["unknown_enrollment", "unstorable"]
    assert all(e.data["count"] == 1 for e in refused)
