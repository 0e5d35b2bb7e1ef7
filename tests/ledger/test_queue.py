"""The command queue and reconciliation, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from rollout.ledger import db
from rollout.ledger.enrollment import Authentication, authenticate, check_out, token_update
from rollout.ledger.events import list_events
from rollout.ledger.models import CommandRow, DeviceRow, TargetRow
from rollout.ledger.queue import IdentityPolicy, Report, process_reports
from rollout.ledger.rollouts import create_rollout, queue_commands, start_rollout
from tests.helpers import seed_profile, target_states

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
PROFILE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
CERT = {n: f"{n:064x}" for n in range(10)}


def udid(n: int) -> str:
    return f"00008020-{n:016X}"


def enroll(engine: Engine, n: int) -> int:
    with db.transaction(engine) as s:
        auth = Authentication(udid(n), udid(n), "device", "com.apple.mgmt.test", {})
        res = authenticate(s, auth, CERT[n])
        assert res.status_code == 200
        res = token_update(
            s,
            udid(n),
            token_hex="ab" * 32,
            push_magic=f"magic-{n}",
            topic="com.apple.mgmt.test",
            cert_sha256=CERT[n],
        )
        assert res.status_code == 200 and res.device_id is not None
        return res.device_id


def rollout_for(engine: Engine, device_ids: list[int]) -> tuple[int, dict[int, str]]:
    with db.transaction(engine) as s:
        seed_profile(s, PROFILE)
        r = create_rollout(s, name="t", profile_uuid=PROFILE, device_ids=device_ids)
        start_rollout(s, r.id)
        targets = s.scalars(select(TargetRow.id).where(TargetRow.rollout_id == r.id)).all()
        queue_commands(s, r.id, targets)
        by_device = {
            t.device_id: t.command_uuid
            for t in s.scalars(select(TargetRow).where(TargetRow.rollout_id == r.id))
        }
        assert all(by_device.values())
        return r.id, {k: v for k, v in by_device.items() if v}


def report(engine: Engine, *reports: Report) -> list:  # type: ignore[type-arg]
    with db.transaction(engine) as s:
        return process_reports(s, list(reports), notnow_delay=lambda n: dt.timedelta(minutes=n))


def target_state(engine: Engine, rollout_id: int, device_id: int) -> str:
    with db.transaction(engine) as s:
        return (
            s.scalar(
                select(TargetRow.state).where(
                    TargetRow.rollout_id == rollout_id, TargetRow.device_id == device_id
                )
            )
            or ""
        )


def assert_counters_match(engine: Engine, rollout_id: int) -> dict[str, int]:
    with db.transaction(engine) as s:
        return target_states(s, rollout_id)


def test_idle_gets_the_command_and_acknowledged_finishes_the_target(engine: Engine) -> None:
    dev = enroll(engine, 1)
    rid, cmds = rollout_for(engine, [dev])
    [out] = report(engine, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert out.status_code == 200 and out.served is not None
    assert out.served.command_uuid == cmds[dev] and out.served.rollout_id == rid
    assert out.served.body is None  # rendered from the rollout's template by the caller
    assert target_state(engine, rid, dev) == "delivered"

    [out] = report(
        engine, Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    )
    assert out.status_code == 200 and out.served is None
    assert target_state(engine, rid, dev) == "acknowledged"
    assert assert_counters_match(engine, rid) == {"acknowledged": 1}


def test_duplicate_and_late_results_change_nothing(engine: Engine) -> None:
    dev = enroll(engine, 1)
    rid, cmds = rollout_for(engine, [dev])
    report(engine, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    ack = Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])
    report(engine, ack, ack)  # twice in one batch
    report(engine, ack)  # and again later
    err = Report(
        udid(1),
        "Error",
        command_uuid=cmds[dev],
        error_chain=({"ErrorCode": 1, "ErrorDomain": "x"},),
        cert_sha256=CERT[1],
    )
    report(engine, err)  # out of order after the acknowledgement
    assert target_state(engine, rid, dev) == "acknowledged"
    with db.transaction(engine) as s:
        assert len(list_events(s, kind="mdm.result")) == 1
    assert assert_counters_match(engine, rid) == {"acknowledged": 1}


def test_notnow_is_not_served_again_in_the_same_session_but_is_on_idle(engine: Engine) -> None:
    dev = enroll(engine, 2)
    rid, cmds = rollout_for(engine, [dev])
    report(engine, Report(udid(2), "Idle", cert_sha256=CERT[2]))
    [out] = report(engine, Report(udid(2), "NotNow", command_uuid=cmds[dev], cert_sha256=CERT[2]))
    assert out.served is None  # no loop within the session
    assert target_state(engine, rid, dev) == "deferred"
    with db.transaction(engine) as s:
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == dev))
        assert t is not None and t.notnow_count == 1 and t.next_push_at is not None
        c = s.scalar(select(CommandRow).where(CommandRow.command_uuid == cmds[dev]))
        assert c is not None and c.status == "not_now" and c.first_notnow_at is not None
    [out] = report(engine, Report(udid(2), "Idle", cert_sha256=CERT[2]))
    assert out.served is not None and out.served.command_uuid == cmds[dev]
    report(engine, Report(udid(2), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[2]))
    assert target_state(engine, rid, dev) == "acknowledged"
    assert_counters_match(engine, rid)


def test_error_keeps_the_error_chain(engine: Engine) -> None:
    dev = enroll(engine, 3)
    _rid, cmds = rollout_for(engine, [dev])
    chain = (
        {
            "ErrorCode": 25001,
            "ErrorDomain": "MCProvisioningProfileErrorDomain",
            "LocalizedDescription": "cannot install",
        },
    )
    report(
        engine,
        Report(udid(3), "Error", command_uuid=cmds[dev], error_chain=chain, cert_sha256=CERT[3]),
    )
    with db.transaction(engine) as s:
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == dev))
        assert t is not None and t.state == "failed"
        assert t.reason == "MCProvisioningProfileErrorDomain:25001"
        assert t.error_chain == [dict(chain[0])]


def test_unknown_and_foreign_command_uuids_are_anomalies(engine: Engine) -> None:
    a, b = enroll(engine, 4), enroll(engine, 5)
    rid, cmds = rollout_for(engine, [a, b])
    outs = report(
        engine,
        Report(udid(4), "Acknowledged", command_uuid="NO-SUCH-COMMAND", cert_sha256=CERT[4]),
        Report(udid(4), "Acknowledged", command_uuid=cmds[b], cert_sha256=CERT[4]),
    )
    assert [o.status_code for o in outs] == [200, 200]
    assert target_state(engine, rid, b) == "queued"
    with db.transaction(engine) as s:
        reasons = sorted(e.data["reason"] for e in list_events(s, kind="mdm.anomaly"))
    assert reasons == ["foreign_command", "unknown_command"]


def test_wrong_certificate_and_unknown_devices_are_refused_without_401(engine: Engine) -> None:
    dev = enroll(engine, 6)
    rid, _ = rollout_for(engine, [dev])
    outs = report(
        engine,
        Report(udid(6), "Idle", cert_sha256=CERT[7]),
        Report(udid(6), "Idle", cert_sha256=None),
        Report(udid(99), "Idle", cert_sha256=CERT[9]),
    )
    assert [(o.status_code, o.refusal) for o in outs] == [
        (403, "identity_mismatch"),
        (403, "no_identity"),
        (400, "unknown_enrollment"),
    ]
    assert all(o.served is None for o in outs)
    assert target_state(engine, rid, dev) == "queued"
    # relaxed identity for a migrated fleet: no binding yet, bound on first sight
    with db.transaction(engine) as s:
        s.add(DeviceRow(enrollment_id=udid(8), tags=[], enrollment_state="enrolled"))
    [out] = report(engine, Report(udid(8), "Idle", cert_sha256=CERT[8]))
    assert out.refusal == "unbound_device"
    with db.transaction(engine) as s:
        [out] = process_reports(
            s,
            [Report(udid(8), "Idle", cert_sha256=CERT[8])],
            identity=IdentityPolicy(bind_on_first_sight=True),
        )
    assert out.status_code == 200
    with db.transaction(engine) as s:
        d = s.scalar(select(DeviceRow).where(DeviceRow.enrollment_id == udid(8)))
        assert d is not None and d.identity_sha256 == CERT[8]


def test_one_certificate_cannot_serve_two_enrollments(engine: Engine) -> None:
    enroll(engine, 1)
    with db.transaction(engine) as s:
        auth = Authentication(udid(2), udid(2), "device", "com.apple.mgmt.test", {})
        res = authenticate(s, auth, CERT[1])
    assert (res.status_code, res.refusal) == (403, "certificate_in_use")


def test_reenrollment_drops_open_commands_and_requeues_after_token_update(engine: Engine) -> None:
    dev = enroll(engine, 1)
    rid, cmds = rollout_for(engine, [dev])
    report(engine, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    with db.transaction(engine) as s:
        auth = Authentication(udid(1), udid(1), "device", "com.apple.mgmt.test", {})
        assert authenticate(s, auth, CERT[1]).status_code == 200
        c = s.scalar(select(CommandRow).where(CommandRow.command_uuid == cmds[dev]))
        assert c is not None and c.status == "inactive"
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == dev))
        assert t is not None and t.state == "planned" and t.requeue_after_token_update
        assert t.command_uuid is None
    # a result for the dropped command changes no target
    report(engine, Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1]))
    assert target_state(engine, rid, dev) == "planned"
    with db.transaction(engine) as s:
        token_update(
            s, udid(1), token_hex="cd" * 32, push_magic="m2", topic=None, cert_sha256=CERT[1]
        )
        t = s.scalar(select(TargetRow).where(TargetRow.device_id == dev))
        assert t is not None and not t.requeue_after_token_update
    assert_counters_match(engine, rid)


def test_check_out_cancels_open_targets(engine: Engine) -> None:
    a, b = enroll(engine, 1), enroll(engine, 2)
    rid, cmds = rollout_for(engine, [a, b])
    report(engine, Report(udid(2), "Acknowledged", command_uuid=cmds[b], cert_sha256=CERT[2]))
    with db.transaction(engine) as s:
        assert check_out(s, udid(1), CERT[1]).status_code == 200
        assert check_out(s, udid(2), CERT[2]).status_code == 200
    assert target_state(engine, rid, a) == "cancelled"
    assert target_state(engine, rid, b) == "acknowledged"
    [out] = report(engine, Report(udid(1), "Idle", cert_sha256=CERT[1]))
    assert out.served is None
    assert assert_counters_match(engine, rid) == {"cancelled": 1, "acknowledged": 1}


def test_a_batch_of_many_devices_is_reconciled_in_one_call(engine: Engine) -> None:
    devs = [enroll(engine, n) for n in range(10)]
    rid, cmds = rollout_for(engine, devs)
    outs = report(engine, *[Report(udid(n), "Idle", cert_sha256=CERT[n]) for n in range(10)])
    assert [o.served.command_uuid for o in outs if o.served] == [cmds[d] for d in devs]
    statuses = ["Acknowledged"] * 7 + ["NotNow", "Error", "CommandFormatError"]
    report(
        engine,
        *[
            Report(udid(n), statuses[n], command_uuid=cmds[devs[n]], cert_sha256=CERT[n])
            for n in range(10)
        ],
    )
    assert assert_counters_match(engine, rid) == {"acknowledged": 7, "deferred": 1, "failed": 2}
