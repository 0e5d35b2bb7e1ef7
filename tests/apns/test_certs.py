"""Loading the MDM push certificate: real files made by others, and generated ones."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from rollout.apns import (
    CertificateLoadError,
    TopicError,
    load_pem,
    load_pkcs12,
    load_push_certificate,
    topic_from_certificate,
)
from rollout.sim.pki import issue_leaf, make_ca

REALWORLD = Path(__file__).resolve().parents[2].parent / "shared" / "realworld"
CERTS = REALWORLD / "certs"

needs_realworld = pytest.mark.skipif(not CERTS.is_dir(), reason="../shared/realworld absent")


@needs_realworld
def test_mock_push_cert_topic_is_extracted() -> None:
    cert = load_pem(CERTS / "micromdm_micromdm_mock_push_cert.pem", require_key=False)
    assert cert.topic == "com.apple.mgmt.External.18a16429-886b-41f1-9c30-2bd04ae4fc37"
    assert cert.key is None
    assert cert.not_after.year == 2068


@needs_realworld
def test_cert_without_uid_fails_with_clear_error() -> None:
    with pytest.raises(TopicError, match="no UID"):
        load_pem(CERTS / "micromdm_micromdm_mock_push_cert_no_uid.pem", require_key=False)


@needs_realworld
def test_cert_with_non_mdm_uid_fails() -> None:
    with pytest.raises(TopicError, match=r"com\.apple\.mgmt\."):
        load_pem(CERTS / "micromdm_micromdm_mock_push_cert_wrong_uid_prefix.pem", require_key=False)


@needs_realworld
def test_legacy_rc2_pkcs12_loads_but_has_no_topic() -> None:
    # The micromdm fixture is CN=mdmpush, self-signed, with no UID: it decodes (RC2-40 and
    # all) with its key, but cannot serve as an MDM push certificate.
    path = CERTS / "micromdm_micromdm_pushcert.p12"
    cert = load_pkcs12(path, "secret", require_topic=False)
    assert cert.subject == "CN=mdmpush"
    assert cert.key is not None
    assert cert.topic is None
    with pytest.raises(TopicError, match="no UID"):
        load_push_certificate(path, "secret")
    with pytest.raises(CertificateLoadError):
        load_pkcs12(path, "wrong-password", require_topic=False)


@needs_realworld
def test_real_apple_push_cert_topic_and_expiry() -> None:
    cert = load_pem(CERTS / "micromdm_nanomdm_e2e_push.pem", require_key=False)
    assert cert.topic == "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
    assert cert.not_after == dt.datetime(2022, 2, 10, 17, 44, 47, tzinfo=dt.UTC)
    assert cert.is_expired()
    assert cert.expires_in().total_seconds() < 0
    with pytest.raises(CertificateLoadError, match="no private key"):
        load_pem(CERTS / "micromdm_nanomdm_e2e_push.pem")


def test_pem_in_two_files_and_in_one(tmp_path: Path) -> None:
    ca = make_ca("test push CA")
    leaf = issue_leaf(ca, "APSP:x", client_auth=True, UID="com.apple.mgmt.External.x")
    (tmp_path / "c.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "k.pem").write_bytes(leaf.key_pem())
    (tmp_path / "both.pem").write_bytes(leaf.cert_pem() + leaf.key_pem())
    two = load_push_certificate(tmp_path / "c.pem", key_path=tmp_path / "k.pem")
    one = load_push_certificate(tmp_path / "both.pem")
    assert two.topic == one.topic == "com.apple.mgmt.External.x"
    assert topic_from_certificate(leaf.cert) == "com.apple.mgmt.External.x"
    assert one.ssl_context() is not None


def test_encrypted_pkcs12_roundtrip_and_key_mismatch(tmp_path: Path) -> None:
    ca = make_ca("test push CA")
    leaf = issue_leaf(ca, "APSP:y", client_auth=True, UID="com.apple.mgmt.External.y")
    other = issue_leaf(ca, "other", client_auth=True)
    blob = pkcs12.serialize_key_and_certificates(
        b"push",
        leaf.key,  # type: ignore[arg-type]
        leaf.cert,
        None,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (tmp_path / "p.p12").write_bytes(blob)
    loaded = load_push_certificate(tmp_path / "p.p12", "pw")
    assert loaded.topic == "com.apple.mgmt.External.y"
    with pytest.raises(CertificateLoadError, match="does not match"):
        load_pem(leaf.cert_pem() + other.key_pem())
