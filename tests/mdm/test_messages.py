"""Check-in and report parsing on hand-made plists: fields, channel keys, every refusal."""

from __future__ import annotations

import datetime as dt
import plistlib
from typing import Any

import pytest

from rollout.mdm import (
    MAX_BODY_BYTES,
    Authenticate,
    CheckOut,
    Enrollment,
    MDMProtocolError,
    OtherCheckin,
    Status,
    TokenUpdate,
    checkin_reply,
    parse_checkin,
    parse_provisioning_profile_list,
    parse_result,
)
from rollout.mdm.messages import SHARED_IPAD_USER_ID

UDID = "00008020-000915083C80012E"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


def plist(**keys: Any) -> bytes:
    return plistlib.dumps(keys)


def reason_of(call: Any, body: bytes, **kwargs: Any) -> str:
    with pytest.raises(MDMProtocolError) as err:
        call(body, **kwargs)
    assert err.value.message and str(err.value)
    assert isinstance(err.value, ValueError)
    return err.value.reason


# --- check-ins ------------------------------------------------------------------------------


def test_authenticate_fields() -> None:
    msg = parse_checkin(
        plist(
            MessageType="Authenticate",
            Topic=TOPIC,
            UDID=UDID,
            OSVersion="17.5",
            BuildVersion="21F79",
            ProductName="iPhone15,2",
            SerialNumber="F2LXXXX",
            IMEI="35 000000 000000 0",
            MEID="35000000000000",
            DeviceName="Ann's Mac",
            Model="Mac14,2",
            ModelName="MacBook Air",
            Extra="kept",
        )
    )
    assert isinstance(msg, Authenticate)
    assert (msg.udid, msg.enrollment_id, msg.topic) == (UDID, None, TOPIC)
    assert (msg.os_version, msg.build_version, msg.product_name) == ("17.5", "21F79", "iPhone15,2")
    assert (msg.serial_number, msg.imei, msg.meid) == (
        "F2LXXXX",
        "35 000000 000000 0",
        "35000000000000",
    )
    assert (msg.device_name, msg.model, msg.model_name) == ("Ann's Mac", "Mac14,2", "MacBook Air")
    assert msg.raw["Extra"] == "kept"
    assert msg.enrollment_key == UDID
    assert checkin_reply(msg) == (200, b"", None)


def test_user_enrollment_authenticate() -> None:
    msg = parse_checkin(plist(MessageType="Authenticate", Topic=TOPIC, EnrollmentID="ENR-1"))
    assert isinstance(msg, Authenticate)
    assert msg.udid is None and msg.enrollment_id == "ENR-1"
    assert msg.enrollment.is_user_enrollment
    assert msg.enrollment_key == "ENR-1"


def test_token_update_fields_and_secret_unlock_token() -> None:
    msg = parse_checkin(
        plist(
            MessageType="TokenUpdate",
            Topic=TOPIC,
            UDID=UDID,
            Token=bytes.fromhex("0a0b0c"),
            PushMagic="MAGIC",
            UnlockToken=b"SECRET-KEYBAG",
            AwaitingConfiguration=True,
        )
    )
    assert isinstance(msg, TokenUpdate)
    assert msg.token == b"\x0a\x0b\x0c" and msg.token_hex == "0a0b0c"
    assert msg.push_magic == "MAGIC" and msg.topic == TOPIC
    assert msg.awaiting_configuration is True and msg.not_on_console is False
    assert msg.has_unlock_token and msg.unlock_token == b"SECRET-KEYBAG"
    assert "SECRET" not in repr(msg)
    assert checkin_reply(msg) == (200, b"", None)

    bare = parse_checkin(
        plist(MessageType="TokenUpdate", Topic=TOPIC, UDID=UDID, Token=b"t", PushMagic="m")
    )
    assert isinstance(bare, TokenUpdate) and not bare.has_unlock_token


def test_checkout() -> None:
    msg = parse_checkin(plist(MessageType="CheckOut", Topic=TOPIC, UDID=UDID))
    assert isinstance(msg, CheckOut) and msg.enrollment_key == UDID
    assert checkin_reply(msg) == (200, b"", None)


