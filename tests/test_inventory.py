"""Reading inventory files: good rows become records, bad rows are reported by line."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.identifiers import UDID_PATTERN, is_udid, normalize_udid
from rollout.inventory import (
    COLUMNS,
    FIELD_LIMITS,
    MAX_ACCESS_RIGHTS,
    MAX_PROFILE_NAME,
    MAX_PROFILES,
    MAX_TAGS,
    PLATFORMS,
    InventoryFormatError,
    InventoryReport,
    read_inventory,
)

UDID_NEW = "00008020-000915083C80012E"
UDID_OLD = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
MAC_UDID = "419D33EC-06E6-558D-AD52-601BA1867730"
UUID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
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
    assert [r.enrollment_id for r in report.records] == [UDID_OLD.upper()]
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


# --- inputs that used to escape as Python exceptions --------------------------------------


def test_a_csv_field_over_the_csv_limit_is_a_row_error_and_reading_goes_on() -> None:
    data = f"udid,device_name\n{UDID_NEW},{'x' * 200_000}\n{UDID_OLD},ok\n".encode()
    report = read_inventory(data, fmt="csv")
    assert [str(e) for e in report.errors] == ["line 2: a field is longer than 131072 characters"]
    assert [r.line for r in report.records] == [3]


def test_a_csv_header_the_csv_module_cannot_read_is_a_format_error() -> None:
    with pytest.raises(InventoryFormatError, match=r"^line 1: a field is longer than"):
        read_inventory(b"udid" + b"x" * 200_000 + b"\n", fmt="csv")


def test_json_nested_a_hundred_thousand_deep_is_a_row_error() -> None:
    deep = '{"udid": ' + "[" * 100_000 + "]" * 100_000 + "}"
    data = f"{json.dumps({'udid': UDID_NEW})}\n{deep}\n".encode()
    report = read_inventory(data, fmt="jsonl")
    assert [str(e) for e in report.errors] == ["line 2: JSON nested too deeply to read"]
    assert len(report.records) == 1


def test_a_five_thousand_digit_number_is_a_row_error_in_json_and_csv() -> None:
    digits = "9" * 5000
    report = read_inventory(f'{{"udid": "{UDID_NEW}", "access_rights": {digits}}}\n'.encode())
    assert [str(e) for e in report.errors] == [
        "line 1: a number with 5000 digits; no field takes more than 20"
    ]
    report = read_inventory(f"udid,access_rights\n{UDID_NEW},{digits}\n".encode())
    [error] = report.errors
    assert error.line == 2 and "is outside 0..8191" in error.reason
    assert len(error.reason) < 120  # the value is quoted in part, not in full


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"udid\n\xff\xfe\n", "line 2, column 1 (byte offset 5, 0xff)"),
        (f"udid\n{UDID_NEW}\n{UDID_OLD}\xe9\n".encode("latin-1"), "line 3, column 41"),
        (b'{"udid": "\xc3"}', "line 1, column 11 (byte offset 10, 0xc3)"),
    ],
)
def test_invalid_utf8_names_the_line_and_byte(data: bytes, where: str) -> None:
    with pytest.raises(InventoryFormatError) as info:
        read_inventory(data)
    message = str(info.value)
    assert message.startswith("not UTF-8 text: ") and where in message and "\n" not in message


def test_json_lines_break_only_at_newlines() -> None:
    # U+2028 and \x1c may stand raw inside a JSON string; neither ends a line
    rows = [
        {"udid": UDID_NEW, "device_name": "a\u2028b"},
        {"udid": UDID_OLD, "device_name": "a\x1cb"},
        {"udid": MAC_UDID},
    ]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    report = read_inventory(data, fmt="jsonl")
    assert [r.line for r in report.records] == [1, 3]
    assert report.records[0].device_name == "a\u2028b"
    assert [str(e) for e in report.errors] == [
        "line 2: device_name 'a\\x1cb' holds a control character"
    ]


def test_a_quoted_multi_line_csv_record_is_reported_at_its_first_line() -> None:
    other = "3F2504E0-4F89-11D3-9A0C-0305E82C3302"
    data = f'udid,profiles\n{UDID_NEW},"{UUID};\n{other}"\nnot-a-udid,\n'.encode()
    report = read_inventory(data, fmt="csv")
    [record] = report.records
    assert record.line == 2 and len(record.profiles) == 2
    assert [e.line for e in report.errors] == [4]


# --- one device, one key -------------------------------------------------------------------


def test_udids_leave_the_parser_in_upper_case() -> None:
    data = f"udid\n{UDID_OLD}\n{UDID_NEW.lower()}\n{MAC_UDID.lower()}\n".encode()
    report = read_inventory(data, fmt="csv")
    assert report.errors == ()
    expected = [UDID_OLD.upper(), UDID_NEW, MAC_UDID]
    assert [r.udid for r in report.records] == expected
    assert [r.enrollment_id for r in report.records] == expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_same_udid_in_another_case_is_a_duplicate_of_the_earlier_line(fmt: str) -> None:
    udids = [UDID_NEW.lower(), UDID_OLD, UDID_NEW]
    if fmt == "csv":
        data = ("udid\n" + "".join(f"{u}\n" for u in udids)).encode()
        lines = (2, 4)
    else:
        data = "".join(json.dumps({"udid": u}) + "\n" for u in udids).encode()
        lines = (1, 3)
    report = read_inventory(data, fmt=fmt)
    assert [r.enrollment_id for r in report.records] == [UDID_NEW, UDID_OLD.upper()]
    assert [str(e) for e in report.errors] == [
        f"line {lines[1]}: {UDID_NEW} already given on line {lines[0]}"
    ]


def test_enrollment_ids_are_kept_exactly_as_given() -> None:
    data = b"enrollment_id\nENR-abc\nENR-ABC\n"
    report = read_inventory(data, fmt="csv")
    assert report.errors == ()
    assert [r.enrollment_id for r in report.records] == ["ENR-abc", "ENR-ABC"]
    assert all(r.udid is None and r.enrollment_type == "user" for r in report.records)


def test_udid_and_enrollment_id_may_both_name_the_same_device_in_any_case() -> None:
    row = {"udid": UDID_NEW.lower(), "enrollment_id": UDID_NEW}
    report = read_inventory(json.dumps(row).encode(), fmt="jsonl")
    assert report.errors == () and report.records[0].enrollment_id == UDID_NEW


# --- values the ledger could not store -----------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"udid": UDID_NEW, "device_name": "a\u0000b"}, "device_name 'a\\x00b' holds a control"),
        ({"udid": UDID_NEW, "model": "\ud800"}, "model '\\ud800' holds a control character"),
        ({"udid": UDID_NEW, "tags": [f"t{i}" for i in range(65)]}, "65 tags, more than 64"),
        (
            {
                "udid": UDID_NEW,
                "profiles": [f"3F2504E0-4F89-11D3-9A0C-{i:012d}" for i in range(300)],
            },
            "300 profiles, more than 256",
        ),
        (
            {"udid": UDID_NEW, "profiles": [{"uuid": UUID, "name": "n" * 256}]},
            "name is longer than 255 characters",
        ),
        ({"udid": UDID_NEW, "profiles": [{"uuid": UUID, "name": 5}]}, "name must be text, got int"),
        ({"udid": UDID_NEW, "profiles": [UUID, UUID.lower()]}, f"{UUID.lower()} is listed twice"),
        ({"udid": UDID_NEW, "profiles": [{"uuid": UUID, "expires_at": 7}]}, "expires_at must be"),
        ({"udid": UDID_NEW, "access_rights": "1_0"}, "'1_0' is not a whole number"),
    ],
)
def test_values_the_ledger_cannot_store_are_row_errors(row: dict[str, object], reason: str) -> None:
    # json.dumps escapes the lone surrogate and keeps the line valid JSON
    report = read_inventory(json.dumps(row).encode(), fmt="jsonl")
    assert report.records == ()
    [error] = report.errors
    assert reason in error.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [("1e999", "os_version must be text, got inf"), ("NaN", "NaN is not a JSON number")],
)
def test_numbers_that_are_not_finite_are_row_errors(value: str, reason: str) -> None:
    report = read_inventory(f'{{"udid": "{UDID_NEW}", "os_version": {value}}}'.encode())
    assert [e.reason for e in report.errors] == [reason]


def test_a_bad_value_is_quoted_in_part() -> None:
    long_tag = "x" * 100_000 + " y"
    report = read_inventory(json.dumps({"udid": UDID_NEW, "tags": [long_tag]}).encode())
    [error] = report.errors
    assert error.reason.startswith("tag 'xxxx") and "(100002 characters)" in error.reason
    assert len(error.reason) < 150
    wide = {"udid": UDID_NEW, "k" * 50_000: 1}
    [error] = read_inventory(json.dumps(wide).encode()).errors
    assert error.reason.startswith("unknown key(s) 'kkk") and len(error.reason) < 150


def test_a_header_naming_a_column_twice_is_a_format_error() -> None:
    with pytest.raises(InventoryFormatError, match=r"^line 1: column\(s\) udid given more than"):
        read_inventory(f"udid,udid\n{UDID_NEW},{UDID_OLD}\n".encode(), fmt="csv")


# --- property: nothing escapes but the documented error; what is accepted fits the ledger ---

_PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff]")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _fits(value: str | None, limit: int) -> bool:
    return value is None or (
        0 < len(value) <= limit and value == value.strip() and not _CONTROL.search(value)
    )


def _check(data: bytes, fmt: str | None) -> InventoryReport | None:
    """Read ``data``; assert that only the documented errors arise and records fit the ledger."""
    try:
        report = read_inventory(data, fmt=fmt)
    except InventoryFormatError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 500, message
        return None
    lines = len(_LINE_BREAK.split(data))
    for error in report.errors:
        assert 1 <= error.line <= lines
        assert error.reason and "\n" not in error.reason and len(error.reason) < 400, error
    keys = [r.enrollment_id for r in report.records]
    assert len(keys) == len(set(keys))
    for r in report.records:
        assert 1 <= r.line <= lines
        for name, limit in FIELD_LIMITS.items():
            assert _fits(getattr(r, name), limit), (name, getattr(r, name))
        if r.udid is not None:
            assert is_udid(r.udid) and r.udid == normalize_udid(r.udid) == r.enrollment_id
        assert r.platform is None or r.platform in PLATFORMS.values()
        assert r.push_token is None or re.fullmatch("(?:[0-9a-f]{2}){16,}", r.push_token)
        assert r.push_token is None or r.push_magic is not None
        assert r.access_rights is None or 0 <= r.access_rights <= MAX_ACCESS_RIGHTS
        assert r.tags is None or len(r.tags) <= MAX_TAGS
        assert all(re.fullmatch(r"[A-Za-z0-9_.:/@+-]{1,64}", t) for t in r.tags or ())
        assert len(r.profiles) <= MAX_PROFILES
        assert len({p.uuid for p in r.profiles}) == len(r.profiles)
        for p in r.profiles:
            assert re.fullmatch("[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", p.uuid)
            assert _fits(p.name, MAX_PROFILE_NAME)
            assert p.expires_at is None or p.expires_at.tzinfo is not None
    return report


_FORMATS = st.sampled_from([None, "csv", "jsonl"])
_UDIDS = st.from_regex(UDID_PATTERN, fullmatch=True).flatmap(
    lambda u: st.sampled_from([u, u.lower(), u.upper(), f" {u} "])
)
_UUIDS = st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()]))
# plausible values mixed with arbitrary ones, so that some rows get through to every check
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "udid": _UDIDS,
    "enrollment_id": st.text(min_size=1, max_size=140),
    "platform": st.sampled_from([*PLATFORMS, *PLATFORMS.values(), "Windows"]),
    "topic": st.just("com.apple.mgmt.External.x") | st.text(max_size=20),
    "push_token": st.binary(min_size=15, max_size=40).map(bytes.hex),
    "access_rights": st.integers(-5, 9000) | st.text(max_size=8),
    "tags": st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=70),
    "profiles": st.lists(
        _UUIDS
        | st.fixed_dictionaries(
            {"uuid": _UUIDS},
            optional={
                "name": st.text(max_size=300),
                "expires_at": st.datetimes(timezones=st.none() | st.just(dt.UTC)).map(
                    dt.datetime.isoformat
                )
                | st.text(max_size=30),
            },
        ),
        max_size=5,
    ),
}
_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300)
_JSON_ANY = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def _json_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row of plausible values (often valid), with now and then an arbitrary key or value."""
    row: dict[str, Any] = {draw(st.sampled_from(["udid", "enrollment_id"])): draw(_UDIDS)}
    for key in draw(st.lists(st.sampled_from(COLUMNS), max_size=6, unique=True)):
        row[key] = draw(_FIELD_VALUES.get(key, st.text(max_size=80)))
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(COLUMNS) | st.text(max_size=6))
        row[key] = draw(_JSON_ANY)
    return row


