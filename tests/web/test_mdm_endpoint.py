"""The MDM endpoints over real HTTP: check-in, connect, refusals (never 401), the body limit."""

from __future__ import annotations

import plistlib

import httpx
import pytest

from rollout.mdm import parse_command
from rollout.profiles import parse_profile
from rollout.sim.identity import issue_device_identity, make_device_ca, sign_body
from rollout.sim.profiles import AppleLikeChain
from tests.web.support import (
    CONNECT,
    Device,
    Served,
    device,
    events,
    install_rollout,
    target,
)


def test_enrollment_then_one_install_end_to_end(web: Served, profile_chain: AppleLikeChain) -> None:
    dev = Device(web, "00008020-0000000000000001")
    dev.enroll()
    row = device(web, dev.udid)
    assert row.state == "enrolled" and row.token_state == "active"
    with web.ledger.registry() as store:
        push = store.push_data(dev.udid)
    assert push is not None and push.token == "01" * 32 and push.push_magic == "magic"
    assert row.os_version == "17.5" and row.identity_sha256 is not None
    assert row.platform == "iOS"  # read from ProductName
    rid = install_rollout(web, profile_chain, [dev.udid])

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
    rid = install_rollout(web, profile_chain, [dev.udid])
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
    [event] = events(web, "mdm.anomaly")
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
    assert reason in [e.data.get("reason") for e in events(web, "mdm.refused")]


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
    assert device(web, dev.udid).state == "checked_out"


def test_get_is_not_allowed(web: Served) -> None:
    res = httpx.get(f"{web.base_url}/mdm/connect")
    assert res.status_code == 405
    assert httpx.get(f"{web.base_url}/healthz").json()["ok"] is True
