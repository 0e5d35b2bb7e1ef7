"""Nothing a device sends can be too big for the ledger: every stored field is bounded, and the
parsers refuse what is over its bound, NaN or too deep before a report joins a batch."""

from __future__ import annotations

import datetime as dt
import json
import plistlib
from collections.abc import Callable
from typing import Any

import pytest

from rollout import bounds
from rollout.ledger.models import Base
from rollout.mdm import (
    REPORT_KEYS,
    Authenticate,
    CommandResult,
    MDMProtocolError,
    Status,
    parse_checkin,
    parse_provisioning_profile_list,
    parse_report,
    parse_result,
)
from rollout.mdm.messages import SHARED_IPAD_USER_ID

from .conftest import assert_stored_fields_bounded

UDID = "00008020-000915083C80012E"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
CID = "8f0e6e8a-1c38-4b0e-9d6e-2d4c1f7a9b11"


def plist(**keys: Any) -> bytes:
    return plistlib.dumps(keys)


def report_xml(*pairs: bytes, status: bytes = b"Acknowledged") -> bytes:
    """A report written by hand, for values plistlib cannot write (deep nesting, NaN keys,
    integers over 64 bits)."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        b"<key>UDID</key><string>" + UDID.encode() + b"</string>"
        b"<key>Status</key><string>" + status + b"</string>"
        b"<key>CommandUUID</key><string>"
        + CID.encode()
        + b"</string>"
        + b"".join(pairs)
        + b"</dict></plist>"
    )


def refusal(parse: Callable[[bytes], Any], body: bytes) -> MDMProtocolError:
    with pytest.raises(MDMProtocolError) as err:
        parse(body)
    return err.value


# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize("column", sorted(bounds.COLUMNS))
def test_bounds_match_the_ledger_columns(column: str) -> None:
    table, name = column.split(".")
    assert Base.metadata.tables[table].c[name].type.length == bounds.COLUMNS[column]


def test_derived_bounds_fit_their_columns() -> None:
    assert bounds.PUSH_TOKEN_HEX == 2 * bounds.PUSH_TOKEN_BYTES
    assert max(bounds.UDID, bounds.ENROLLMENT_ID) <= bounds.COLUMNS["devices.enrollment_id"]
    assert max(bounds.UDID, bounds.ENROLLMENT_ID) <= bounds.ENROLLMENT_KEY
    # "<ErrorDomain>:<ErrorCode>" is a failed target's reason.
    longest_code = max(len(str(bounds.INTEGER_MIN)), len(str(bounds.INTEGER_MAX)))
    assert bounds.ERROR_DOMAIN + 1 + longest_code <= bounds.TARGET_REASON


# --- over-long fields -----------------------------------------------------------------------

AUTH = {"MessageType": "Authenticate", "UDID": UDID, "Topic": TOPIC}
TOKEN = {
    "MessageType": "TokenUpdate",
    "UDID": UDID,
    "Topic": TOPIC,
    "Token": bytes(32),
    "PushMagic": "B81B1FEC-09C6-4EC2-871C-E521EC971B38",
}

CHECKIN_FIELDS: list[tuple[dict[str, Any], str, int, Any]] = [
    (AUTH, "Topic", bounds.TOPIC, str),
    (AUTH, "OSVersion", bounds.OS_VERSION, str),
    (AUTH, "BuildVersion", bounds.BUILD_VERSION, str),
    (AUTH, "ProductName", bounds.PRODUCT_NAME, str),
    (AUTH, "SerialNumber", bounds.SERIAL_NUMBER, str),
    (AUTH, "Model", bounds.MODEL, str),
    (AUTH, "DeviceName", bounds.DEVICE_NAME, str),
    (AUTH, "UDID", bounds.UDID, str),
    ({**AUTH, "UDID": None}, "EnrollmentID", bounds.ENROLLMENT_ID, str),
    (TOKEN, "Topic", bounds.TOPIC, str),
    (TOKEN, "PushMagic", bounds.PUSH_MAGIC, str),
    (TOKEN, "Token", bounds.PUSH_TOKEN_BYTES, bytes),
    ({"MessageType": "CheckOut", "UDID": UDID}, "Topic", bounds.TOPIC, str),
    ({"UDID": UDID}, "MessageType", bounds.MESSAGE_TYPE, str),
]


@pytest.mark.parametrize(
    ("base", "key", "limit", "kind"),
    CHECKIN_FIELDS,
    ids=[f"{b.get('MessageType', 'any')}-{k}" for b, k, _, _ in CHECKIN_FIELDS],
)
def test_checkin_field_at_its_bound_passes_and_one_more_is_refused(
    base: dict[str, Any], key: str, limit: int, kind: Any
) -> None:
    def body(size: int) -> bytes:
        value = b"\x07" * size if kind is bytes else ("A" * size)
        keys = {k: v for k, v in {**base, key: value}.items() if v is not None}
        return plistlib.dumps(keys)

    assert_stored_fields_bounded(parse_checkin(body(limit)))
    err = refusal(parse_checkin, body(limit + 1))
    assert err.reason == "too_long"
    unit = "byte" if kind is bytes else "character"
    assert key in err.message and f"{limit}-{unit} limit" in err.message


def test_the_issues_examples_are_refused_as_too_long() -> None:
    idle = plist(UDID="A" * 200, Status="Idle")
    assert refusal(parse_report, idle).reason == "too_long"
    assert refusal(parse_result, idle).reason == "too_long"
    cid = plist(UDID=UDID, Status="Acknowledged", CommandUUID="c" * (bounds.COMMAND_UUID + 1))
    err = refusal(parse_report, cid)
    assert err.reason == "too_long" and "CommandUUID" in err.message
    assert parse_report(plist(UDID=UDID, Status="NotNow", CommandUUID="c" * 64)).command_uuid


def test_an_idle_commanduuid_is_not_stored_so_not_bounded() -> None:
    result = parse_result(plist(UDID=UDID, Status="Idle", CommandUUID="c" * 500))
    assert result.command_uuid is None


def test_a_udid_is_bounded_in_its_stored_upper_case_form() -> None:
    # 40 characters as sent, 80 once upper-cased: the stored form is what must fit.
    err = refusal(parse_result, plist(UDID="\u00df" * 40, Status="Idle"))
    assert err.reason == "too_long" and "UDID" in err.message


@pytest.mark.parametrize(
    "keys",
    [
        {"UserID": "U" * 110},
        {"UserID": SHARED_IPAD_USER_ID, "UserShortName": "s" * 110},
        {"EnrollmentUserID": "E" * 110},
    ],
)
def test_a_user_channel_id_over_its_bound_is_refused(keys: dict[str, str]) -> None:
    err = refusal(parse_result, plist(UDID=UDID, Status="Idle", **keys))
    assert err.reason == "too_long" and "channel id" in err.message


def error_report(*items: dict[str, Any]) -> bytes:
    return plist(UDID=UDID, Status="Error", CommandUUID=CID, ErrorChain=list(items))


def item(**keys: Any) -> dict[str, Any]:
    return {"ErrorCode": 25001, "ErrorDomain": "MCProvisioningProfileErrorDomain", **keys}


@pytest.mark.parametrize(
    ("body", "reason", "named"),
    [
        (error_report(*[item()] * (bounds.ERROR_CHAIN_ITEMS + 1)), "too_many", "ErrorChain"),
        (
            error_report(item(ErrorDomain="D" * (bounds.ERROR_DOMAIN + 1))),
            "too_long",
            "ErrorChain[0].ErrorDomain",
        ),
        (
            error_report(item(), item(LocalizedDescription="x" * (bounds.ERROR_TEXT + 1))),
            "too_long",
            "ErrorChain[1].LocalizedDescription",
        ),
        (
            error_report(item(USEnglishDescription="x" * (bounds.ERROR_TEXT + 1))),
            "too_long",
            "ErrorChain[0].USEnglishDescription",
        ),
        (
            error_report(item(Nested=[{"Deeper": float("inf")}])),
            "not_finite",
            "ErrorChain[0].Nested[0].Deeper",
        ),
    ],
    ids=["items", "domain", "localized", "english", "inf-inside"],
)
def test_error_chain_bounds(body: bytes, reason: str, named: str) -> None:
    err = refusal(parse_report, body)
    assert (err.reason, named in err.message) == (reason, True), err


def test_the_largest_error_chain_is_accepted_and_stores_as_json() -> None:
    longest = item(
        ErrorDomain="D" * bounds.ERROR_DOMAIN,
        ErrorCode=bounds.INTEGER_MIN,
        LocalizedDescription="x" * bounds.ERROR_TEXT,
        USEnglishDescription="y" * bounds.ERROR_TEXT,
    )
    result = parse_report(error_report(*[longest] * bounds.ERROR_CHAIN_ITEMS))
    assert_stored_fields_bounded(result)
    assert result.error_chain[0].as_json() == longest


def profile_list(*items: dict[str, Any]) -> bytes:
    return plist(
        UDID=UDID, Status="Acknowledged", CommandUUID=CID, ProvisioningProfileList=list(items)
    )


def test_profile_list_items_are_bounded_before_any_batch() -> None:
    uuid = "493d9dc8-e4c0-4fd8-bd8e-8fd4c0dc7b0c"
    fine = parse_report(profile_list({"UUID": uuid.upper(), "Name": "n" * bounds.PROFILE_NAME}))
    assert_stored_fields_bounded(fine)
    err = refusal(parse_report, profile_list({"UUID": uuid + "x", "Name": "n"}))
    assert err.reason == "too_long" and "ProvisioningProfileList[0].UUID" in err.message
    err = refusal(parse_report, profile_list({"UUID": uuid, "Name": "n" * 256}))
    assert err.reason == "too_long" and "ProvisioningProfileList[0].Name" in err.message
    # Only an Acknowledged answer becomes installed-profile rows.
    not_now = plist(UDID=UDID, Status="NotNow", CommandUUID=CID, ProvisioningProfileList=[{}])
    assert parse_report(not_now).status is Status.NOT_NOW


# --- nesting, reals, integers, size ---------------------------------------------------------


def test_the_attackers_nine_hundred_nested_arrays_are_refused_not_a_recursion_error() -> None:
    body = report_xml(b"<key>Extra</key>" + b"<array>" * 900 + b"</array>" * 900)
    assert len(body) > 13_000  # the ~14 KB of the attack
    for parse in (parse_report, parse_result):
        err = refusal(parse, body)
        assert err.reason == "too_deep" and err.message.startswith("Extra[0][0]")


def nested(levels: int) -> bytes:
    """A value of ``levels`` arrays inside the message's dictionary (level 1)."""
    return b"<array>" * levels + b"<string>x</string>" + b"</array>" * levels