@st.composite
def _jsonl_files(draw: st.DrawFn) -> bytes:
    lines = []
    for row in draw(st.lists(_json_rows() | _JSON_ANY, max_size=6)):
        lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
    lines.extend(draw(st.lists(st.text(max_size=40), max_size=2)))
    order = draw(st.permutations(lines))
    return "\n".join(order).encode("utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ";".join(v if isinstance(v, str) else str(v.get("uuid")) for v in value)
    return str(value)


@st.composite
def _csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique=True))
    if draw(st.integers(0, 4)) and not {"udid", "enrollment_id"} & set(header):
        header = [draw(st.sampled_from(["udid", "enrollment_id"])), *header]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 6))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        row = []
        for key in [*header, "udid"][: max(width, 0)]:
            value = draw(_FIELD_VALUES.get(key, st.text(max_size=80)) | st.text(max_size=40))
            row.append(_cell(value))
        writer.writerow(row)
    text = out.getvalue()
    if draw(st.booleans()):  # now and then, raw damage: a stray quote, a NUL, a lone \r
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(['"', "\x00", "\r", ",", "\ufeff"])) + text[at:]
    return text.encode("utf-8")


@_PROPERTY
@given(data=st.binary(max_size=2048), fmt=_FORMATS)
def test_arbitrary_bytes_raise_nothing_but_the_format_error(data: bytes, fmt: str | None) -> None:
    _check(data, fmt)


@_PROPERTY
@given(data=_jsonl_files(), fmt=st.sampled_from([None, "jsonl"]))
def test_arbitrary_json_lines_raise_nothing_but_the_format_error(
    data: bytes, fmt: str | None
) -> None:
    _check(data, fmt)


@_PROPERTY
@given(data=_csv_files(), fmt=st.sampled_from([None, "csv"]))
def test_arbitrary_csv_raises_nothing_but_the_format_error(data: bytes, fmt: str | None) -> None:
    _check(data, fmt)
