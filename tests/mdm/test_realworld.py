"""Real plists and a real Mdm-Signature captured by other projects (see realworld/INDEX.md)."""

from __future__ import annotations

import base64
import datetime as dt
import plistlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms

from rollout.mdm import (
    Authenticate,
    CheckOut,
    CommandResult,
    IdentityConfig,
    IdentityError,
    MDMProtocolError,
    Status,
    TokenUpdate,
    cert_sha256,
    identify,
    install_provisioning_profile,
    parse_checkin,
    parse_command,
    parse_provisioning_profile_list,
    parse_result,
    verify_mdm_signature,
)

from .conftest import REALWORLD, realworld_file

# These devices send 40-hex-digit UDIDs in lower case; the parsers hand out the canonical
# (upper-case) form and leave the decoded plist as it came.
CMDMNT_UDID = "1C111C111C111C111C111C111C111C111C111C11"
NANO_UDID = "663B07BB783E9ADE1DAE4FBB92EA12AFC0CE5B69"
NANO_TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


def _result(body: bytes) -> CommandResult:
    return parse_result(body)


def check_ppl_command(body: bytes) -> None:
    # Server -> device: a command, not a report.
    parsed = parse_command(body)
    assert parsed.command_uuid == "0001_ProvisioningProfileList"
    assert parsed.request_type == "ProvisioningProfileList"
    assert parsed.command["ManagedOnly"] is False
    for parse in (parse_result, parse_checkin):
        with pytest.raises(MDMProtocolError) as err:
            parse(body)
        assert err.value.reason == "wrong_kind"


def check_ppl_response(body: bytes) -> None:
    result = _result(body)
    assert result.status is Status.ACKNOWLEDGED
    assert result.command_uuid == "0001_ProvisioningProfileList"
    assert result.enrollment_key == "00008020-000915083C80012E"
    (item,) = parse_provisioning_profile_list(result)
    assert item.uuid == "493d9dc8-e4c0-4fd8-bd8e-8fd4c0dc7b0c"
    assert item.name == "My Company (February 2019 - February 2020)"
    assert item.expiry_date == dt.datetime(2020, 2, 12, 20, 58, 40, tzinfo=dt.UTC)
    assert item.is_expired()


def check_checkout(body: bytes) -> None:
    msg = parse_checkin(body)
    assert isinstance(msg, CheckOut)
    assert msg.enrollment_key == CMDMNT_UDID
    assert msg.raw["UDID"] == CMDMNT_UDID.lower()
    assert msg.topic == "com.apple.mgmt.XServer.1c111c11-1c11-1c11-1c11-1c111c111c11"


def check_format_error(body: bytes) -> None:
    result = _result(body)
    assert result.status is Status.COMMAND_FORMAT_ERROR
    assert result.command_uuid == "52aab5d2-6a61-4fe8-b685-44f8b56972d0"
    assert result.error_chain == ()
    assert result.enrollment_key == CMDMNT_UDID


def check_unmanaged_error(body: bytes) -> None:
    result = _result(body)
    assert result.status is Status.ERROR
    assert result.command_uuid == "b2da2591-a2e5-45e5-8dd8-0ffb050d8407"
    (item,) = result.error_chain
    assert (item.code, item.domain) == (12013, "MCMDMErrorDomain")
    # The fixture holds literal backslash escapes (a Python bytes repr pasted as text); they
    # are kept exactly as sent, not "repaired" into curly quotes.
    expected = (
        "The profile \\xe2\\x80\\x9corg.github.cmdmnt.commandment.trust\\xe2\\x80\\x9d "
        "is not managed by MDM."
    )
    assert item.localized_description == expected
    assert item.us_english_description == expected
    assert "\u201c" not in item.localized_description


def check_not_now(body: bytes) -> None:
    result = _result(body)
    assert result.status is Status.NOT_NOW and not result.status.is_final
    assert result.command_uuid == "bb5d7813-e7c3-4279-b954-4b678925de5f"


