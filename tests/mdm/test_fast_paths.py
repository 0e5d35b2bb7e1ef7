"""The endpoints' fast paths agree with the full parsers they stand in for.

``IdentityVerifier`` (a lean CMS walk with a per-certificate cache) must accept exactly what
:func:`rollout.mdm.identify` accepts, with the same certificate, and ``parse_report`` must give
what :func:`rollout.mdm.parse_result` gives, or the same refusal.
"""

from __future__ import annotations

import base64
import plistlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.mdm import (
    DeviceCATrust,
    IdentityConfig,
    IdentityError,
    IdentityVerifier,
    MDMProtocolError,
    identify,
    parse_report,
    parse_result,
)
from rollout.sim.identity import issue_device_identity, make_device_ca, sign_body

CA = make_device_ca()
DEVICE = issue_device_identity(CA, "00008020-000915083C80012E")
STRANGER = issue_device_identity(make_device_ca(), "00008020-000915083C80012E")
BODY = plistlib.dumps({"UDID": "00008020-000915083C80012E", "Status": "Idle"})
CONFIG = IdentityConfig(trust=DeviceCATrust([CA.cert]))
SIGNED = base64.b64decode(sign_body(DEVICE, BODY))  # once: ECDSA signatures vary in length


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        verified = fn(*args)
    except IdentityError as exc:
        return ("refused", exc.reason)
    return ("ok", verified.cert_sha256 if verified is not None else None)


def both(header: str, body: bytes) -> tuple[object, object]:
    headers = {"mdm-signature": header}
    fast = outcome(IdentityVerifier(CONFIG).identify, headers, body)
    full = outcome(identify, headers, body, CONFIG)
    return fast, full


def test_a_good_signature_takes_the_fast_path_with_the_same_answer() -> None:
    verifier = IdentityVerifier(CONFIG)
    header = sign_body(DEVICE, BODY)
    for _ in range(2):  # the second time from the certificate cache
        got = verifier.identify({"mdm-signature": header}, BODY)
        assert got is not None
        assert got.cert_sha256 == identify({"mdm-signature": header}, BODY, CONFIG).cert_sha256
    assert verifier.fast == 2 and verifier.full == 0


@pytest.mark.parametrize("case", ["other-body", "stranger", "sha512", "no-attributes"])
def test_fast_and_full_paths_agree(case: str) -> None:
    body = BODY
    header = sign_body(DEVICE, BODY)
    if case == "other-body":
        body = BODY + b" "
    elif case == "stranger":
        header = sign_body(STRANGER, BODY)
    elif case == "sha512":
        header = sign_body(DEVICE, BODY, hash_name="sha512")
    elif case == "no-attributes":
        header = sign_body(DEVICE, BODY, signed_attributes=False)
    fast, full = both(header, body)
    assert fast == full


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_mutation_of_the_signature_is_accepted_by_one_path_only(data: st.DataObject) -> None:
    der = bytearray(SIGNED)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    fast, full = both(base64.b64encode(bytes(der)).decode(), BODY)
    assert fast[0] == full[0], (fast, full)
    if fast[0] == "ok":
        assert fast == full


def test_the_real_ber_signature_from_a_device(realworld: Path) -> None:
    header = realworld / "mdmsig" / "micromdm_nanomdm_cryptoutil_mdmSignatureHeader2.b64"
    body = realworld / "mdmsig" / "micromdm_nanomdm_cryptoutil_mdmSignatureBody2.plist"
    config = IdentityConfig(trust=None)
    value = header.read_text().strip()
    fast = IdentityVerifier(config).identify({"mdm-signature": value}, body.read_bytes())
    full = identify({"mdm-signature": value}, body.read_bytes(), config)
    assert fast is not None and full is not None and fast.cert_sha256 == full.cert_sha256
    tampered = body.read_bytes() + b"x"
    with pytest.raises(IdentityError):
        IdentityVerifier(config).identify({"mdm-signature": value}, tampered)


def report_outcome(fn, body: bytes):  # type: ignore[no-untyped-def]
    try:
        r = fn(body)
    except MDMProtocolError as exc:
        return ("refused", exc.reason)
    return (
        "ok",
        r.status,
        r.command_uuid,
        r.enrollment,
        r.enrollment.enrollment_key,
        dict(r.raw),
        r.extra_json,
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["UDID", "Status", "CommandUUID", "EnrollmentID", "Other"]),
        st.one_of(
            st.sampled_from(["Idle", "Acknowledged", "NotNow", "Error", "Bogus", ""]),
            st.text(alphabet="AZaz09-.:_ <&", min_size=0, max_size=12),
            # Around the 64-character bound of UDID and CommandUUID, in either case.
            st.builds(lambda c, n: c * n, st.sampled_from("aF0-"), st.integers(60, 70)),
        ),
    )
)
def test_report_fast_path_equals_parse_result(values: dict[str, str]) -> None:
    body = plistlib.dumps(values)
    assert report_outcome(parse_report, body) == report_outcome(parse_result, body)


@pytest.mark.parametrize("size", [63, 64, 65, 200])
@pytest.mark.parametrize("key", ["UDID", "CommandUUID"])
def test_report_fast_path_keeps_the_bounds(key: str, size: int) -> None:
    values = {"UDID": "00008020-000915083c80012e", "Status": "NotNow", "CommandUUID": "c-1"}
    body = plistlib.dumps({**values, key: "a" * size})
    fast, full = report_outcome(parse_report, body), report_outcome(parse_result, body)
    assert fast == full
    if size > 64:
        assert fast == ("refused", "too_long")
    else:
        assert fast[0] == "ok"
