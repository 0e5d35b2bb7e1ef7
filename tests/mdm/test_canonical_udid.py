"""UDIDs are case-insensitive: the parsers hand out the canonical (upper-case) form, so a device
that reports its UDID in lower case matches its record; EnrollmentIDs and the body are left as
they came, so identity checks over the body still see what the device signed."""

from __future__ import annotations

import plistlib
from collections.abc import Callable

import pytest

from rollout.identifiers import normalize_udid
from rollout.mdm import (
    CommandResult,
    DeviceCATrust,
    Enrollment,
    IdentityConfig,
    IdentityError,
    IdentityVerifier,
    MDMProtocolError,
    TokenUpdate,
    identify,
    parse_checkin,
    parse_report,
    parse_result,
)
from rollout.sim.identity import issue_device_identity, make_device_ca, sign_body

UPPER = "00008020-000915083C80012E"
LOWER = UPPER.lower()
OLD_IPHONE = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


@pytest.mark.parametrize("parse", [parse_report, parse_result])
@pytest.mark.parametrize("sent", [LOWER, UPPER, "00008020-000915083c80012E", f" {LOWER}\n"])
def test_a_report_gives_the_canonical_udid(
    parse: Callable[[bytes], CommandResult], sent: str
) -> None:
    for keys in ({"Status": "Idle"}, {"Status": "Acknowledged", "CommandUUID": "c-1"}):
        result = parse(plistlib.dumps({"UDID": sent, **keys}))
        assert result.enrollment.udid == result.enrollment.device_key == UPPER
        assert result.enrollment_key == UPPER
        assert result.raw["UDID"] == sent  # what the device sent stays as it was


def test_a_checkin_gives_the_canonical_udid_and_keeps_the_enrollment_id() -> None:
    msg = parse_checkin(
        plistlib.dumps(
            {
                "MessageType": "TokenUpdate",
                "UDID": OLD_IPHONE,
                "Topic": TOPIC,
                "Token": b"t",
                "PushMagic": "m",
            }
        )
    )
    assert isinstance(msg, TokenUpdate)
    assert msg.enrollment.udid == OLD_IPHONE.upper() == normalize_udid(OLD_IPHONE)
    user = parse_checkin(
        plistlib.dumps({"MessageType": "CheckOut", "EnrollmentID": "ab-Cd-1", "Topic": TOPIC})
    )
    assert user.enrollment.device_key == "ab-Cd-1"  # opaque: kept exactly


def test_a_user_channel_id_uses_the_canonical_udid() -> None:
    result = parse_result(plistlib.dumps({"Status": "Idle", "UDID": LOWER, "UserID": "guid-a"}))
    assert result.enrollment_key == f"{UPPER}:guid-a"  # the user part is kept as sent


def test_an_enrollment_built_by_hand_is_canonical_too() -> None:
    assert Enrollment(udid=LOWER).udid == UPPER
    assert Enrollment(udid=UPPER) == Enrollment(udid=LOWER)
    assert Enrollment(udid=" ", enrollment_id="E").device_key == "E"
    with pytest.raises(MDMProtocolError) as err:
        Enrollment(udid="  ")
    assert err.value.reason == "no_identity"


def test_the_signature_still_covers_the_body_as_sent() -> None:
    ca = make_device_ca()
    device = issue_device_identity(ca, LOWER)
    body = plistlib.dumps({"UDID": LOWER, "Status": "Acknowledged", "CommandUUID": "c-1"})
    header = {"mdm-signature": sign_body(device, body)}
    config = IdentityConfig(trust=DeviceCATrust([ca.cert]))
    full = identify(header, body, config)
    fast = IdentityVerifier(config).identify(header, body)
    assert full is not None and fast is not None and full.cert_sha256 == fast.cert_sha256
    result = parse_report(body)
    assert result.enrollment.udid == UPPER
    # The same body, upper-cased, is another body: the signature does not cover it.
    with pytest.raises(IdentityError) as err:
        identify(header, body.replace(LOWER.encode(), UPPER.encode()), config)
    assert err.value.reason in {"digest_mismatch", "bad_signature"}