def check_user_token_update(body: bytes) -> None:
    msg = parse_checkin(body)
    assert isinstance(msg, TokenUpdate)
    assert msg.enrollment.udid == "E3568F17-92ED-450A-8904-C3BF4CB7E9A5"
    assert msg.enrollment.user_id == "A522C2FB-D0BA-487E-BBC6-BE0DB2DC7883"
    assert msg.enrollment.user_short_name == "cjoe"
    assert msg.enrollment.user_long_name == "Commando Joe"
    assert msg.enrollment.is_user_channel
    assert msg.enrollment_key == (
        "E3568F17-92ED-450A-8904-C3BF4CB7E9A5:A522C2FB-D0BA-487E-BBC6-BE0DB2DC7883"
    )
    assert msg.enrollment.device_key == "E3568F17-92ED-450A-8904-C3BF4CB7E9A5"
    assert msg.not_on_console is False
    assert msg.push_magic == "B81B1FEC-09C6-4EC2-871C-E521EC971B38"
    assert msg.topic == "com.apple.mgmt.commandment.dev"
    assert msg.token == b"00201052-A2D0-403D-B857-72F913F5BCCD\n"
    assert not msg.has_unlock_token


def check_idle(body: bytes) -> None:
    result = _result(body)
    assert result.status is Status.IDLE and result.command_uuid is None
    assert result.enrollment_key == "419D33EC-06E6-558D-AD52-601BA1867730"


def check_fleet_ack(body: bytes) -> None:
    assert b'<plist version="1.0"> \n' in body and b"</string> \n" in body  # trailing spaces
    result = _result(body)
    assert result.status is Status.ACKNOWLEDGED
    assert result.command_uuid == "9F09D114-BCFD-42AD-A974-371AA7D6256E"
    assert result.enrollment_key == "EFCAF06F-127C-42EA-BF01-E1923A836991"


def check_nano_authenticate(body: bytes) -> None:
    msg = parse_checkin(body)
    assert isinstance(msg, Authenticate)
    assert msg.udid == NANO_UDID and msg.enrollment_id is None
    assert msg.raw["UDID"] == NANO_UDID.lower()
    assert msg.topic == NANO_TOPIC
    assert (msg.os_version, msg.build_version) == ("9.3.5", "13G36")
    assert (msg.product_name, msg.serial_number) == ("iPad2,5", "F5JM992LF193")
    assert msg.imei is None and msg.device_name is None


def check_nano_token_update(body: bytes) -> None:
    msg = parse_checkin(body)
    assert isinstance(msg, TokenUpdate)
    assert msg.enrollment_key == NANO_UDID and msg.topic == NANO_TOPIC
    assert msg.push_magic == "CEFDF0BD-E342-4A27-8742-E930EA116B0A"
    assert msg.token_hex == base64.b64decode("R+juwGLC9ynsFwPBs+GPGXHYXwC+dkRdNAgLqnAbX1E=").hex()
    assert len(msg.token_hex) == 64
    assert msg.awaiting_configuration is False
    assert msg.has_unlock_token and msg.unlock_token is not None
    assert msg.unlock_token.startswith(b"DATA")  # keybag blob
    assert "unlock_token" not in repr(msg) and "DATA" not in repr(msg)


