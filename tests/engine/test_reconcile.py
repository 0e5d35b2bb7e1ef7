"""Reconciling connect reports: the command queue, results, NotNow, refusals, identity, and
the installed-profile facts devices report, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
import plistlib

from rollout.clock import ManualClock
from rollout.enrollment import IdentityPolicy
from rollout.inventory import read_inventory
from rollout.ledger import Ledger
from rollout.mdm import parse_result, provisioning_profile_list
from rollout.reconcile import Report
from rollout.states import TargetState
from rollout.transitions import move
from tests.engine.support import (
    CERT,
    IMPORTED,
    STALE,
    enrolled,
    queued_rollout,
    report,
    state,
)
from tests.support import checked_states, udid


def test_idle_gets_the_command_and_acknowledged_finishes_the_target(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    rid, cmds, _ = queued_rollout(ledger, clock, [1])
    [out] = report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert out.refusal is None and out.served is not None
    assert out.served.command_uuid == cmds[dev] and out.served.rollout_id == rid
    assert out.served.body is None  # rendered from the rollout's profile by the caller
    assert state(ledger, rid, dev) == "delivered"
    [out] = report(
        ledger, clock, Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    )
    assert out.refusal is None and out.served is None
    assert checked_states(ledger, rid) == {"acknowledged": 1}


def test_duplicate_late_and_out_of_order_results_change_nothing(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    rid, cmds, _ = queued_rollout(ledger, clock, [1])
    report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    ack = Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    report(ledger, clock, ack, ack)  # twice in one batch
    report(ledger, clock, ack)  # and again later
    err = Report(
        udid(1),
        "Error",
        command_uuid=cmds[dev],
        error_chain=({"ErrorCode": 1, "ErrorDomain": "x"},),
        cert_sha256=CERT[1],
    )
    report(ledger, clock, err)  # out of order after the acknowledgement
    assert state(ledger, rid, dev) == "acknowledged"
    with ledger.checkin() as store:
        assert len(store.events(kind="mdm.result")) == 1
    assert checked_states(ledger, rid) == {"acknowledged": 1}


def test_an_idle_and_the_answer_in_one_batch_never_serve_the_answered_command(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    rid, cmds, _ = queued_rollout(ledger, clock, [1])
    outs = report(
        ledger,
        clock,
        Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1]),
        Report(udid(1), "Idle", cert_sha256=CERT[1]),
    )
    assert [o.served for o in outs] == [None, None]
    assert checked_states(ledger, rid) == {"acknowledged": 1}


def test_notnow_is_not_served_again_in_the_same_session_but_is_on_idle(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 2)
    rid, cmds, _ = queued_rollout(ledger, clock, [2])
    report(ledger, clock, Report(udid(2), "Idle", cert_sha256=CERT[2]))
    [out] = report(
        ledger, clock, Report(udid(2), "NotNow", command_uuid=cmds[dev], cert_sha256=CERT[2])
    )
    assert out.served is None  # no loop within the session
    with ledger.rollouts() as store:
        t = store.targets(rid, [dev])[dev]
    assert t.state == "deferred" and t.notnow_count == 1
    assert t.next_push_at == clock.now() + dt.timedelta(minutes=1)  # the policy's back-off
    [out] = report(ledger, clock, Report(udid(2), "Idle", cert_sha256=CERT[2]))
    assert out.served is not None and out.served.command_uuid == cmds[dev]
    report(
        ledger, clock, Report(udid(2), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[2])
    )
    assert checked_states(ledger, rid) == {"acknowledged": 1}


def test_error_keeps_the_error_chain(clock: ManualClock, ledger: Ledger) -> None:
    [dev] = enrolled(ledger, clock, 3)
    rid, cmds, _ = queued_rollout(ledger, clock, [3])
    chain = (
        {
            "ErrorCode": 25001,
            "ErrorDomain": "MCProvisioningProfileErrorDomain",
            "LocalizedDescription": "cannot install",
        },
    )
    report(
        ledger,
        clock,
        Report(udid(3), "Error", command_uuid=cmds[dev], error_chain=chain, cert_sha256=CERT[3]),
    )
    with ledger.rollouts() as store:
        t = store.targets(rid, [dev])[dev]
    assert t.state == "failed"
    assert t.reason == "MCProvisioningProfileErrorDomain:25001"
    assert t.error_chain == [dict(chain[0])]


def test_unknown_and_foreign_command_uuids_are_anomalies(
    clock: ManualClock, ledger: Ledger
) -> None:
    _, b = enrolled(ledger, clock, 4, 5)
    rid, cmds, _ = queued_rollout(ledger, clock, [4, 5])
    outs = report(
        ledger,
        clock,
        Report(udid(4), "Acknowledged", command_uuid="NO-SUCH-COMMAND", cert_sha256=CERT[4]),
        Report(udid(4), "Acknowledged", command_uuid=cmds[b], cert_sha256=CERT[4]),
    )
    assert [o.refusal for o in outs] == [None, None]
    assert state(ledger, rid, b) == "queued"
    with ledger.checkin() as store:
        reasons = sorted(e.data["reason"] for e in store.events(kind="mdm.anomaly"))
    assert reasons == ["foreign_command", "unknown_command"]


def test_wrong_certificate_and_unknown_devices_are_refused(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 6)
    rid, _, _ = queued_rollout(ledger, clock, [6])
    outs = report(
        ledger,
        clock,
        Report(udid(6), "Idle", cert_sha256=CERT[7]),
        Report(udid(6), "Idle", cert_sha256=None),
        Report(udid(99), "Idle", cert_sha256=CERT[9]),
    )
    assert [o.refusal for o in outs] == ["identity_mismatch", "no_identity", "unknown_enrollment"]
    assert all(o.served is None for o in outs)
    assert state(ledger, rid, dev) == "queued"
    with ledger.checkin() as store:
        refused = sorted(e.data["reason"] for e in store.events(kind="mdm.refused"))
    assert refused == ["identity_mismatch", "no_identity", "unknown_enrollment"]


def test_a_migrated_device_is_bound_on_first_sight_only_when_asked(
    clock: ManualClock, ledger: Ledger
) -> None:
    records = read_inventory(f"udid\n{udid(8)}\n".encode(), fmt="csv").records
    with ledger.registry() as store:
        store.import_devices(records, clock.now())
    [out] = report(ledger, clock, Report(udid(8), "Idle", cert_sha256=CERT[8]))
    assert out.refusal == "unbound_device"
    relaxed = IdentityPolicy(bind_on_first_sight=True)
    [out] = report(ledger, clock, Report(udid(8), "Idle", cert_sha256=CERT[8]), identity=relaxed)
    assert out.refusal is None
    [out] = report(ledger, clock, Report(udid(8), "Idle", cert_sha256=CERT[8]))  # now strict
    assert out.refusal is None
    [out] = report(ledger, clock, Report(udid(8), "Idle", cert_sha256=CERT[7]), identity=relaxed)
    assert out.refusal == "identity_mismatch"


def test_a_batch_of_many_devices_is_reconciled_in_one_call(
    clock: ManualClock, ledger: Ledger
) -> None:
    devs = enrolled(ledger, clock, *range(10))
    rid, cmds, _ = queued_rollout(ledger, clock, list(range(10)))
    outs = report(ledger, clock, *[Report(udid(n), "Idle", cert_sha256=CERT[n]) for n in range(10)])
    assert [o.served.command_uuid for o in outs if o.served] == [cmds[d] for d in devs]
    statuses = ["Acknowledged"] * 7 + ["NotNow", "Error", "CommandFormatError"]
    report(
        ledger,
        clock,
        *[
            Report(udid(n), statuses[n], command_uuid=cmds[devs[n]], cert_sha256=CERT[n])
            for n in range(10)
        ],
    )
    assert checked_states(ledger, rid) == {"acknowledged": 7, "deferred": 1, "failed": 2}


def facts(ledger: Ledger, device_id: int) -> dict[str, str]:
    with ledger.registry() as store:
        return {f.profile_uuid: f.source for f in store.installed(device_id)}


def test_an_acknowledged_install_records_the_rollouts_profile(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    _, cmds, profile = queued_rollout(ledger, clock, [1])
    report(ledger, clock, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    report(
        ledger, clock, Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    )
    assert facts(ledger, dev) == {profile: "rollout"}


def test_a_profile_list_answer_replaces_what_devices_said_and_keeps_imports(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 2)
    inventory = f"udid,profiles\n{udid(2)},{IMPORTED}\n".encode()
    with ledger.registry() as store:
        store.import_devices(read_inventory(inventory).records, clock.now())
    with ledger.checkin() as store:
        for uuid in ("LIST-0", "LIST-1"):
            body = provisioning_profile_list(True).render(uuid)
            store.enqueue(dev, uuid, "ProvisioningProfileList", body, clock.now())
    # an earlier list named a profile since removed
    first = {"UUID": STALE, "Name": "Old"}
    answer0 = {
        "UDID": udid(2),
        "CommandUUID": "LIST-0",
        "Status": "Acknowledged",
        "ProvisioningProfileList": [first],
    }
    report(ledger, clock, Report.from_result(parse_result(plistlib.dumps(answer0)), CERT[2]))
    assert facts(ledger, dev) == {STALE: "profile_list", IMPORTED: "import"}
    item = {
        "UUID": "ABCDEF01-2345-6789-ABCD-EF0123456789",
        "Name": "Field App",
        "ExpiryDate": dt.datetime(2027, 11, 1, 12, 0),
    }
    answer1 = {**answer0, "CommandUUID": "LIST-1", "ProvisioningProfileList": [item]}
    report(ledger, clock, Report.from_result(parse_result(plistlib.dumps(answer1)), CERT[2]))
    assert facts(ledger, dev) == {
        "abcdef01-2345-6789-abcd-ef0123456789": "profile_list",
        IMPORTED: "import",
    }
    with ledger.registry() as store:
        [listed] = [f for f in store.installed(dev) if f.source == "profile_list"]
    assert listed.expires_at == dt.datetime(2027, 11, 1, 12, 0, tzinfo=dt.UTC)


def test_moves_of_one_target_in_a_batch_compose_in_order(
    clock: ManualClock, ledger: Ledger
) -> None:
    [dev] = enrolled(ledger, clock, 1)
    rid, _, _ = queued_rollout(ledger, clock, [1])
    with ledger.rollouts() as store:
        tid = store.targets(rid, [dev])[dev].id
    now = clock.now()
    with ledger.checkin() as store:
        applied = store.move(
            [
                move(tid, TargetState.DELIVERED, delivered_at=now),
                move(tid, TargetState.ACKNOWLEDGED, finished_at=now),
                move(tid, TargetState.DELIVERED),  # refused: not from acknowledged
            ],
            now,
        )
    assert [(a.before, a.after) for a in applied] == [("queued", "acknowledged")]
    with ledger.rollouts() as store:
        t = store.targets(rid, [dev])[dev]
    assert t.state == "acknowledged"
    assert checked_states(ledger, rid) == {"acknowledged": 1}
