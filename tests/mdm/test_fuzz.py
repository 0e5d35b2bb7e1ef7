"""Property tests: whatever arrives, the parsers answer with a value or their own error type."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import plistlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.mdm import (
    IdentityError,
    MDMProtocolError,
    parse_checkin,
    parse_command,
    parse_forwarded_client_cert,
    parse_provisioning_profile_list,
    parse_result,
    verify_mdm_signature,
)

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
    st.floats(allow_nan=False),
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
    for parse in (parse_result, parse_checkin, parse_command):
        try:
            value: Any = parse(body)
        except MDMProtocolError as exc:
            assert exc.reason
            continue
        repr(value)
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
