"""Property tests: whatever arrives, the parsers answer with a value or their own error type,
and a value holds nothing rollout could not store (every field within :mod:`rollout.bounds`,
every JSON view encodable with ``allow_nan=False``)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import plistlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.mdm import (
    IdentityError,
    MDMProtocolError,
    parse_checkin,
    parse_command,
    parse_forwarded_client_cert,
    parse_provisioning_profile_list,
    parse_report,
    parse_result,
    verify_mdm_signature,
)

from .conftest import REALWORLD, assert_stored_fields_bounded

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_KEYS = [
    "MessageType", "Status", "UDID", "EnrollmentID", "UserID", "UserShortName", "UserLongName",
    "EnrollmentUserID", "CommandUUID", "Command", "RequestType", "ErrorChain", "ErrorCode",
    "ErrorDomain", "LocalizedDescription", "USEnglishDescription", "NotOnConsole", "Topic",
    "Token", "PushMagic", "UnlockToken", "AwaitingConfiguration", "ProvisioningProfileList",
    "UUID", "Name", "ExpiryDate", "OSVersion",
]  # fmt: skip
KNOWN_STRINGS = [
    "Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow", "Authenticate",
    "TokenUpdate", "CheckOut", "UserAuthenticate", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "",
]  # fmt: skip

xml_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
scalars = st.one_of(
    st.sampled_from(KNOWN_STRINGS),
    xml_text,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.binary(max_size=20),
    st.floats(),  # NaN and ±infinity included
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
)
plist_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(KNOWN_KEYS), children, max_size=4),
    ),
    max_leaves=12,
)
plist_dicts = st.dictionaries(
    st.one_of(st.sampled_from(KNOWN_KEYS), xml_text), plist_values, max_size=8
)


def _only_protocol_errors(body: bytes) -> None:
    for parse in (parse_result, parse_report, parse_checkin, parse_command):
        try:
            value: Any = parse(body)
        except MDMProtocolError as exc:
            assert exc.reason
            continue
        repr(value)
        if parse is not parse_command:
            assert_stored_fields_bounded(value)
        if parse is parse_result:
            with contextlib.suppress(MDMProtocolError):
                parse_provisioning_profile_list(value)


@FAST
@given(st.binary(max_size=512))
def test_random_bytes(body: bytes) -> None:
    _only_protocol_errors(body)


@FAST
@given(
    st.sampled_from(
        [b"", b"<?xml version='1.0'?>", b"<plist version='1.0'>", b"<plist><dict><key>Status</key>"]
    ),
    st.text(alphabet="<>/=\"'&;#xabcdefgiklnoprstuy 0123456789-TZ:\n", max_size=200),
)
def test_random_xmlish_text(prefix: bytes, text: str) -> None:
    _only_protocol_errors(prefix + text.encode())


@FAST
@given(plist_dicts)
def test_random_plist_dictionaries(top: dict[str, Any]) -> None:
    _only_protocol_errors(plistlib.dumps(top, fmt=plistlib.FMT_XML))


@FAST
@given(st.binary(max_size=400), st.binary(max_size=64))
def test_random_signatures(der: bytes, body: bytes) -> None:
    for header in (base64.b64encode(der).decode(), der.decode("latin-1")):
        try:
            verify_mdm_signature(header, body)
        except IdentityError as exc:
            assert exc.reason


@FAST
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=300).map(lambda b: ":" + base64.b64encode(b).decode() + ":"),
    )
)
def test_random_forwarded_certs(value: str) -> None:
    try:
        parse_forwarded_client_cert(value)
    except IdentityError as exc:
        assert exc.reason


# --- hostile plists -------------------------------------------------------------------------
# Written as XML text, not with plistlib: its writer recurses (no deep nesting) and refuses
# integers over 64 bits, both of which a device can send.


def _escape(text: str) -> bytes:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode()


def _string(text: str) -> bytes:
    return b"<string>" + _escape(text) + b"</string>"


# Long runs around every bound, in letters that upper-case to more letters too ("ß" -> "SS").
long_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["A", "a", "0", "-", "\u00df", "\ufb03", "\u00e9", " "]),
    st.integers(0, 300),
)
identifier_text = st.one_of(st.sampled_from(KNOWN_STRINGS), xml_text, long_text)
hostile_scalars = st.one_of(
    identifier_text.map(_string),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: b"<integer>%d</integer>" % n),
    st.floats().map(lambda x: b"<real>" + repr(x).encode() + b"</real>"),
    st.sampled_from([b"<real>NaN</real>", b"<real>-Infinity</real>", b"<real>1e999</real>"]),
    st.sampled_from([b"<true/>", b"<false/>"]),
    st.binary(max_size=150).map(lambda b: b"<data>" + base64.b64encode(b) + b"</data>"),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda d: b"<date>" + d.strftime("%Y-%m-%dT%H:%M:%SZ").zfill(20).encode() + b"</date>"
    ),
)
hostile_keys = st.one_of(st.sampled_from(KNOWN_KEYS), xml_text, long_text)


def _array(items: list[bytes]) -> bytes:
    return b"<array>" + b"".join(items) + b"</array>"


def _dict(pairs: list[tuple[str, bytes]]) -> bytes:
    return (
        b"<dict>" + b"".join(b"<key>" + _escape(k) + b"</key>" + v for k, v in pairs) + b"</dict>"
    )


def _deep(levels: int, inner: bytes) -> bytes:
    return b"<array>" * levels + inner + b"</array>" * levels


hostile_values = st.recursive(
    hostile_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(hostile_keys, children), max_size=4).map(_dict),
        st.builds(_deep, st.integers(1, 2000), children),
    ),
    max_leaves=16,
)

_PROLOGUE = b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">'
MESSAGE_TYPES = st.one_of(
    st.sampled_from(
        ["Authenticate", "TokenUpdate", "CheckOut", "UserAuthenticate", "GetBootstrapToken",
         "DeclarativeManagement", "ReturnToService", "SomethingNew", "authenticate"]
    ),
    long_text,
)  # fmt: skip
STATUSES = st.sampled_from(["Idle", "Acknowledged", "Error", "NotNow", "CommandFormatError"])


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """A check-in or report with plausible known keys (some over-long), then hostile pairs that
    add keys or replace known ones (plistlib keeps the last of a repeated key)."""
    pairs: list[tuple[str, bytes]] = []
    if draw(st.booleans()):
        pairs.append(("MessageType", _string(draw(MESSAGE_TYPES))))
        pairs.append(("Topic", _string(draw(identifier_text))))
        if draw(st.booleans()):
            token = base64.b64encode(draw(st.binary(max_size=130)))
            pairs.append(("Token", b"<data>" + token + b"</data>"))
            pairs.append(("PushMagic", _string(draw(identifier_text))))
    else:
        pairs.append(("Status", _string(draw(STATUSES))))
        pairs.append(("CommandUUID", _string(draw(identifier_text))))
    id_key = draw(st.sampled_from(["UDID", "EnrollmentID"]))
    pairs.append((id_key, _string(draw(identifier_text))))
    user_keys = st.sampled_from(["UserID", "UserShortName", "EnrollmentUserID"])
    for key in draw(st.lists(user_keys, max_size=2)):
        pairs.append((key, _string(draw(identifier_text))))
    pairs += draw(st.lists(st.tuples(hostile_keys, hostile_values), max_size=4))
    return _PROLOGUE + _dict(pairs) + b"</plist>"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_messages())
def test_hostile_messages_are_bounded_or_refused(body: bytes) -> None:
    _only_protocol_errors(body)


REAL_BODIES = (
    [p.read_bytes() for p in sorted((REALWORLD / "plists").iterdir())]
    if (REALWORLD / "plists").is_dir()
    else []
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_real_messages_with_hostile_keys_are_bounded_or_refused(data: st.DataObject) -> None:
    if not REAL_BODIES:
        pytest.skip("the real-world samples are not available")
    body = data.draw(st.sampled_from(REAL_BODIES))
    pairs = data.draw(st.lists(st.tuples(hostile_keys, hostile_values), min_size=1, max_size=3))
    end = body.rindex(b"</dict>")  # the top-level dictionary closes last
    extra = b"".join(b"<key>" + _escape(k) + b"</key>" + v for k, v in pairs)
    _only_protocol_errors(body[:end] + extra + body[end:])