EXPECTED: dict[str, Callable[[bytes], Any]] = {
    "appledocs_ProvisioningProfileList_command.plist": check_ppl_command,
    "appledocs_ProvisioningProfileList_response.plist": check_ppl_response,
    "cmdmnt_commandment_CheckOut_iOS-11.3.1.xml": check_checkout,
    "cmdmnt_commandment_Errors_iOS-11.3.1-CommandFormatError.xml": check_format_error,
    "cmdmnt_commandment_Errors_iOS-11.3.1-RemoveProfile-Unmanaged.xml": check_unmanaged_error,
    "cmdmnt_commandment_NotNow_iOS-11.3.1.xml": check_not_now,
    "cmdmnt_commandment_TokenUpdate_10.12.2-user.xml": check_user_token_update,
    "fleetdm_fleet_mdmproxy_test_Idle.plist": check_idle,
    "fleetdm_fleet_mdmproxy_test_apple-example_Acknowledged.plist": check_fleet_ack,
    "micromdm_nanomdm_Authenticate.1.plist": check_nano_authenticate,
    "micromdm_nanomdm_TokenUpdate.1.plist": check_nano_token_update,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_plist(name: str) -> None:
    EXPECTED[name](realworld_file("plists", name).read_bytes())


def test_every_real_plist_is_covered() -> None:
    folder = realworld_file("plists")
    assert {p.name for p in folder.iterdir()} <= set(EXPECTED)


def test_real_report_is_not_a_checkin_and_vice_versa() -> None:
    report = realworld_file("plists", "fleetdm_fleet_mdmproxy_test_Idle.plist").read_bytes()
    checkin = realworld_file("plists", "micromdm_nanomdm_Authenticate.1.plist").read_bytes()
    with pytest.raises(MDMProtocolError, match="wrong_kind"):
        parse_checkin(report)
    with pytest.raises(MDMProtocolError, match="wrong_kind"):
        parse_result(checkin)


# --- real provisioning profiles into the install command ------------------------------------


def test_real_profile_travels_whole() -> None:
    profile = realworld_file(
        "profiles", "fastlane_fastlane_Fastlane_PR_Unit_Tests.mobileprovision"
    ).read_bytes()
    template = install_provisioning_profile(profile)
    body = template.render("0001_InstallProvisioningProfile")
    assert body == template.render_with_plistlib("0001_InstallProvisioningProfile")
    assert plistlib.loads(body)["Command"]["ProvisioningProfile"] == profile


def test_unsigned_profile_is_refused() -> None:
    xml = realworld_file(
        "profiles", "fastlane_fastlane_downloaded_provisioning_profile.mobileprovision"
    ).read_bytes()
    with pytest.raises(MDMProtocolError) as err:
        install_provisioning_profile(xml)
    assert err.value.reason == "bad_value"


# --- the real Mdm-Signature -----------------------------------------------------------------


def _real_signature() -> tuple[str, bytes]:
    header = realworld_file("mdmsig", "micromdm_nanomdm_cryptoutil_mdmSignatureHeader2.b64")
    body = realworld_file("mdmsig", "micromdm_nanomdm_cryptoutil_mdmSignatureBody2.plist")
    return header.read_text(), body.read_bytes()


def test_real_mdm_signature_verifies() -> None:
    header, body = _real_signature()
    cert = verify_mdm_signature(header, body)
    assert cert.subject.rfc4514_string() == ""  # the SCEP-issued identity has an empty subject
    assert cert.issuer.rfc4514_string() == "CN=ca,OU=SCEP CA,O=scep,C=US"
    assert len(cert_sha256(cert)) == 64
    # And the signed body is a normal Idle report.
    result = parse_result(body)
    assert result.status is Status.IDLE
    assert result.enrollment_key == "D4D56083-BFB0-5047-8BDF-2727BACDC59B"


def test_real_signature_through_identify_without_chain() -> None:
    header, body = _real_signature()
    identity = identify({"mdm-signature": header}, body, IdentityConfig(trust=None))
    assert identity is not None
    assert identity.source == "mdm-signature" and identity.chain_checked is False
    assert identity.cert_sha256 == cert_sha256(verify_mdm_signature(header, body))


@pytest.mark.parametrize("position", [0, 150, 301])
def test_real_signature_fails_after_one_body_byte(position: int) -> None:
    header, body = _real_signature()
    changed = bytearray(body)
    changed[position] ^= 0x01
    with pytest.raises(IdentityError) as err:
        verify_mdm_signature(header, bytes(changed))
    assert err.value.reason == "bad_signature"
    with pytest.raises(IdentityError):
        verify_mdm_signature(header, body + b"\n")


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_real_signature_fails_after_one_signature_byte(which: str) -> None:
    header, body = _real_signature()
    der = base64.b64decode(header)
    signature = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native
    start = der.index(signature)
    offset = {"first": 0, "middle": len(signature) // 2, "last": len(signature) - 1}[which]
    changed = bytearray(der)
    changed[start + offset] ^= 0x80
    with pytest.raises(IdentityError) as err:
        verify_mdm_signature(base64.b64encode(bytes(changed)).decode(), body)
    assert err.value.reason == "bad_signature"


def test_real_signature_fails_after_changed_certificate_key_byte() -> None:
    header, body = _real_signature()
    der = bytearray(base64.b64decode(header))
    der[300] ^= 0x01  # inside the signer's RSA modulus
    with pytest.raises(IdentityError) as err:
        verify_mdm_signature(base64.b64encode(bytes(der)).decode(), body)
    assert err.value.reason in {"bad_signature", "bad_cert"}


def test_realworld_folder_location() -> None:
    assert REALWORLD.name == "realworld" and REALWORLD.parent.name == "shared"
    assert isinstance(REALWORLD, Path)