def test_nesting_up_to_the_bound_is_accepted() -> None:
    deepest = report_xml(b"<key>Extra</key>" + nested(bounds.NESTING_DEPTH - 1))
    result = parse_report(deepest)
    assert_stored_fields_bounded(result)
    one_more = report_xml(b"<key>Extra</key>" + nested(bounds.NESTING_DEPTH))
    assert refusal(parse_report, one_more).reason == "too_deep"


def checkin_xml(*pairs: bytes) -> bytes:
    return (
        b"<plist><dict><key>MessageType</key><string>Authenticate</string>"
        b"<key>UDID</key><string>" + UDID.encode() + b"</string>"
        b"<key>Topic</key><string>"
        + TOPIC.encode()
        + b"</string>"
        + b"".join(pairs)
        + b"</dict></plist>"
    )


@pytest.mark.parametrize("real", [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999"])
@pytest.mark.parametrize("where", ["extra", "nested", "checkin", "errorchain"])
def test_non_finite_reals_are_refused_anywhere(real: bytes, where: str) -> None:
    value = b"<real>" + real + b"</real>"
    if where == "extra":
        body, parse = report_xml(b"<key>Ratio</key>" + value), parse_report
    elif where == "nested":
        body = report_xml(b"<key>A</key><dict><key>B</key><array>" + value + b"</array></dict>")
        parse = parse_report
    elif where == "checkin":
        body, parse = checkin_xml(b"<key>Battery</key>" + value), parse_checkin
    else:
        chain = (
            b"<key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>1</integer>"
            b"<key>ErrorDomain</key><string>D</string><key>X</key>" + value + b"</dict></array>"
        )
        body, parse = report_xml(chain, status=b"Error"), parse_report
    assert refusal(parse, body).reason == "not_finite"


def test_integers_outside_64_bits_are_refused() -> None:
    for n in (bounds.INTEGER_MAX + 1, bounds.INTEGER_MIN - 1, 10**4000):
        body = report_xml(b"<key>N</key><integer>" + str(n).encode() + b"</integer>")
        assert refusal(parse_report, body).reason == "out_of_range"
    for n in (bounds.INTEGER_MAX, bounds.INTEGER_MIN):
        body = report_xml(b"<key>N</key><integer>" + str(n).encode() + b"</integer>")
        assert parse_report(body).extra_json == {"N": n}
    chain = (
        b"<key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>"
        + str(2**64).encode()
        + b"</integer><key>ErrorDomain</key><string>D</string></dict></array>"
    )
    assert refusal(parse_report, report_xml(chain, status=b"Error")).reason == "out_of_range"


def test_command_specific_keys_over_their_json_budget_are_refused() -> None:
    overhead = len('{"Blob":""}')
    fits = plist(
        UDID=UDID,
        Status="Acknowledged",
        CommandUUID=CID,
        Blob="x" * (bounds.EXTRA_JSON_BYTES - overhead),
    )
    assert_stored_fields_bounded(parse_report(fits))
    over = plist(
        UDID=UDID,
        Status="Acknowledged",
        CommandUUID=CID,
        Blob="x" * (bounds.EXTRA_JSON_BYTES - overhead + 1),
    )
    err = refusal(parse_report, over)
    assert err.reason == "too_large" and f"{bounds.EXTRA_JSON_BYTES}-byte limit" in err.message
    # Data counts in its stored (hex) form: twice its bytes.
    data = plist(
        UDID=UDID, Status="Acknowledged", CommandUUID=CID, Blob=bytes(bounds.EXTRA_JSON_BYTES // 2)
    )
    assert refusal(parse_report, data).reason == "too_large"


def test_a_long_key_is_shortened_in_the_message() -> None:
    key = "K" * 10_000
    err = refusal(parse_report, report_xml(f"<key>{key}</key><real>nan</real>".encode()))
    assert err.reason == "not_finite" and len(err.message) < 200


# --- the JSON view --------------------------------------------------------------------------


def test_the_json_view_of_command_specific_keys() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5)
    result = parse_report(
        plist(
            UDID=UDID,
            Status="Acknowledged",
            CommandUUID=CID,
            NotOnConsole=False,
            RequestType="ProvisioningProfileList",
            ProvisioningProfileList=[
                {"UUID": "493d9dc8-e4c0-4fd8-bd8e-8fd4c0dc7b0c", "Name": "One", "ExpiryDate": when}
            ],
            Blob=b"\x00\x01\xfe\xff",
            Ratio=0.5,
            Count=-3,
            Flag=True,
        )
    )
    assert result.extra_json == {
        "RequestType": "ProvisioningProfileList",
        "ProvisioningProfileList": [
            {
                "UUID": "493d9dc8-e4c0-4fd8-bd8e-8fd4c0dc7b0c",
                "Name": "One",
                "ExpiryDate": "2030-01-02T03:04:05+00:00",
            }
        ],
        "Blob": "0001feff",
        "Ratio": 0.5,
        "Count": -3,
        "Flag": True,
    }
    assert not REPORT_KEYS & result.extra_json.keys()
    assert json.loads(json.dumps(result.extra_json, allow_nan=False)) == result.extra_json
    # The typed accessor still reads the raw values: a real datetime, not the text.
    (profile,) = parse_provisioning_profile_list(result)
    assert profile.expiry_date == when.replace(tzinfo=dt.UTC)
    assert result.raw["Blob"] == b"\x00\x01\xfe\xff"


def test_a_report_without_command_specific_keys_has_an_empty_view() -> None:
    for body in (
        plist(UDID=UDID, Status="Idle"),
        plist(UDID=UDID, Status="Acknowledged", CommandUUID=CID),
    ):
        fast, full = parse_report(body), parse_result(body)
        assert fast.extra_json == full.extra_json == {}
        assert fast.extra_json is not parse_report(body).extra_json  # never shared


def test_a_hand_built_result_needs_no_view() -> None:
    result = CommandResult(
        Status.IDLE, None, parse_result(plist(UDID=UDID, Status="Idle")).enrollment
    )
    assert result.extra_json == {}


def test_an_authenticate_keeps_its_fields() -> None:
    msg = parse_checkin(plist(**AUTH, OSVersion="17.5", Battery=0.5, Info={"a": [1, b"x"]}))
    assert isinstance(msg, Authenticate) and msg.os_version == "17.5"
    assert_stored_fields_bounded(msg)
