"""The MDM endpoints over real HTTP: check-in, connect, refusals (never 401), the body limit."""

from __future__ import annotations

import plistlib
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rollout.ledger import db
from rollout.ledger.events import list_events
from rollout.ledger.models import DeviceRow, TargetRow
from rollout.ledger.rollouts import create_rollout, queue_commands, start_rollout
from rollout.mdm import parse_command
from rollout.profiles import parse_profile
from rollout.sim.identity import issue_device_identity, make_device_ca, sign_body
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile
from tests.web.conftest import Served

CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm; charset=UTF-8"
TOPIC = "com.apple.mgmt.External.test"


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
        assert self.checkin("Authenticate", OSVersion="17.5", SerialNumber="SER") == 200
        assert self.checkin("TokenUpdate", Token=b"\x01" * 32, PushMagic="magic") == 200

    def report(self, status: str, uuid: str | None = None, path: str = "/mdm/connect",
               **keys: Any) -> httpx.Response:  # fmt: skip
        msg: dict[str, Any] = {"UDID": self.udid, "Status": status, **keys}
        if uuid:
            msg["CommandUUID"] = uuid
        return self.put(path, msg, CONNECT)


def install_rollout(web: Served, chain: AppleLikeChain, device_ids: list[int]) -> int:
    data = make_profile(chain, name="Renewed")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    from rollout.ledger.profiles import add_profile

    with db.transaction(web.engine) as s:
        add_profile(s, profile, data)
        r = create_rollout(s, name="r", profile_uuid=profile.uuid, device_ids=device_ids)
        start_rollout(s, r.id)
        targets = s.scalars(select(TargetRow.id).where(TargetRow.rollout_id == r.id)).all()
        queue_commands(s, r.id, targets)
        return r.id


def device_id(web: Served, udid: str) -> int:
    with db.transaction(web.engine) as s:
        ident = s.scalar(select(DeviceRow.id).where(DeviceRow.enrollment_id == udid))
        assert ident is not None
        return ident


def target(web: Served, rollout_id: int, udid: str) -> TargetRow:
    with db.transaction(web.engine) as s:
        row = s.scalar(
            select(TargetRow)
            .join(DeviceRow, DeviceRow.id == TargetRow.device_id)
            .where(TargetRow.rollout_id == rollout_id, DeviceRow.enrollment_id == udid)
        )
        assert row is not None
        return row


def test_enrollment_then_one_install_end_to_end(web: Served, profile_chain: AppleLikeChain) -> None:
    dev = Device(web, "00008020-0000000000000001")
    dev.enroll()
    with db.transaction(web.engine) as s:
        row = s.scalar(select(DeviceRow).where(DeviceRow.enrollment_id == dev.udid))
        assert row is not None
        assert row.enrollment_state == "enrolled" and row.token_state == "active"
        assert row.push_token == "01" * 32 and row.push_magic == "magic"
        assert row.os_version == "17.5" and row.identity_sha256 is not None
    rid = install_rollout(web, profile_chain, [device_id(web, dev.udid)])

    res = dev.report("Idle")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("application/xml")
    command = parse_command(res.content)
    assert command.request_type == "InstallProvisioningProfile"
    assert target(web, rid, dev.udid).state == "delivered"
    installed = parse_profile(command.command["ProvisioningProfile"])
    assert installed.name == "Renewed"

    res = dev.report("Acknowledged", command.command_uuid)
    assert res.status_code == 200 and res.content == b""  # exactly 0 bytes ends the session
    assert target(web, rid, dev.udid).state == "acknowledged"
    # a duplicate result is harmless
    assert dev.report("Acknowledged", command.command_uuid).status_code == 200
    assert target(web, rid, dev.udid).state == "acknowledged"