@pytest.mark.parametrize(
    ("message_type", "status_code", "reason"),
    [
        ("UserAuthenticate", 410, "user_channel_declined"),
        ("SetBootstrapToken", 501, "not_served"),
        ("GetBootstrapToken", 501, "not_served"),
        ("DeclarativeManagement", 501, "not_served"),
        ("GetToken", 501, "not_served"),
        ("ReturnToService", 501, "not_served"),
        # Not a type Apple defines: the device's input is wrong, not the server (never 5xx).
        ("SomethingNew", 400, "unknown_message_type"),
        ("authenticate", 400, "unknown_message_type"),
    ],
)
def test_other_checkins(message_type: str, status_code: int, reason: str) -> None:
    msg = parse_checkin(
        plist(MessageType=message_type, UDID=UDID, UserID="U1", BootstrapToken=b"SECRET")
    )
    assert isinstance(msg, OtherCheckin)
    assert msg.message_type == message_type
    assert msg.raw["BootstrapToken"] == b"SECRET"
    assert "SECRET" not in repr(msg)
    assert msg.enrollment_key == f"{UDID}:U1"
    reply = checkin_reply(msg)
    assert reply == (status_code, b"", reason) and reply.status_code != 401


# --- channel keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected", "user_channel"),
    [
        ({"UDID": UDID}, UDID, False),
        ({"EnrollmentID": "ENR"}, "ENR", False),
        ({"UDID": UDID, "EnrollmentID": "ENR"}, UDID, False),
        ({"UDID": UDID, "UserID": "GUID-1", "UserShortName": "ann"}, f"{UDID}:GUID-1", True),
        (
            {"UDID": UDID, "UserID": SHARED_IPAD_USER_ID, "UserShortName": "ann@school.example"},
            f"{UDID}:ann@school.example",
            True,
        ),
        (
            {"UDID": UDID, "UserID": SHARED_IPAD_USER_ID.lower(), "UserShortName": "bob"},
            f"{UDID}:bob",
            True,
        ),
        ({"EnrollmentID": "ENR", "EnrollmentUserID": "EU-1"}, "ENR:EU-1", True),
    ],
)
def test_enrollment_keys(keys: dict[str, str], expected: str, user_channel: bool) -> None:
    result = parse_result(plist(Status="Idle", **keys))
    assert result.enrollment_key == expected
    assert result.enrollment.is_user_channel is user_channel
    assert result.enrollment.device_key == expected.split(":")[0]


def test_enrollment_needs_an_id() -> None:
    with pytest.raises(MDMProtocolError) as err:
        Enrollment(user_id="U")
    assert err.value.reason == "no_identity"


def test_shared_ipad_needs_short_name() -> None:
    body = plist(Status="Idle", UDID=UDID, UserID=SHARED_IPAD_USER_ID)
    assert reason_of(parse_result, body) == "missing_key"


# --- reports --------------------------------------------------------------------------------


def test_idle_has_no_command_uuid() -> None:
    result = parse_result(plist(Status="Idle", UDID=UDID, CommandUUID="stray"))
    assert result.status is Status.IDLE and result.command_uuid is None


def test_error_result_with_chain() -> None:
    result = parse_result(
        plist(
            Status="Error",
            UDID=UDID,
            CommandUUID="c-1",
            NotOnConsole=True,
            ErrorChain=[
                {
                    "ErrorCode": 25001,
                    "ErrorDomain": "MCProvisioningProfileErrorDomain",
                    "LocalizedDescription": "Impossible d\u2019installer",
                    "USEnglishDescription": "Cannot install",
                },
                {"ErrorCode": -1, "ErrorDomain": "NSOSStatusErrorDomain"},
            ],
        )
    )
    assert result.status is Status.ERROR and result.command_uuid == "c-1"
    assert result.not_on_console is True
    first, second = result.error_chain
    assert (first.code, first.domain) == (25001, "MCProvisioningProfileErrorDomain")
    assert first.localized_description == "Impossible d\u2019installer"
    assert first.us_english_description == "Cannot install"
    # LocalizedDescription is diagnostic only: missing becomes "" rather than a refusal.
    assert (second.localized_description, second.us_english_description) == ("", None)


def test_status_finality() -> None:
    assert {s for s in Status if s.is_final} == {
        Status.ACKNOWLEDGED,
        Status.ERROR,
        Status.COMMAND_FORMAT_ERROR,
    }


