"""Reading inventory files: good rows become records, bad rows are reported by line."""

from __future__ import annotations

import json

import pytest

from rollout.inventory import InventoryFormatError, read_inventory

UDID_NEW = "00008020-000915083C80012E"
UDID_OLD = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
MAC_UDID = "419D33EC-06E6-558D-AD52-601BA1867730"
TOKEN = "ab" * 32


def test_csv_rows_become_records_with_lists_split_on_semicolons() -> None:
    data = (
        "udid,platform,os_version,push_token,push_magic,access_rights,tags,profiles\n"
        f"{UDID_NEW},ios,17.5,{TOKEN},MAGIC-1,8191,sales;emea,"
        "3F2504E0-4F89-11D3-9A0C-0305E82C3301\n"
        f"{MAC_UDID},macOS,14.4,,,,,\n"
    ).encode()
    report = read_inventory(data, name="fleet.csv")
    assert report.errors == ()
    first, second = report.records
    assert first.enrollment_id == UDID_NEW and first.enrollment_type == "device"
    assert first.platform == "iOS" and first.push_token == TOKEN and first.access_rights == 8191
    assert first.tags == ("sales", "emea")
    assert [p.uuid for p in first.profiles] == ["3f2504e0-4f89-11d3-9a0c-0305e82c3301"]
    assert second.platform == "macOS" and second.push_token is None and second.tags is None


def test_jsonl_accepts_user_enrollment_and_profile_objects() -> None:
    lines = [
        {"enrollment_id": "ENR-abc123", "platform": "iOS", "tags": ["byod"]},
        {
            "udid": UDID_OLD,
            "profiles": [
                {
                    "uuid": "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
                    "name": "Old",
                    "expires_at": "2026-12-01T00:00:00Z",
                }
            ],
        },
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    report = read_inventory(data, name="fleet.jsonl")
    assert report.errors == ()
    user, legacy = report.records
    assert user.enrollment_type == "user" and user.udid is None
    assert legacy.profiles[0].name == "Old"
    assert legacy.profiles[0].expires_at is not None
    assert legacy.profiles[0].expires_at.isoformat() == "2026-12-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"udid": "not-a-udid"}, "is not a UDID"),
        ({"platform": "iOS"}, "needs udid"),
        ({"udid": UDID_NEW, "platform": "Windows"}, "platform 'Windows'"),
        ({"udid": UDID_NEW, "topic": "com.example"}, "com.apple.mgmt."),
        ({"udid": UDID_NEW, "push_token": "zz", "push_magic": "m"}, "push_token must be hex"),
        ({"udid": UDID_NEW, "push_token": TOKEN}, "without push_magic"),
        ({"udid": UDID_NEW, "access_rights": "lots"}, "not a whole number"),
        ({"udid": UDID_NEW, "access_rights": 99999}, "outside 0..8191"),
        ({"udid": UDID_NEW, "tags": ["has space"]}, "tag 'has space'"),
        ({"udid": UDID_NEW, "profiles": ["nope"]}, "is not a UUID"),
        ({"udid": UDID_NEW, "surprise": 1}, "unknown key(s) surprise"),
        ({"udid": UDID_NEW, "enrollment_id": "x"}, "not both"),
    ],
)
def test_bad_jsonl_rows_are_reported_with_line_and_reason(
    row: dict[str, object], reason: str
) -> None:
    good = json.dumps({"udid": UDID_OLD})
    data = f"{good}\n{json.dumps(row)}\n".encode()
    report = read_inventory(data, fmt="jsonl")
    assert [r.enrollment_id for r in report.records] == [UDID_OLD]
    assert len(report.errors) == 1
    assert report.errors[0].line == 2
    assert reason in report.errors[0].reason


def test_duplicate_device_in_one_file_is_refused_with_first_line() -> None:
    data = f"udid\n{UDID_NEW}\n{UDID_OLD}\n{UDID_NEW}\n".encode()
    report = read_inventory(data)
    assert len(report.records) == 2
    assert str(report.errors[0]) == f"line 4: {UDID_NEW} already given on line 2"


def test_csv_with_wrong_field_count_and_bad_json_are_row_errors() -> None:
    report = read_inventory(f"udid,platform\n{UDID_NEW},iOS,extra\n".encode())
    assert report.errors[0].line == 2 and "3 fields" in report.errors[0].reason
    report = read_inventory(b'{"udid": \n', fmt="jsonl")
    assert "not JSON" in report.errors[0].reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"serial,colour\nA,B\n", "unknown column(s) serial, colour"),
        (b"platform\niOS\n", "needs udid or enrollment_id"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_unreadable_files_raise_a_format_error(data: bytes, message: str) -> None:
    with pytest.raises(InventoryFormatError, match=None) as info:
        read_inventory(data, fmt="csv" if data[:1] != b"" else None)
    assert message in str(info.value)