def test_single_mdm_path_dispatches_on_content_type(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000002")
    assert dev.checkin("Authenticate", path="/mdm") == 200
    assert dev.checkin("TokenUpdate", path="/mdm", Token=b"\x02" * 32, PushMagic="m") == 200
    res = dev.report("Idle", path="/mdm")
    assert res.status_code == 200 and res.content == b""


def test_notnow_then_error_with_error_chain(web: Served, profile_chain: AppleLikeChain) -> None:
    dev = Device(web, "00008020-0000000000000003")
    dev.enroll()
    rid = install_rollout(web, profile_chain, [device_id(web, dev.udid)])
    uuid = parse_command(dev.report("Idle").content).command_uuid
    res = dev.report("NotNow", uuid)
    assert res.status_code == 200 and res.content == b""  # not served again in this session
    assert target(web, rid, dev.udid).state == "deferred"
    again = parse_command(dev.report("Idle").content)  # a later session gets it again
    assert again.command_uuid == uuid
    chain = [
        {
            "ErrorCode": 25001,
            "ErrorDomain": "MCProvisioningProfileErrorDomain",
            "LocalizedDescription": "The profile could not be installed.",
            "USEnglishDescription": "The profile could not be installed.",
        }
    ]
    assert dev.report("Error", uuid, ErrorChain=chain).status_code == 200
    t = target(web, rid, dev.udid)
    assert t.state == "failed" and t.reason == "MCProvisioningProfileErrorDomain:25001"
    assert t.error_chain == chain


def test_unknown_command_uuid_is_an_anomaly_not_a_failure(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000004")
    dev.enroll()
    res = dev.report("Acknowledged", "NOT-A-COMMAND-OF-OURS")
    assert res.status_code == 200
    with db.transaction(web.engine) as s:
        [event] = list_events(s, kind="mdm.anomaly")
        assert event.data["reason"] == "unknown_command"


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("forged", 403, "identity_digest_mismatch"),
        ("unsigned", 403, "identity_missing"),
        ("other-ca", 403, "identity_untrusted"),
        ("swapped-cert", 403, "identity_mismatch"),
        ("not-plist", 400, "not_plist"),
        ("no-status", 400, "missing_key"),
        ("too-large", 413, "too_large"),
    ],
)
def test_refusals_use_other_codes_than_401_and_are_recorded(
    web: Served, case: str, status: int, reason: str
) -> None:
    dev = Device(web, "00008020-0000000000000005")
    dev.enroll()
    body = plistlib.dumps({"UDID": dev.udid, "Status": "Idle"})
    headers = {"Content-Type": CONNECT, "Mdm-Signature": sign_body(dev.identity, body)}
    if case == "forged":
        body = body + b"\n"  # still a plist, no longer what was signed
    elif case == "unsigned":
        del headers["Mdm-Signature"]
    elif case == "other-ca":
        stranger = issue_device_identity(make_device_ca(), dev.udid)
        headers["Mdm-Signature"] = sign_body(stranger, body)
    elif case == "swapped-cert":
        twin = issue_device_identity(web.device_ca, dev.udid)  # valid CA, not the bound cert
        headers["Mdm-Signature"] = sign_body(twin, body)
    elif case == "not-plist":
        body = b"definitely not a plist"
        headers["Mdm-Signature"] = sign_body(dev.identity, body)
    elif case == "no-status":
        body = plistlib.dumps({"UDID": dev.udid})
        headers["Mdm-Signature"] = sign_body(dev.identity, body)
    elif case == "too-large":
        body = b"x" * (64 * 1024 + 1)
    res = dev.client.put("/mdm/connect", content=body, headers=headers)
    assert res.status_code == status
    with db.transaction(web.engine) as s:
        reasons = [e.data.get("reason") for e in list_events(s, kind="mdm.refused")]
    assert reason in reasons


def test_refused_authenticate_with_a_certificate_already_bound(web: Served) -> None:
    first = Device(web, "00008020-0000000000000006")
    first.enroll()
    thief = Device(web, "00008020-0000000000000007", identity=first.identity)
    assert thief.checkin("Authenticate") == 403


def test_other_checkin_types_are_answered_without_a_crash(web: Served) -> None:
    dev = Device(web, "00008020-0000000000000008")
    dev.enroll()
    assert dev.checkin("UserAuthenticate", UserID="A-USER") == 410
    assert dev.checkin("SetBootstrapToken", BootstrapToken=b"x") == 501
    assert dev.checkin("CheckOut") == 200
    with db.transaction(web.engine) as s:
        row = s.scalar(select(DeviceRow).where(DeviceRow.enrollment_id == dev.udid))
        assert row is not None and row.enrollment_state == "checked_out"


def test_get_is_not_allowed(web: Served) -> None:
    res = httpx.get(f"{web.base_url}/mdm/connect")
    assert res.status_code == 405
    assert httpx.get(f"{web.base_url}/healthz").json()["ok"] is True
