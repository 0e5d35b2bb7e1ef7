"""Command plists: Apple's shape, the template splice, CommandUUID validation."""

from __future__ import annotations

import plistlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.mdm import (
    CommandTemplate,
    MDMProtocolError,
    install_provisioning_profile,
    parse_command,
    provisioning_profile_list,
    remove_provisioning_profile,
)

PROFILE = b"\x30\x80\x06\x09*\x86H\x86\xf7\r\x01\x07\x02" + bytes(range(256)) * 40


def test_install_has_apple_shape() -> None:
    command_uuid = str(uuid.uuid4())
    body = install_provisioning_profile(PROFILE).render(command_uuid)
    decoded = plistlib.loads(body)
    assert decoded == {
        "CommandUUID": command_uuid,
        "Command": {"RequestType": "InstallProvisioningProfile", "ProvisioningProfile": PROFILE},
    }
    # Siblings at the top level, and the profile travels as <data>, not as a string.
    assert set(decoded) == {"CommandUUID", "Command"}
    assert isinstance(decoded["Command"]["ProvisioningProfile"], bytes)
    assert b"<key>ProvisioningProfile</key>\n\t\t<data>" in body
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


def test_list_and_remove_shapes() -> None:
    for managed_only in (True, False):
        decoded = plistlib.loads(provisioning_profile_list(managed_only).render("0001_List"))
        assert decoded == {
            "CommandUUID": "0001_List",
            "Command": {"RequestType": "ProvisioningProfileList", "ManagedOnly": managed_only},
        }
    decoded = plistlib.loads(remove_provisioning_profile("493d9dc8-e4c0").render("r-1"))
    assert decoded["Command"] == {
        "RequestType": "RemoveProvisioningProfile",
        "UUID": "493d9dc8-e4c0",
    }


@pytest.mark.parametrize(
    "template",
    [
        install_provisioning_profile(PROFILE),
        provisioning_profile_list(True),
        remove_provisioning_profile("a&b<c>"),  # escaped by plistlib in the pre-rendered part
    ],
    ids=["install", "list", "remove"],
)
def test_splice_equals_plistlib(template: CommandTemplate) -> None:
    for command_uuid in (str(uuid.uuid4()), str(uuid.uuid4()).upper(), "0001_Install", "a:b.c-d"):
        spliced = template.render(command_uuid)
        assert spliced == template.render_with_plistlib(command_uuid)
        assert plistlib.loads(spliced)["CommandUUID"] == command_uuid
        parsed = parse_command(spliced)
        assert parsed.command_uuid == command_uuid
        assert parsed.request_type == template.request_type


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_.:\-]{1,128}", fullmatch=True))
def test_splice_equals_plistlib_for_any_valid_uuid(command_uuid: str) -> None:
    template = provisioning_profile_list(False)
    assert template.render(command_uuid) == template.render_with_plistlib(command_uuid)


def test_templates_render_the_same_bytes_each_build() -> None:
    # The placeholder is random, but it never shows in the output.
    one = install_provisioning_profile(PROFILE)
    two = install_provisioning_profile(PROFILE)
    assert one.render("x") == two.render("x")
    assert b"__COMMAND_UUID_" not in one.render("x")
    assert one == two


@pytest.mark.parametrize(
    "bad",
    ["", "a<b", "a&b", "a>b", "a b", "line\nbreak", "é", "x" * 129, '"quoted"', "tab\t"],
)
def test_command_uuid_needing_escapes_is_refused(bad: str) -> None:
    template = provisioning_profile_list()
    with pytest.raises(MDMProtocolError) as err:
        template.render(bad)
    assert err.value.reason == "bad_command_uuid"


def test_command_uuid_must_be_str() -> None:
    with pytest.raises(MDMProtocolError) as err:
        provisioning_profile_list().render(uuid.uuid4())  # type: ignore[arg-type]
    assert err.value.reason == "bad_command_uuid"


@pytest.mark.parametrize(
    "profile",
    [b"", b'<?xml version="1.0"?><plist/>', "text"],
    ids=["empty", "xml", "str"],
)
def test_install_refuses_non_der(profile: bytes) -> None:
    with pytest.raises(MDMProtocolError) as err:
        install_provisioning_profile(profile)
    assert err.value.reason == "bad_value"


def test_other_builder_values_refused() -> None:
    for call in (
        lambda: remove_provisioning_profile(""),
        lambda: provisioning_profile_list("yes"),  # type: ignore[arg-type]
        lambda: CommandTemplate.build(""),
        lambda: CommandTemplate.build("X", {"RequestType": "Y"}),
        lambda: CommandTemplate.build("X", {"Bad": object()}),
    ):
        with pytest.raises(MDMProtocolError) as err:
            call()
        assert err.value.reason == "bad_value"


def test_parse_command_refuses_reports_and_junk() -> None:
    report = plistlib.dumps({"Status": "Idle", "UDID": "X"})
    with pytest.raises(MDMProtocolError) as err:
        parse_command(report)
    assert err.value.reason == "wrong_kind"
    with pytest.raises(MDMProtocolError) as err:
        parse_command(plistlib.dumps({"CommandUUID": "x", "Command": {}}))
    assert err.value.reason == "missing_key"
    with pytest.raises(MDMProtocolError) as err:
        parse_command(plistlib.dumps({"CommandUUID": "x", "Command": []}))
    assert err.value.reason == "wrong_type"