def test_profile_list_items() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5)
    result = parse_result(
        plist(
            Status="Acknowledged",
            UDID=UDID,
            CommandUUID="l-1",
            ProvisioningProfileList=[
                {"UUID": "u1", "Name": "One", "ExpiryDate": when},
                {"UUID": "u2", "Name": ""},
            ],
        )
    )
    one, two = parse_provisioning_profile_list(result)
    assert (one.uuid, one.name) == ("u1", "One")
    assert one.expiry_date == when.replace(tzinfo=dt.UTC)
    assert one.expiry_date is not None and one.expiry_date.utcoffset() == dt.timedelta(0)
    assert not one.is_expired(dt.datetime(2029, 1, 1, tzinfo=dt.UTC))
    assert one.is_expired(dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert (two.uuid, two.name, two.expiry_date) == ("u2", "", None)
    assert not two.is_expired()


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({"Status": "Error"}, "bad_status"),
        ({"Status": "Acknowledged"}, "missing_key"),
        ({"Status": "Acknowledged", "ProvisioningProfileList": {}}, "wrong_type"),
        ({"Status": "Acknowledged", "ProvisioningProfileList": ["x"]}, "wrong_type"),
        ({"Status": "Acknowledged", "ProvisioningProfileList": [{"Name": "n"}]}, "missing_key"),
        ({"Status": "Acknowledged", "ProvisioningProfileList": [{"UUID": "u"}]}, "missing_key"),
        (
            {"Status": "Acknowledged", "ProvisioningProfileList": [{"UUID": "u", "Name": 1}]},
            "wrong_type",
        ),
        (
            {
                "Status": "Acknowledged",
                "ProvisioningProfileList": [{"UUID": "u", "Name": "n", "ExpiryDate": "2020"}],
            },
            "wrong_type",
        ),
    ],
)
def test_profile_list_refusals(keys: dict[str, Any], reason: str) -> None:
    # An Acknowledged list is checked by the parser already (its items are stored); the
    # accessor refuses the rest.
    with pytest.raises(MDMProtocolError) as err:
        parse_provisioning_profile_list(parse_result(plist(UDID=UDID, CommandUUID="c", **keys)))
    assert err.value.reason == reason


# --- malformed input ------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not_plist"),
    ("garbage", b"\x00\xffnot xml at all", "not_plist"),
    ("json", b'{"Status": "Idle"}', "not_plist"),
    ("truncated", plist(Status="Idle", UDID=UDID)[:-20], "not_plist"),
    ("binary plist", plistlib.dumps({"Status": "Idle"}, fmt=plistlib.FMT_BINARY), "not_plist"),
    ("not a plist element", b"<?xml version='1.0'?><foo/>", "not_plist"),
    ("bad date", b"<plist><dict><key>D</key><date>soon</date></dict></plist>", "not_plist"),
    ("bad base64", b"<plist><dict><key>D</key><data>abcde</data></dict></plist>", "not_plist"),
    ("bad integer", b"<plist><dict><key>I</key><integer>x</integer></dict></plist>", "not_plist"),
    (
        "entity declaration",
        b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaa">]>'
        b"<plist><dict><key>Status</key><string>&a;</string></dict></plist>",
        "not_plist",
    ),
    ("array at top", plistlib.dumps(["Idle"]), "wrong_type"),
    ("string at top", plistlib.dumps("Idle"), "wrong_type"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [(b, r) for _, b, r in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES]
)
def test_malformed_bodies(body: bytes, reason: str) -> None:
    assert reason_of(parse_result, body) == reason
    assert reason_of(parse_checkin, body) == reason


def test_body_type_checked() -> None:
    assert reason_of(parse_result, "text") == "wrong_type"  # type: ignore[arg-type]


def test_size_limit_checked_before_parsing() -> None:
    junk = b"\x00" * (MAX_BODY_BYTES + 1)  # would be not_plist if it were parsed
    assert reason_of(parse_result, junk) == "too_large"
    assert reason_of(parse_checkin, junk) == "too_large"
    body = plist(Status="Idle", UDID=UDID)
    assert reason_of(parse_result, body, max_bytes=len(body) - 1) == "too_large"
    assert parse_result(body, max_bytes=len(body)).status is Status.IDLE


