"""The simulator's profiles: Apple's shape, genuine BER, tampering; and trust-anchor loading."""

from __future__ import annotations

import datetime as dt
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollout.profiles import load_trust_anchors, parse_profile
from rollout.sim.profiles import (
    INTERMEDIATE_NAME,
    ROOT_NAME,
    SIGNER_NAME,
    AppleLikeChain,
    make_profile,
    tamper,
    to_ber,
)

OPENSSL = shutil.which("openssl")
APPLE_KEYS = {
    "AppIDName",
    "ApplicationIdentifierPrefix",
    "CreationDate",
    "Platform",
    "IsXcodeManaged",
    "DeveloperCertificates",
    "Entitlements",
    "ExpirationDate",
    "Name",
    "TeamIdentifier",
    "TeamName",
    "TimeToLive",
    "UUID",
    "Version",
}


def _content(data: bytes) -> bytes:
    info = acms.ContentInfo.load(data)
    content = info["content"]["encap_content_info"]["content"].native
    assert isinstance(content, bytes)
    return content


def test_chain_shape(chain: AppleLikeChain) -> None:
    names = [
        c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in chain.embedded
    ]
    assert names == [SIGNER_NAME, INTERMEDIATE_NAME, ROOT_NAME]
    assert chain.anchors == (chain.root.cert,)
    assert chain.signer.cert.issuer == chain.intermediate.cert.subject
    assert chain.intermediate.cert.issuer == chain.root.cert.subject


@pytest.mark.parametrize("kind", ["enterprise", "development", "ad-hoc", "app-store"])
def test_plist_shape(chain: AppleLikeChain, kind: str) -> None:
    plist = plistlib.loads(_content(make_profile(chain, kind=kind)))  # type: ignore[arg-type]
    assert set(plist) - {"ProvisionedDevices", "ProvisionsAllDevices"} == APPLE_KEYS
    assert plist["Version"] == 1
    ent = plist["Entitlements"]
    assert ent["application-identifier"] == "ABCDE12345.com.example.app"
    assert ent["com.apple.developer.team-identifier"] == "ABCDE12345"
    assert ent["get-task-allow"] is (kind == "development")
    assert ent["keychain-access-groups"] == ["ABCDE12345.*"]
    assert ("ProvisionsAllDevices" in plist) is (kind == "enterprise")
    assert ("ProvisionedDevices" in plist) is (kind in ("development", "ad-hoc"))
    x509.load_der_x509_certificate(plist["DeveloperCertificates"][0])


def test_ber_is_genuine_ber(chain: AppleLikeChain) -> None:
    der = make_profile(chain, created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    ber = to_ber(der, chunk=512)
    assert ber[:2] == b"\x30\x80" and ber.endswith(b"\x00\x00")
    assert b"\x24\x80\x04\x82\x02\x00" in ber  # constructed OCTET STRING, 512-byte chunks
    assert _content(ber) == _content(der)
    info = acms.ContentInfo.load(ber)
    assert (
        info["content"]["signer_infos"].dump()
        == acms.ContentInfo.load(der)["content"]["signer_infos"].dump()
    )
    assert parse_profile(ber).to_json() | {"sha256": ""} == parse_profile(der).to_json() | {
        "sha256": ""
    }
    with pytest.raises(ValueError, match="already BER"):
        to_ber(ber)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
@pytest.mark.parametrize("encoding", ["der", "ber"])
@pytest.mark.parametrize("digest", ["sha256", "sha1"])
def test_openssl_verifies(
    chain: AppleLikeChain, tmp_path: Path, encoding: str, digest: str
) -> None:
    assert OPENSSL is not None
    data = make_profile(chain, encoding=encoding, digest=digest)  # type: ignore[arg-type]
    path = tmp_path / "p.mobileprovision"
    path.write_bytes(data)
    result = subprocess.run(
        [OPENSSL, "cms", "-verify", "-noverify", "-inform", "DER", "-in", str(path)],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == _content(data)
    root = tmp_path / "root.pem"
    root.write_bytes(chain.root.cert_pem())
    chained = subprocess.run(
        [
            OPENSSL,
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(path),
            "-CAfile",
            str(root),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        check=False,
    )
    assert chained.returncode == 0, chained.stderr
    path.write_bytes(tamper(data))
    broken = subprocess.run(
        [
            OPENSSL,
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-in",
            str(path),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        check=False,
    )
    assert broken.returncode != 0


def test_tamper_falls_back_to_the_name(chain: AppleLikeChain) -> None:
    data = make_profile(chain, platforms=("tvOS",), name="fleet")
    bad = tamper(data)
    assert len(bad) == len(data)
    assert parse_profile(bad).name == "Fleet"
    with pytest.raises(ValueError, match="no plist content"):
        tamper(b"\x30\x00")


def test_load_trust_anchors(
    chain: AppleLikeChain, other_chain: AppleLikeChain, tmp_path: Path
) -> None:
    der = tmp_path / "root.der"
    der.write_bytes(chain.root.cert_der())
    pem = tmp_path / "bundle.pem"
    pem.write_bytes(other_chain.root.cert_pem() + chain.intermediate.cert_pem())
    anchors = load_trust_anchors([der, str(pem)])
    assert anchors == [chain.root.cert, other_chain.root.cert, chain.intermediate.cert]
    assert anchors[0].public_bytes(serialization.Encoding.DER) == chain.root.cert_der()
    assert load_trust_anchors([]) == []
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"junk\.der: not a DER or PEM certificate file"):
        load_trust_anchors([junk])
    with pytest.raises(OSError):
        load_trust_anchors([tmp_path / "missing.pem"])
