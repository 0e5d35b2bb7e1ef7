"""Kinds, fields, dates and the JSON / text forms of profiles made by the simulator."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes

from rollout.profiles import Profile, ProfileKind, classify, parse_profile, render_text
from rollout.sim.profiles import DEFAULT_DEVICES, AppleLikeChain, make_profile

CREATED = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2027, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


def _parse(chain: AppleLikeChain, **kwargs: object) -> Profile:
    kwargs.setdefault("created_at", CREATED)
    return parse_profile(make_profile(chain, **kwargs), trust_anchors=chain.anchors)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("enterprise", ProfileKind.ENTERPRISE),
        ("development", ProfileKind.DEVELOPMENT),
        ("ad-hoc", ProfileKind.AD_HOC),
        ("app-store", ProfileKind.APP_STORE),
        ("developer-id", ProfileKind.DEVELOPER_ID),
    ],
)
def test_every_kind(chain: AppleLikeChain, kind: str, expected: ProfileKind) -> None:
    profile = _parse(chain, kind=kind)
    assert profile.kind is expected
    assert profile.signature.valid and profile.signature.chain_trusted


def test_enterprise_fields(chain: AppleLikeChain) -> None:
    uuid = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
    profile = _parse(
        chain,
        kind="enterprise",
        name="Fleet App 2026",
        uuid=uuid,
        team_id="ABCDE12345",
        team_name="Example Corp",
        bundle_id="com.example.fleet",
        expires_at=EXPIRES,
    )
    assert profile.uuid == uuid.lower()
    assert profile.name == "Fleet App 2026"
    assert profile.app_id == "ABCDE12345.com.example.fleet"
    assert profile.app_id_prefix == "ABCDE12345"
    assert profile.bundle_id == "com.example.fleet"
    assert (profile.team_id, profile.team_name) == ("ABCDE12345", "Example Corp")
    assert profile.platforms == ("iOS",)
    assert profile.created_at == CREATED and profile.expires_at == EXPIRES
    assert profile.created_at.tzinfo is not None
    assert profile.provisions_all_devices and profile.provisioned_devices == ()
    assert profile.allows_device("any-udid")
    [dev] = profile.developer_certificates
    assert dev.common_name == "iPhone Distribution: Example Corp (ABCDE12345)"
    assert dev.sha256 == chain.developer.cert.fingerprint(hashes.SHA256()).hex()
    assert dev.serial == format(chain.developer.cert.serial_number, "x")
    assert "CN=iPhone Distribution" in dev.subject


def test_wildcard_app_id_and_macos_app_id_key(chain: AppleLikeChain) -> None:
    assert _parse(chain, bundle_id="*").app_id == "ABCDE12345.*"
    assert _parse(chain, bundle_id="*").bundle_id == "*"
    mac = _parse(chain, kind="developer-id", bundle_id="com.example.mac")
    assert mac.app_id == "ABCDE12345.com.example.mac"
    assert mac.platforms == ("OSX",)


def test_devices(chain: AppleLikeChain) -> None:
    profile = _parse(chain, kind="ad-hoc", devices=("00008020-000915083C80012E", "abc"))
    assert profile.provisioned_devices == ("00008020-000915083C80012E", "abc")
    assert not profile.provisions_all_devices
    assert profile.allows_device("00008020-000915083c80012e")  # case-insensitive
    assert not profile.allows_device("00008020-FFFFFFFFFFFFFFFF")
    assert _parse(chain, kind="development").provisioned_devices == DEFAULT_DEVICES
    assert not _parse(chain, kind="app-store").allows_device(DEFAULT_DEVICES[0])


def test_dates_and_days_left(chain: AppleLikeChain) -> None:
    profile = _parse(chain, expires_at=EXPIRES)
    assert profile.days_left(EXPIRES - dt.timedelta(days=30)) == 30
    assert profile.days_left(EXPIRES - dt.timedelta(days=29, hours=1)) == 29
    assert profile.days_left(EXPIRES - dt.timedelta(hours=1)) == 0
    assert profile.days_left(EXPIRES + dt.timedelta(hours=1)) == -1
    assert not profile.is_expired(EXPIRES - dt.timedelta(seconds=1))
    assert profile.is_expired(EXPIRES)
    assert profile.is_expired(EXPIRES + dt.timedelta(days=400))
    with pytest.raises(ValueError, match="naive"):
        profile.is_expired(dt.datetime(2026, 6, 1))


def test_default_expiry_is_a_year(chain: AppleLikeChain) -> None:
    profile = _parse(chain)
    assert profile.expires_at - profile.created_at == dt.timedelta(days=365)


JSON_KEYS = {
    "uuid",
    "name",
    "app_id_name",
    "app_id",
    "team_id",
    "team_name",
    "platforms",
    "kind",
    "created_at",
    "expires_at",
    "provisions_all_devices",
    "provisioned_devices",
    "developer_certificates",
    "signature",
    "sha256",
}


def test_to_json(chain: AppleLikeChain) -> None:
    data = make_profile(chain, kind="development", created_at=CREATED, expires_at=EXPIRES)
    profile = parse_profile(data, trust_anchors=chain.anchors)
    out = profile.to_json()
    assert set(out) == JSON_KEYS
    json.dumps(out)  # serialisable as is
    assert out["kind"] == "development"
    assert out["created_at"] == "2026-01-10T12:00:00Z"
    assert out["expires_at"] == "2027-01-10T12:00:00Z"
    assert out["platforms"] == ["iOS"]
    assert isinstance(out["provisioned_devices"], list)
    assert set(out["developer_certificates"][0]) == {
        "subject",
        "common_name",
        "serial",
        "not_after",
        "sha256",
    }
    assert out["developer_certificates"][0]["not_after"].endswith("Z")
    assert set(out["signature"]) == {"valid", "chain_trusted", "signer", "signed_at", "reason"}
    assert out["signature"]["signed_at"] == "2026-01-10T12:00:00Z"
    assert out["signature"]["signer"] == "Test Apple iPhone OS Provisioning Profile Signing"
    assert out["sha256"] == hashlib.sha256(data).hexdigest()
    assert profile.size == len(data)


def test_profile_is_frozen_and_comparable(chain: AppleLikeChain) -> None:
    data = make_profile(chain)
    one, two = parse_profile(data), parse_profile(data)
    assert one == two
    with pytest.raises(AttributeError):
        one.name = "x"  # type: ignore[misc]


def test_render_text(chain: AppleLikeChain) -> None:
    profile = _parse(chain, name="Fleet App", expires_at=EXPIRES)
    text = render_text(profile, now=EXPIRES - dt.timedelta(days=10))
    assert "Fleet App" in text and profile.uuid in text
    assert "10 days left" in text
    assert "enterprise" in text and "all devices" in text
    assert "chain trusted" in text
    labels = [line.split(":")[0] for line in text.splitlines()]
    assert labels[:3] == ["Name", "UUID", "Kind"]
    values_at = {line.index(line.split(":", 1)[1].strip()) for line in text.splitlines()}
    assert len(values_at) == 1  # values are aligned
    assert "EXPIRED" in render_text(profile, now=EXPIRES)
    untrusted = parse_profile(make_profile(chain))
    assert "no trust anchors configured" in render_text(untrusted)


@pytest.mark.parametrize(
    ("platforms", "all_devices", "device_list", "gta", "expected"),
    [
        (["iOS"], True, False, False, ProfileKind.ENTERPRISE),
        (["iOS"], True, False, True, ProfileKind.ENTERPRISE),
        (["iOS"], True, True, False, ProfileKind.UNKNOWN),
        (["OSX"], True, False, False, ProfileKind.DEVELOPER_ID),
        (["macOS"], True, False, False, ProfileKind.DEVELOPER_ID),
        (["iOS", "OSX"], True, False, False, ProfileKind.ENTERPRISE),
        (["iOS"], False, True, True, ProfileKind.DEVELOPMENT),
        (["OSX"], False, True, True, ProfileKind.DEVELOPMENT),
        (["iOS"], False, True, False, ProfileKind.AD_HOC),
        (["iOS"], False, False, False, ProfileKind.APP_STORE),
        (["iOS", "xrOS"], False, False, False, ProfileKind.APP_STORE),
        (["tvOS"], False, False, False, ProfileKind.APP_STORE),
        (["iOS"], False, False, True, ProfileKind.UNKNOWN),
        # macOS has no ad hoc distribution: listed devices make a development profile
        (["OSX"], False, True, False, ProfileKind.DEVELOPMENT),
        (["macOS"], False, True, False, ProfileKind.DEVELOPMENT),
        (["iOS", "OSX"], False, True, False, ProfileKind.AD_HOC),
        # neither device key on macOS: the Mac App Store
        (["OSX"], False, False, False, ProfileKind.MAC_APP_STORE),
        (["macOS", "OSX"], False, False, False, ProfileKind.MAC_APP_STORE),
        (["OSX"], False, False, True, ProfileKind.UNKNOWN),
        ([], False, False, False, ProfileKind.UNKNOWN),
        (["Windows"], False, False, False, ProfileKind.UNKNOWN),
    ],
)
def test_kind_rules(
    platforms: list[str], all_devices: bool, device_list: bool, gta: bool, expected: ProfileKind
) -> None:
    got = classify(
        platforms=platforms,
        provisions_all_devices=all_devices,
        has_device_list=device_list,
        get_task_allow=gta,
    )
    assert got is expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("ad-hoc", ProfileKind.DEVELOPMENT), ("app-store", ProfileKind.MAC_APP_STORE)],
)
def test_macos_only_profiles(chain: AppleLikeChain, kind: str, expected: ProfileKind) -> None:
    profile = _parse(chain, kind=kind, platforms=("OSX",))
    assert profile.kind is expected
    assert profile.to_json()["kind"] == expected.value
    assert f"Kind:      {expected.value}" in render_text(profile)


def test_macos_security_get_task_allow(chain: AppleLikeChain) -> None:
    entitlements = {
        "com.apple.application-identifier": "ABCDE12345.com.example.mac",
        "com.apple.security.get-task-allow": True,
    }
    profile = _parse(
        chain,
        kind="development",
        platforms=("OSX",),
        extra_keys={"Entitlements": entitlements},
    )
    assert profile.kind is ProfileKind.DEVELOPMENT