REPORT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no Status", {"UDID": UDID, "CommandUUID": "c"}, "missing_key"),
    ("empty Status", {"UDID": UDID, "Status": ""}, "missing_key"),
    ("Status int", {"UDID": UDID, "Status": 1}, "wrong_type"),
    ("unknown Status", {"UDID": UDID, "Status": "Done"}, "bad_status"),
    ("lowercase Status", {"UDID": UDID, "Status": "acknowledged"}, "bad_status"),
    ("no id", {"Status": "Idle"}, "no_identity"),
    ("empty ids", {"Status": "Idle", "UDID": "", "EnrollmentID": ""}, "no_identity"),
    ("UDID int", {"Status": "Idle", "UDID": 5}, "wrong_type"),
    ("UserID data", {"Status": "Idle", "UDID": UDID, "UserID": b"x"}, "wrong_type"),
    ("no CommandUUID", {"UDID": UDID, "Status": "Acknowledged"}, "missing_key"),
    ("CommandUUID int", {"UDID": UDID, "Status": "NotNow", "CommandUUID": 7}, "wrong_type"),
    ("NotOnConsole str", {"UDID": UDID, "Status": "Idle", "NotOnConsole": "no"}, "wrong_type"),
    (
        "ErrorChain dict",
        {"UDID": UDID, "Status": "Error", "CommandUUID": "c", "ErrorChain": {"ErrorCode": 1}},
        "wrong_type",
    ),
    (
        "ErrorChain item str",
        {"UDID": UDID, "Status": "Error", "CommandUUID": "c", "ErrorChain": ["oops"]},
        "wrong_type",
    ),
    (
        "ErrorCode str",
        {
            "UDID": UDID,
            "Status": "Error",
            "CommandUUID": "c",
            "ErrorChain": [{"ErrorCode": "1", "ErrorDomain": "D"}],
        },
        "wrong_type",
    ),
    (
        "ErrorCode bool",
        {
            "UDID": UDID,
            "Status": "Error",
            "CommandUUID": "c",
            "ErrorChain": [{"ErrorCode": True, "ErrorDomain": "D"}],
        },
        "wrong_type",
    ),
    (
        "no ErrorCode",
        {"UDID": UDID, "Status": "Error", "CommandUUID": "c", "ErrorChain": [{"ErrorDomain": "D"}]},
        "missing_key",
    ),
    (
        "no ErrorDomain",
        {"UDID": UDID, "Status": "Error", "CommandUUID": "c", "ErrorChain": [{"ErrorCode": 1}]},
        "missing_key",
    ),
    (
        "description int",
        {
            "UDID": UDID,
            "Status": "Error",
            "CommandUUID": "c",
            "ErrorChain": [{"ErrorCode": 1, "ErrorDomain": "D", "LocalizedDescription": 3}],
        },
        "wrong_type",
    ),
    (
        "english int",
        {
            "UDID": UDID,
            "Status": "Error",
            "CommandUUID": "c",
            "ErrorChain": [{"ErrorCode": 1, "ErrorDomain": "D", "USEnglishDescription": 3}],
        },
        "wrong_type",
    ),
    ("a command", {"CommandUUID": "c", "Command": {"RequestType": "X"}}, "wrong_kind"),
    ("a check-in", {"MessageType": "Authenticate", "UDID": UDID, "Topic": TOPIC}, "wrong_kind"),
]


@pytest.mark.parametrize(
    ("keys", "reason"), [(k, r) for _, k, r in REPORT_CASES], ids=[i for i, _, _ in REPORT_CASES]
)
def test_report_refusals(keys: dict[str, Any], reason: str) -> None:
    assert reason_of(parse_result, plist(**keys)) == reason


TU = {"MessageType": "TokenUpdate", "UDID": UDID, "Topic": TOPIC, "Token": b"t", "PushMagic": "m"}

CHECKIN_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no MessageType", {"UDID": UDID, "Topic": TOPIC}, "missing_key"),
    ("MessageType int", {"MessageType": 3, "UDID": UDID}, "wrong_type"),
    ("a report", {"Status": "Idle", "UDID": UDID}, "wrong_kind"),
    ("a command", {"CommandUUID": "c", "Command": {}}, "wrong_kind"),
    ("no id", {"MessageType": "Authenticate", "Topic": TOPIC}, "no_identity"),
    ("other without id", {"MessageType": "GetToken"}, "no_identity"),
    ("no Topic", {"MessageType": "Authenticate", "UDID": UDID}, "missing_key"),
    ("Topic data", {"MessageType": "CheckOut", "UDID": UDID, "Topic": b"x"}, "wrong_type"),
    (
        "OSVersion int",
        {"MessageType": "Authenticate", "UDID": UDID, "Topic": TOPIC, "OSVersion": 17},
        "wrong_type",
    ),
    ("no Token", {**TU, "Token": None}, "missing_key"),
    ("empty Token", {**TU, "Token": b""}, "missing_key"),
    ("Token string", {**TU, "Token": "abcd"}, "wrong_type"),
    ("no PushMagic", {**TU, "PushMagic": None}, "missing_key"),
    ("UnlockToken string", {**TU, "UnlockToken": "x"}, "wrong_type"),
    ("AwaitingConfiguration int", {**TU, "AwaitingConfiguration": 1}, "wrong_type"),
]


@pytest.mark.parametrize(
    ("keys", "reason"), [(k, r) for _, k, r in CHECKIN_CASES], ids=[i for i, _, _ in CHECKIN_CASES]
)
def test_checkin_refusals(keys: dict[str, Any], reason: str) -> None:
    body = plist(**{k: v for k, v in keys.items() if v is not None})
    assert reason_of(parse_checkin, body) == reason
