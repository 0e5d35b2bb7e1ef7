"""Devices' own answers keep the inventory of installed profiles up to date."""

from __future__ import annotations

import datetime as dt
import plistlib

from sqlalchemy import Engine

from rollout.inventory import read_inventory
from rollout.ledger import db
from rollout.ledger.devices import import_devices, installed_profiles
from rollout.ledger.models import InstalledProfileRow
from rollout.ledger.queue import IdentityPolicy, Report, enqueue_command, process_reports
from rollout.mdm import parse_result, provisioning_profile_list
from tests.ledger.test_queue import CERT, enroll, rollout_for, udid

IMPORTED = "11111111-2222-3333-4444-555555555555"
STALE = "66666666-7777-8888-9999-000000000000"


def facts(engine: Engine, device_id: int) -> dict[str, str]:
    with db.transaction(engine) as s:
        return {f.profile_uuid: f.source for f in installed_profiles(s, device_id)}


def test_an_acknowledged_install_records_the_rollouts_profile(engine: Engine) -> None:
    dev = enroll(engine, 1)
    _, cmds = rollout_for(engine, [dev])
    with db.transaction(engine) as s:
        process_reports(s, [Report(udid(1), "Idle", cert_sha256=CERT[1])])
        process_reports(
            s, [Report(udid(1), "Acknowledged", command_uuid=cmds[dev], cert_sha256=CERT[1])]
        )
    assert facts(engine, dev) == {"3f2504e0-4f89-11d3-9a0c-0305e82c3301": "rollout"}


def test_a_profile_list_answer_replaces_what_devices_said_and_keeps_imports(
    engine: Engine,
) -> None:
    dev = enroll(engine, 2)
    with db.transaction(engine) as s:
        import_devices(s, read_inventory(f"udid,profiles\n{udid(2)},{IMPORTED}\n".encode()).records)
        enqueue_command(
            s,
            dev,
            "LIST-1",
            "ProvisioningProfileList",
            provisioning_profile_list(True).render("LIST-1"),
        )
    answer = plistlib.dumps(
        {
            "UDID": udid(2),
            "CommandUUID": "LIST-1",
            "Status": "Acknowledged",
            "ProvisioningProfileList": [
                {
                    "UUID": "ABCDEF01-2345-6789-ABCD-EF0123456789",
                    "Name": "Field App",
                    "ExpiryDate": dt.datetime(2027, 11, 1, 12, 0),
                },
            ],
        }
    )
    result = parse_result(answer)
    extra = {k: v for k, v in result.raw.items() if k == "ProvisioningProfileList"}
    with db.transaction(engine) as s:  # an earlier list named a profile since removed
        s.add(InstalledProfileRow(device_id=dev, profile_uuid=STALE, source="profile_list"))
    with db.transaction(engine) as s:
        process_reports(
            s,
            [
                Report(
                    udid(2), "Acknowledged", command_uuid="LIST-1", cert_sha256=CERT[2], extra=extra
                )
            ],
            identity=IdentityPolicy(),
        )
    got = facts(engine, dev)
    assert got == {
        "abcdef01-2345-6789-abcd-ef0123456789": "profile_list",
        IMPORTED: "import",
    }
    with db.transaction(engine) as s:
        [row] = [f for f in installed_profiles(s, dev) if f.source == "profile_list"]
        assert row.expires_at == dt.datetime(2027, 11, 1, 12, 0, tzinfo=dt.UTC)
