"""Real profiles from other projects' fixtures (read from ../shared/realworld, never copied).

Findings: all Apple-signed ones verify and chain to Apple Root CA at their signing time. The
2015-era ones also embed the legacy "Apple Root Certificate Authority" (Apple Computer, Inc.), but
their "Apple iPhone Certification Authority" is issued by Apple Root CA, so the configured anchor
is reached and the legacy root is simply unused. match_test.provisionprofile is the 2015 App Store
profile with "iOS" changed to "OSX": it parses, its signature is invalid, and by our rules a
macOS-only profile without device keys is a Mac App Store one (``mac-app-store``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509

from rollout.profiles import (
    ProfileKind,
    ProfileSignatureError,
    UnsignedPlistError,
    ensure_installable,
    load_trust_anchors,
    parse_profile,
)

APPLE_ROOT = "certs/apple_root_ca_from_Fastlane_PR_Unit_Tests.der"
SIGNER = "Apple iPhone OS Provisioning Profile Signing"


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


APPLE_SIGNED: dict[str, dict[str, Any]] = {
    "fastlane_fastlane_Fastlane_PR_Unit_Tests.mobileprovision": {
        "uuid": "c3e20987-ffea-4d11-b037-e8bf0a102561",
        "name": "Fastlane PR Unit Tests",
        "team_id": "VQVYM88YJ2",
        "team_name": "Jigx, Inc",
        "kind": ProfileKind.APP_STORE,
        "created_at": _utc(2023, 6, 29, 15, 40, 9),
        "expires_at": _utc(2024, 6, 28, 15, 21, 31),
        "platforms": ("iOS", "xrOS"),
        "devices": 0,
        "app_id": "VQVYM88YJ2.com.jigx.test.ios",
    },
    "fastlane_fastlane_fastlane-spec-fixtures-profiles_test.mobileprovision": {
        "uuid": "98264c6b-5151-4349-8d0f-66691e48ae35",
        "name": "tools.fastlane.app AppStore",
        "team_id": "439BBM9367",
        "team_name": "Felix Krause",
        "kind": ProfileKind.APP_STORE,
        "created_at": _utc(2015, 11, 8, 21, 9, 3),
        "expires_at": _utc(2016, 11, 7, 20, 58, 52),
        "platforms": ("iOS",),
        "devices": 0,
        "app_id": "439BBM9367.tools.fastlane.app",
    },
    "icyleaf_app_info_ios_adhoc.mobileprovision": {
        "uuid": "7d02c76e-f937-40e9-bdac-a5a389612352",
        "name": "iOS Full AdHoc",
        "team_id": "WKR87TTKML",
        "team_name": "Niceliving (Beijing) Technology Co., Ltd.",
        "kind": ProfileKind.AD_HOC,
        "created_at": _utc(2020, 7, 21, 8, 44, 54),
        "expires_at": _utc(2020, 10, 24, 8, 40, 28),
        "platforms": ("iOS",),
        "devices": 1,
        "app_id": "WKR87TTKML.com.icyleaf.appinfo.test",
    },
    "icyleaf_app_info_ios_development.mobileprovision": {
        "uuid": "9b42a96b-b520-40ef-9748-eee6e7c40f0b",
        "name": "iOS Full Development",
        "team_id": "WKR87TTKML",
        "team_name": "Niceliving (Beijing) Technology Co., Ltd.",
        "kind": ProfileKind.DEVELOPMENT,
        "created_at": _utc(2020, 7, 21, 8, 43, 27),
        "expires_at": _utc(2021, 7, 21, 8, 43, 27),
        "platforms": ("iOS",),
        "devices": 1,
        "app_id": "WKR87TTKML.com.icyleaf.appinfo.test",
    },
    "saucelabs_isign_test-2015-06.mobileprovision": {
        "uuid": "f8e579cc-c47e-4982-8634-a86da8ac98ac",
        "name": "test-isign",
        "team_id": "JWKXD469L2",
        "team_name": "SAUCE LABS INC",
        "kind": ProfileKind.DEVELOPMENT,
        "created_at": _utc(2015, 6, 12, 21, 58, 21),
        "expires_at": _utc(2016, 6, 11, 21, 58, 21),
        "platforms": ("iOS",),
        "devices": 1,
        "app_id": "JWKXD469L2.*",
    },
}


@pytest.fixture(scope="module")
def apple_root(realworld: Path) -> list[Any]:
    return load_trust_anchors([realworld / APPLE_ROOT])


def test_every_file_is_covered(realworld: Path) -> None:
    known = set(APPLE_SIGNED) | {
        "fastlane_fastlane_downloaded_provisioning_profile.mobileprovision",
        "fastlane_fastlane_match_test.provisionprofile",
        "fastlane_fastlane_fastlane_core-very-capable-app_embedded.mobileprovision",
    }
    assert {p.name for p in (realworld / "profiles").iterdir()} <= known


@pytest.mark.parametrize("filename", sorted(APPLE_SIGNED))
def test_apple_signed(realworld: Path, apple_root: list[Any], filename: str) -> None:
    expected = APPLE_SIGNED[filename]
    data = (realworld / "profiles" / filename).read_bytes()
    profile = parse_profile(data, trust_anchors=apple_root)
    assert profile.uuid == expected["uuid"]
    assert profile.name == expected["name"]
    assert (profile.team_id, profile.team_name) == (expected["team_id"], expected["team_name"])
    assert profile.kind is expected["kind"]
    assert profile.created_at == expected["created_at"]
    assert profile.expires_at == expected["expires_at"]
    assert profile.is_expired(dt.datetime.now(dt.UTC))
    assert profile.platforms == expected["platforms"]
    assert len(profile.provisioned_devices) == expected["devices"]
    assert profile.app_id == expected["app_id"]
    assert len(profile.developer_certificates) == 1
    verdict = profile.signature
    assert verdict.valid, verdict.reason
    assert verdict.chain_trusted, verdict.reason
    assert verdict.signer == SIGNER
    assert verdict.signed_at == expected["created_at"]  # Apple signs at creation
    assert ensure_installable(profile, require_trusted_chain=True) is profile


@pytest.mark.parametrize("filename", sorted(APPLE_SIGNED))
def test_apple_signed_without_anchor(realworld: Path, filename: str) -> None:
    verdict = parse_profile((realworld / "profiles" / filename).read_bytes()).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason == "no trust anchors configured"


def test_2015_chain_needs_apple_root_not_the_legacy_root(realworld: Path) -> None:
    """The embedded legacy root alone is not enough: as an anchor it leads nowhere."""
    data = (realworld / "profiles" / "saucelabs_isign_test-2015-06.mobileprovision").read_bytes()
    embedded = [
        x509.load_der_x509_certificate(c.chosen.dump())
        for c in cms.ContentInfo.load(data)["content"]["certificates"]
    ]
    legacy = [
        c for c in embedded if "Apple Root Certificate Authority" in c.subject.rfc4514_string()
    ]
    assert len(legacy) == 1
    verdict = parse_profile(data, trust_anchors=legacy).signature
    assert verdict.valid and not verdict.chain_trusted
    # its issuer, Apple Root CA, is not in the CMS: the legacy root is not on this path at all
    assert verdict.reason == (
        "issuer of 'Apple iPhone Certification Authority' not found among the CMS certificates"
    )


def test_unsigned_plain_xml(realworld: Path) -> None:
    path = (
        realworld / "profiles" / "fastlane_fastlane_downloaded_provisioning_profile.mobileprovision"
    )
    with pytest.raises(
        UnsignedPlistError, match="unsigned XML property list, not a signed profile"
    ):
        parse_profile(path.read_bytes())


def test_tampered_match_profile(realworld: Path, apple_root: list[Any]) -> None:
    data = (realworld / "profiles" / "fastlane_fastlane_match_test.provisionprofile").read_bytes()
    profile = parse_profile(data, trust_anchors=apple_root)
    assert profile.uuid == "98264c6b-5151-4349-8d0f-66691e48ae35"
    assert profile.platforms == ("OSX",)
    assert profile.kind is ProfileKind.MAC_APP_STORE  # macOS-only, neither device key
    assert not profile.signature.valid and not profile.signature.chain_trusted
    assert (
        profile.signature.reason
        == "message digest does not match the content (content was altered)"
    )
    with pytest.raises(ProfileSignatureError):
        ensure_installable(profile)


def test_ber_self_signed_fixture(realworld: Path) -> None:
    name = "fastlane_fastlane_fastlane_core-very-capable-app_embedded.mobileprovision"
    data = (realworld / "profiles" / name).read_bytes()
    assert data[:2] == b"\x30\x80"  # BER, indefinite length
    profile = parse_profile(data)
    assert profile.uuid == "12345678-1234-1234-1234-123456789012"
    assert profile.name == "org.fastlane.very-capable-app Development"
    assert profile.team_id == "TestFixture"
    assert profile.kind is ProfileKind.DEVELOPMENT
    assert profile.created_at == _utc(2018, 4, 7, 1, 27, 21)
    assert profile.expires_at == _utc(2019, 4, 7, 1, 27, 21)
    assert len(profile.provisioned_devices) == 1
    verdict = profile.signature
    assert verdict.valid and verdict.signer == "TestFixture"
    assert verdict.signed_at is None  # no signing-time attribute: CreationDate is used
    assert verdict.reason == "no trust anchors configured"
    # trusted only when the self-signed certificate itself is the anchor
    self_signed = x509.load_der_x509_certificate(_embedded_signer(data))
    assert parse_profile(data, trust_anchors=[self_signed]).signature.chain_trusted


def _embedded_signer(data: bytes) -> bytes:
    [cert] = list(cms.ContentInfo.load(data)["content"]["certificates"])
    return bytes(cert.chosen.dump())
