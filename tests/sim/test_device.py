"""The simulated device's pure protocol logic, and its session driver over a scripted transport."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable

import pytest

from rollout.mdm import (
    Authenticate,
    CommandResult,
    DeviceCATrust,
    Status,
    TokenUpdate,
    install_provisioning_profile,
    parse_checkin,
    parse_provisioning_profile_list,
    parse_result,
    provisioning_profile_list,
    remove_provisioning_profile,
    verify_mdm_signature,
)
from rollout.mdm.commands import CommandTemplate
from rollout.sim.device import (
    BAD_PROFILE,
    CANNOT_INSTALL,
    CANNOT_REMOVE,
    CHECKIN_CONTENT_TYPE,
    CONNECT_CONTENT_TYPE,
    INVALID_REQUEST_TYPE,
    MDM_DOMAIN,
    NOT_MANAGED,
    PROFILE_DOMAIN,
    DeviceBehavior,
    SimDevice,
    TransportError,
)
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile, tamper

UDID_RE = re.compile(r"00008[0-9A-F]{3}-[0-9A-F]{16}")


@pytest.fixture
def device(device_ca: Issued) -> SimDevice:
    return SimDevice.generate(1, seed=42, ca=device_ca)


def run(device: SimDevice, template: CommandTemplate, uuid: str = "CMD-1") -> CommandResult:
    result = parse_result(device.handle_command(template.render(uuid)))
    assert result.enrollment.udid == device.udid
    return result


def codes(result: CommandResult) -> list[tuple[str, int]]:
    return [(item.domain, item.code) for item in result.error_chain]


# --- identity and bodies ----------------------------------------------------------------------


def test_generate_is_deterministic_and_udids_look_new_style(device_ca: Issued) -> None:
    a = SimDevice.generate(7, seed=1, ca=device_ca)
    b = SimDevice.generate(7, seed=1, ca=device_ca)
    c = SimDevice.generate(8, seed=1, ca=device_ca)
    assert (a.udid, a.push_token, a.push_magic, a.serial) == (
        b.udid,
        b.push_token,
        b.push_magic,
        b.serial,
    )
    assert a.udid != c.udid and a.push_token != c.push_token
    assert UDID_RE.fullmatch(a.udid)
    assert len(a.push_token) == 32 and len(a.push_token_hex) == 64


def test_checkin_bodies_parse_back_and_signatures_verify(
    device: SimDevice, device_ca: Issued
) -> None:
    trust = DeviceCATrust([device_ca.cert])
    auth = parse_checkin(device.authenticate_body())
    assert isinstance(auth, Authenticate)
    assert auth.enrollment.udid == device.udid
    assert auth.topic == device.topic
    assert auth.serial_number == device.serial
    assert auth.os_version == device.os_version
    token = parse_checkin(device.token_update_body())
    assert isinstance(token, TokenUpdate)
    assert token.token == device.push_token
    assert token.push_magic == device.push_magic
    assert parse_checkin(device.checkout_body()).message_type == "CheckOut"
    idle = parse_result(device.idle_body())
    assert idle.status is Status.IDLE and idle.command_uuid is None

    for body, content_type in (
        (device.authenticate_body(), CHECKIN_CONTENT_TYPE),
        (device.token_update_body(), CHECKIN_CONTENT_TYPE),
        (device.idle_body(), CONNECT_CONTENT_TYPE),
    ):
        headers = device.headers(body, content_type)
        assert headers["Content-Type"] == content_type
        signer = verify_mdm_signature(headers["Mdm-Signature"], body)
        assert signer == device.identity.cert
        trust.check(signer)
    assert device.identity.cert.subject.rfc4514_string().startswith(f"CN={device.udid}")


def test_unsigned_device_sends_no_signature(device_ca: Issued) -> None:
    device = SimDevice.generate(2, ca=device_ca, sign_messages=False)
    assert "Mdm-Signature" not in device.headers(b"x", CONNECT_CONTENT_TYPE)


# --- InstallProvisioningProfile ---------------------------------------------------------------


def test_good_enterprise_profile_is_acknowledged_and_listed(
    device: SimDevice, enterprise_profile: bytes
) -> None:
    result = run(device, install_provisioning_profile(enterprise_profile))
    assert result.status is Status.ACKNOWLEDGED
    assert result.command_uuid == "CMD-1"
    assert device.counters.installs == 1

    listing = run(device, provisioning_profile_list(), "CMD-2")
    items = parse_provisioning_profile_list(listing)
    assert [i.uuid.upper() for i in items] == ["0F2C8A1E-3B4D-4C5E-9F60-718293A4B5C6"]
    assert items[0].name == "Sim Enterprise"
    installed = next(iter(device.installed.values())).profile
    assert items[0].expiry_date == installed.expires_at


def test_reinstalling_the_same_uuid_replaces_it(
    device: SimDevice, apple_chain: AppleLikeChain
) -> None:
    uuid = "11111111-2222-4333-8444-555555555555"
    first = make_profile(apple_chain, uuid=uuid, name="First")
    second = make_profile(apple_chain, uuid=uuid, name="Second")
    assert run(device, install_provisioning_profile(first)).status is Status.ACKNOWLEDGED
    assert run(device, install_provisioning_profile(second), "C2").status is Status.ACKNOWLEDGED
    items = parse_provisioning_profile_list(run(device, provisioning_profile_list(), "C3"))
    assert [i.name for i in items] == ["Second"]


def test_expired_profile_is_refused_with_25001(
    device: SimDevice, apple_chain: AppleLikeChain
) -> None:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired = make_profile(
        apple_chain, created_at=created, expires_at=created + dt.timedelta(days=365)
    )
    result = run(device, install_provisioning_profile(expired))
    assert result.status is Status.ERROR
    assert codes(result) == [(PROFILE_DOMAIN, CANNOT_INSTALL), (PROFILE_DOMAIN, BAD_PROFILE)]
    assert "expired" in (result.error_chain[1].us_english_description or "")
    assert device.installed == {}


def test_tampered_profile_is_refused_with_25000(
    device: SimDevice, enterprise_profile: bytes
) -> None:
    result = run(device, install_provisioning_profile(tamper(enterprise_profile)))
    assert result.status is Status.ERROR
    assert codes(result)[0] == (PROFILE_DOMAIN, BAD_PROFILE)
    assert "signature" in result.error_chain[1].localized_description


def test_bytes_that_are_no_profile_are_refused_with_25000(device: SimDevice) -> None:
    result = run(device, install_provisioning_profile(b"\x30\x03abc"))
    assert result.status is Status.ERROR
    assert codes(result)[0] == (PROFILE_DOMAIN, BAD_PROFILE)


def test_development_profile_without_this_udid_is_refused(
    device: SimDevice, apple_chain: AppleLikeChain
) -> None:
    other = make_profile(apple_chain, kind="development", devices=["00008030-0000000000000001"])
    result = run(device, install_provisioning_profile(other))
    assert result.status is Status.ERROR
    assert codes(result)[0] == (PROFILE_DOMAIN, CANNOT_INSTALL)
    assert "not included" in result.error_chain[1].localized_description

    mine = make_profile(apple_chain, kind="development", devices=[device.udid.lower()])
    assert run(device, install_provisioning_profile(mine), "C2").status is Status.ACKNOWLEDGED


def test_wrong_platform_is_refused(device: SimDevice, apple_chain: AppleLikeChain) -> None:
    tv = make_profile(apple_chain, platforms=["tvOS"])
    result = run(device, install_provisioning_profile(tv))
    assert result.status is Status.ERROR
    assert codes(result)[0] == (PROFILE_DOMAIN, CANNOT_INSTALL)
    assert "platform" in result.error_chain[1].localized_description


def test_macos_takes_ios_profiles_but_not_developer_id(
    device_ca: Issued, apple_chain: AppleLikeChain, enterprise_profile: bytes
) -> None:
    mac = SimDevice.generate(3, ca=device_ca, platform="macOS")
    assert run(mac, install_provisioning_profile(enterprise_profile)).status is Status.ACKNOWLEDGED
    developer_id = make_profile(apple_chain, kind="developer-id")
    result = run(mac, install_provisioning_profile(developer_id), "C2")
    assert result.status is Status.ERROR
    assert codes(result)[0] == (PROFILE_DOMAIN, CANNOT_INSTALL)
    assert parse_checkin(mac.authenticate_body()).raw["DeviceName"]


def test_untrusted_chain_is_refused_when_the_device_has_anchors(
    device_ca: Issued, apple_chain: AppleLikeChain, enterprise_profile: bytes
) -> None:
    strict = SimDevice.generate(4, ca=device_ca, trust_anchors=[device_ca.cert])
    result = run(strict, install_provisioning_profile(enterprise_profile))
    assert result.status is Status.ERROR and codes(result)[0] == (PROFILE_DOMAIN, BAD_PROFILE)
    trusting = SimDevice.generate(5, ca=device_ca, trust_anchors=apple_chain.anchors)
    assert (
        run(trusting, install_provisioning_profile(enterprise_profile)).status
        is Status.ACKNOWLEDGED
    )


# --- list and remove --------------------------------------------------------------------------


def test_list_honours_managed_only(
    device: SimDevice, apple_chain: AppleLikeChain, enterprise_profile: bytes
) -> None:
    assert parse_provisioning_profile_list(run(device, provisioning_profile_list())) == ()
    device.preinstall(make_profile(apple_chain, name="By Hand"))
    run(device, install_provisioning_profile(enterprise_profile), "C2")
    everything = parse_provisioning_profile_list(run(device, provisioning_profile_list(), "C3"))
    assert sorted(i.name for i in everything) == ["By Hand", "Sim Enterprise"]
    managed = parse_provisioning_profile_list(
        run(device, provisioning_profile_list(managed_only=True), "C4")
    )
    assert [i.name for i in managed] == ["Sim Enterprise"]


def test_remove_present_absent_and_unmanaged(
    device: SimDevice, apple_chain: AppleLikeChain, enterprise_profile: bytes
) -> None:
    run(device, install_provisioning_profile(enterprise_profile))
    uuid = "0f2c8a1e-3b4d-4c5e-9f60-718293a4b5c6"  # any case
    assert run(device, remove_provisioning_profile(uuid), "C2").status is Status.ACKNOWLEDGED
    assert device.installed == {} and device.counters.removals == 1

    absent = run(device, remove_provisioning_profile(uuid), "C3")
    assert absent.status is Status.ERROR
    assert codes(absent)[0] == (PROFILE_DOMAIN, CANNOT_REMOVE)

    by_hand = device.preinstall(make_profile(apple_chain, name="By Hand"))
    unmanaged = run(device, remove_provisioning_profile(by_hand.uuid), "C4")
    assert unmanaged.status is Status.ERROR
    assert codes(unmanaged) == [(MDM_DOMAIN, NOT_MANAGED)]
    assert len(device.installed) == 1


# --- malformed and unknown commands -----------------------------------------------------------


def test_unknown_request_type_is_a_command_format_error(device: SimDevice) -> None:
    result = run(device, CommandTemplate.build("DeviceInformation", {"Queries": ["UDID"]}))
    assert result.status is Status.COMMAND_FORMAT_ERROR
    assert codes(result) == [(MDM_DOMAIN, INVALID_REQUEST_TYPE)]


def test_a_body_that_is_no_plist_is_a_command_format_error(device: SimDevice) -> None:
    outcome = device.execute(b"this is not a plist")
    assert outcome.status is Status.COMMAND_FORMAT_ERROR
    assert outcome.command_uuid is None
    # A broken plist that still shows its CommandUUID gets it echoed back.
    broken = install_provisioning_profile(b"\x30\x00").render("CMD-77")[
        : -len(b"</dict>\n</plist>\n")
    ]
    result = parse_result(device.handle_command(broken))
    assert result.status is Status.COMMAND_FORMAT_ERROR
    assert result.command_uuid == "CMD-77"


def test_install_without_profile_data_is_a_command_format_error(device: SimDevice) -> None:
    template = CommandTemplate.build("InstallProvisioningProfile", {"ProvisioningProfile": "x"})
    assert run(device, template).status is Status.COMMAND_FORMAT_ERROR


# --- behaviours -------------------------------------------------------------------------------


def test_notnow_then_ok_counts_per_command(device_ca: Issued, enterprise_profile: bytes) -> None:
    device = SimDevice.generate(
        9, ca=device_ca, behavior=DeviceBehavior(mode="notnow_then_ok", notnow_times=2)
    )
    install = install_provisioning_profile(enterprise_profile)
    assert [run(device, install, "A").status for _ in range(3)] == [
        Status.NOT_NOW,
        Status.NOT_NOW,
        Status.ACKNOWLEDGED,
    ]
    assert run(device, install, "B").status is Status.NOT_NOW  # a new command starts over
    # ProvisioningProfileList never answers NotNow.
    assert run(device, provisioning_profile_list(), "L").status is Status.ACKNOWLEDGED
    assert device.counters.notnows == 3
    assert device.counters.commands_seen == 5


@pytest.mark.parametrize(
    ("behavior", "status", "chain"),
    [
        (
            DeviceBehavior(mode="error"),
            Status.ERROR,
            [(PROFILE_DOMAIN, CANNOT_INSTALL), ("NSPOSIXErrorDomain", 28)],
        ),
        (DeviceBehavior(mode="error", error="not_managed"), Status.ERROR, [(MDM_DOMAIN, 12014)]),
        (DeviceBehavior(mode="format_error"), Status.COMMAND_FORMAT_ERROR, []),
    ],
)
def test_error_behaviours_override_installs_only(
    device_ca: Issued,
    enterprise_profile: bytes,
    behavior: DeviceBehavior,
    status: Status,
    chain: list[tuple[str, int]],
) -> None:
    device = SimDevice.generate(10, ca=device_ca, behavior=behavior)
    result = run(device, install_provisioning_profile(enterprise_profile))
    assert result.status is status
    assert codes(result) == chain
    assert run(device, provisioning_profile_list(), "L").status is Status.ACKNOWLEDGED


def test_behavior_is_validated() -> None:
    with pytest.raises(ValueError):
        DeviceBehavior(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DeviceBehavior(notnow_times=-1)


# --- the session driver over a scripted transport ---------------------------------------------


class ScriptedTransport:
    """Answers each PUT with the next scripted reply (a callable may compute it)."""

    def __init__(self, *replies: tuple[int, bytes] | Callable[[bytes], tuple[int, bytes]]):
        self.replies = list(replies)
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def put(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self.sent.append((path, body, headers))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, tuple):
            return reply
        return reply(body)


def test_session_runs_commands_until_the_empty_body(
    device: SimDevice, enterprise_profile: bytes
) -> None:
    install = install_provisioning_profile(enterprise_profile).render("I-1")
    listing = provisioning_profile_list().render("L-1")
    transport = ScriptedTransport((200, install), (200, listing), (200, b""))
    result = asyncio.run(device.run_session(transport))
    assert result.ok and result.requests == 3
    assert [o.status for o in result.outcomes] == [Status.ACKNOWLEDGED, Status.ACKNOWLEDGED]
    paths = {path for path, _, _ in transport.sent}
    assert paths == {"/mdm/connect"}
    first = parse_result(transport.sent[0][1])
    assert first.status is Status.IDLE
    second = parse_result(transport.sent[1][1])
    assert (second.command_uuid, second.status) == ("I-1", Status.ACKNOWLEDGED)
    for _, body, headers in transport.sent:
        verify_mdm_signature(headers["Mdm-Signature"], body)
    assert device.counters.sessions == 1 and device.counters.requests == 3


def test_session_stops_on_a_non_200(device: SimDevice) -> None:
    result = asyncio.run(device.run_session(ScriptedTransport((403, b""))))
    assert result.ended == "http_error" and result.http_status == 403
    assert device.counters.http_errors == 1


def test_session_is_capped(device: SimDevice) -> None:
    endless = ScriptedTransport((200, provisioning_profile_list().render("L")))
    result = asyncio.run(device.run_session(endless, max_commands=5))
    assert result.ended == "cap"
    assert len(result.outcomes) == 5 and result.requests == 6


def test_session_records_transport_failures(device: SimDevice) -> None:
    def fail(body: bytes) -> tuple[int, bytes]:
        raise TransportError("connection refused")

    result = asyncio.run(device.run_session(ScriptedTransport(fail)))
    assert result.ended == "transport_error" and "refused" in (result.error or "")


def test_offline_device_never_connects(device_ca: Issued) -> None:
    device = SimDevice.generate(11, ca=device_ca, behavior=DeviceBehavior(mode="offline"))
    transport = ScriptedTransport((200, b""))
    assert asyncio.run(device.run_session(transport)).ended == "offline"
    assert transport.sent == []


def test_slow_device_waits_before_answering(device_ca: Issued) -> None:
    device = SimDevice.generate(12, ca=device_ca, behavior=DeviceBehavior(delay_s=0.05))
    transport = ScriptedTransport((200, provisioning_profile_list().render("L")), (200, b""))
    result = asyncio.run(device.run_session(transport))
    assert result.ok and result.elapsed_s >= 0.05


def test_enroll_sends_authenticate_then_token_update(device: SimDevice, device_ca: Issued) -> None:
    transport = ScriptedTransport((200, b""))
    result = asyncio.run(device.enroll(transport))
    assert result.ok and device.enrolled
    kinds = [parse_checkin(body).message_type for _, body, _ in transport.sent]
    assert kinds == ["Authenticate", "TokenUpdate"]
    assert transport.sent[0][2]["Content-Type"] == CHECKIN_CONTENT_TYPE

    refused = SimDevice.generate(13, ca=device_ca)
    rejected = asyncio.run(refused.enroll(ScriptedTransport((400, b""))))
    assert (rejected.authenticate_status, rejected.token_update_status) == (400, None)
    assert not rejected.ok and not refused.enrolled
