"""Device identity: our own Mdm-Signature, forwarded certificates, the device-CA check."""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from rollout.mdm import (
    DeviceCATrust,
    IdentityConfig,
    IdentityError,
    cert_sha256,
    identify,
    parse_forwarded_client_cert,
    verify_mdm_signature,
)
from rollout.mdm.identity import MAX_HEADER_CHARS
from rollout.sim.identity import (
    forwarded_cert_header,
    issue_device_identity,
    make_device_ca,
    sign_body,
)
from rollout.sim.pki import Issued, issue_leaf, make_ca

BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n<dict>\n'
    b"\t<key>Status</key>\n\t<string>Idle</string>\n"
    b"\t<key>UDID</key>\n\t<string>00008020-000915083C80012E</string>\n</dict>\n</plist>\n"
)


def reason(call: object, *args: object) -> str:
    with pytest.raises(IdentityError) as err:
        call(*args)  # type: ignore[operator]
    assert str(err.value)
    return err.value.reason


# --- Mdm-Signature made by our simulated device ---------------------------------------------


@pytest.mark.parametrize("attrs", [True, False], ids=["signed-attrs", "no-attrs"])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_own_signature_round_trips(device: Issued, attrs: bool, hash_name: str) -> None:
    header = sign_body(device, BODY, hash_name=hash_name, signed_attributes=attrs)  # type: ignore[arg-type]
    assert verify_mdm_signature(header, BODY) == device.cert


@pytest.mark.parametrize("attrs", [True, False], ids=["signed-attrs", "no-attrs"])
def test_own_rsa_signature_round_trips(rsa_device: Issued, attrs: bool) -> None:
    header = sign_body(rsa_device, BODY, signed_attributes=attrs)
    assert verify_mdm_signature(header, BODY) == rsa_device.cert


def test_line_endings_are_signed_as_sent(device: Issued) -> None:
    crlf = BODY.replace(b"\n", b"\r\n")
    header = sign_body(device, crlf)
    assert verify_mdm_signature(header, crlf) == device.cert
    assert reason(verify_mdm_signature, header, BODY) == "digest_mismatch"


def test_own_signature_fails_on_changed_body(device: Issued) -> None:
    with_attrs = sign_body(device, BODY)
    without = sign_body(device, BODY, signed_attributes=False)
    changed = BODY.replace(b"Idle", b"Idlf")
    assert reason(verify_mdm_signature, with_attrs, changed) == "digest_mismatch"
    assert reason(verify_mdm_signature, without, changed) == "bad_signature"


def test_header_whitespace_is_tolerated(device: Issued) -> None:
    header = sign_body(device, BODY)
    wrapped = "\n ".join(header[i : i + 64] for i in range(0, len(header), 64))
    assert verify_mdm_signature(f"  {wrapped}\n", BODY) == device.cert


def _cms(signer_cert: Issued, key_from: Issued, *options: pkcs7.PKCS7Options) -> str:
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BODY)
        .add_signer(signer_cert.cert, key_from.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, *options])
    )
    return base64.b64encode(der).decode()


def test_signature_with_another_devices_cert(
    device: Issued, device_ca: Issued, foreign_device: Issued
) -> None:
    # Another device's certificate embedded next to our key: the signature does not match it.
    other = issue_device_identity(device_ca, "OTHER-DEVICE")
    forged = _cms(other, device, pkcs7.PKCS7Options.DetachedSignature)
    assert reason(verify_mdm_signature, forged, BODY) == "bad_signature"
    # A device from another CA signs correctly, but the chain check refuses it.
    header = sign_body(foreign_device, BODY)
    cert = verify_mdm_signature(header, BODY)
    trust = DeviceCATrust([device_ca.cert])
    assert reason(trust.check, cert) == "untrusted"
    config = IdentityConfig(trust=trust)
    assert reason(identify, {"Mdm-Signature": header}, BODY, config) == "untrusted"


def test_cms_shape_refusals(device: Issued) -> None:
    attached = _cms(device, device)
    assert reason(verify_mdm_signature, attached, BODY) == "not_detached"
    no_certs = _cms(
        device, device, pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.NoCerts
    )
    assert reason(verify_mdm_signature, no_certs, BODY) == "no_signer_cert"
    cert_only = base64.b64encode(device.cert_der()).decode()
    assert reason(verify_mdm_signature, cert_only, BODY) == "not_cms"
    assert reason(verify_mdm_signature, base64.b64encode(b"\x30\x03\x02\x01").decode(), BODY) == (
        "not_cms"
    )
    trailing = base64.b64encode(base64.b64decode(sign_body(device, BODY)) + b"\x00").decode()
    assert reason(verify_mdm_signature, trailing, BODY) == "not_cms"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "bad_base64"),
        ("   ", "bad_base64"),
        ("not base64!", "bad_base64"),
        ("QUJD", "not_cms"),
        ("QUJ", "bad_base64"),
        ("A" * (MAX_HEADER_CHARS + 1), "too_large"),
    ],
)
def test_bad_signature_headers(value: str, why: str) -> None:
    assert reason(verify_mdm_signature, value, BODY) == why


# --- forwarded client certificates ----------------------------------------------------------


@pytest.mark.parametrize("form", ["rfc9440", "escaped-pem", "base64"])
def test_forwarded_cert_forms(device: Issued, form: str) -> None:
    header = forwarded_cert_header(device, form)  # type: ignore[arg-type]
    assert parse_forwarded_client_cert(header) == device.cert


def test_forwarded_cert_other_pem_spellings(device: Issued) -> None:
    pem = device.cert_pem().decode()
    assert parse_forwarded_client_cert(pem.replace("\n", " ")) == device.cert
    # nginx leaves some characters unescaped ('+', '/', '='); only the unsafe ones change.
    nginx_like = urllib.parse.quote(pem, safe="+/=")
    assert parse_forwarded_client_cert(nginx_like) == device.cert


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "missing"),
        ("::", "bad_base64"),
        (":QUJD:", "bad_cert"),
        (":not base64:", "bad_base64"),
        ("%2D%2D%2D%2D%2DBEGIN%20KEY", "bad_cert"),
        ("-----BEGIN CERTIFICATE-----QUJD-----END CERTIFICATE-----", "bad_cert"),
        ("QUJD", "bad_cert"),
        ("x" * (MAX_HEADER_CHARS + 1), "too_large"),
    ],
)
def test_bad_forwarded_certs(value: str, why: str) -> None:
    assert reason(parse_forwarded_client_cert, value) == why


# --- the chain to the device CA -------------------------------------------------------------


def test_chain_check_accepts_own_device(device: Issued, device_ca: Issued) -> None:
    trust = DeviceCATrust([device_ca.cert])
    assert trust.check(device.cert) == device_ca.cert
    assert DeviceCATrust.from_pem(device_ca.cert_pem()).cas == (device_ca.cert,)


def test_chain_check_wrong_ca(device: Issued, other_ca: Issued) -> None:
    assert reason(DeviceCATrust([other_ca.cert]).check, device.cert) == "untrusted"


def test_chain_check_same_name_different_key(device: Issued, device_ca: Issued) -> None:
    impostor = make_device_ca(common_name="Rollout Sim Device CA")
    assert impostor.cert.subject == device_ca.cert.subject
    assert reason(DeviceCATrust([impostor.cert]).check, device.cert) == "untrusted"
    # With both configured, the genuine one still vouches.
    assert DeviceCATrust([impostor.cert, device_ca.cert]).check(device.cert) == device_ca.cert


def test_chain_check_dates(expired_device: Issued, device_ca: Issued) -> None:
    trust = DeviceCATrust([device_ca.cert])
    assert reason(trust.check, expired_device.cert) == "expired"
    inside = expired_device.cert.not_valid_before_utc + dt.timedelta(days=1)
    assert trust.check(expired_device.cert, inside) == device_ca.cert
    before = expired_device.cert.not_valid_before_utc - dt.timedelta(seconds=1)
    assert reason(trust.check, expired_device.cert, before) == "not_yet_valid"
    with pytest.raises(ValueError):
        trust.check(expired_device.cert, dt.datetime(2030, 1, 1))


def test_chain_check_expired_ca() -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    old_ca = make_ca("Old Device CA", not_before=start, days=10, key_kind="ec")
    leaf = issue_device_identity(old_ca, "D", not_before=start, days=365)
    assert reason(DeviceCATrust([old_ca.cert]).check, leaf.cert) == "untrusted"


def test_chain_check_usages(device_ca: Issued) -> None:
    trust = DeviceCATrust([device_ca.cert])
    server_only = issue_leaf(device_ca, "server", key_kind="ec", server_auth=True)
    assert reason(trust.check, server_only.cert) == "bad_usage"
    sub_ca = make_ca("Sub CA", issuer=device_ca, key_kind="ec")
    assert reason(trust.check, sub_ca.cert) == "bad_usage"
    no_eku = issue_leaf(device_ca, "plain", key_kind="ec")
    assert trust.check(no_eku.cert) == device_ca.cert


def test_intermediate_as_anchor(device_ca: Issued) -> None:
    sub_ca = make_ca("Issuing CA", issuer=device_ca, key_kind="ec")
    leaf = issue_device_identity(sub_ca, "D2")
    assert DeviceCATrust([sub_ca.cert]).check(leaf.cert) == sub_ca.cert
    assert reason(DeviceCATrust([device_ca.cert]).check, leaf.cert) == "untrusted"


def test_trust_needs_ca_certificates(device: Issued) -> None:
    with pytest.raises(ValueError):
        DeviceCATrust([])
    with pytest.raises(ValueError):
        DeviceCATrust([device.cert])


# --- identify(): what the web layer calls ---------------------------------------------------


def test_identify_from_signature(device: Issued, device_ca: Issued) -> None:
    config = IdentityConfig(trust=DeviceCATrust([device_ca.cert]))
    found = identify({"MDM-SIGNATURE": sign_body(device, BODY)}, BODY, config)
    assert found is not None
    assert found.source == "mdm-signature" and found.chain_checked
    assert found.cert_sha256 == cert_sha256(device.cert)
    assert found.cert_sha256 == device.cert.fingerprint(hashes.SHA256()).hex()
    assert found.subject == device.cert.subject.rfc4514_string()
    assert "BEGIN" not in repr(found)


def test_identify_from_forwarded_cert(device: Issued, device_ca: Issued) -> None:
    config = IdentityConfig(trust=DeviceCATrust([device_ca.cert]), sources=("client-cert",))
    headers = {"client-cert": forwarded_cert_header(device)}
    found = identify(headers, BODY, config)
    assert found is not None and found.source == "client-cert"
    assert found.cert_sha256 == cert_sha256(device.cert)
    # A Mdm-Signature header is ignored when that source is not configured.
    headers["Mdm-Signature"] = "garbage"
    assert identify(headers, BODY, config) == found


def test_identify_custom_header_and_order(device: Issued, device_ca: Issued) -> None:
    config = IdentityConfig(
        trust=DeviceCATrust([device_ca.cert]),
        sources=("mdm-signature", "client-cert"),
        cert_header="X-SSL-Client-Cert",
    )
    escaped = forwarded_cert_header(device, "escaped-pem")
    found = identify({"X-SSL-Client-Cert": escaped}, BODY, config)
    assert found is not None and found.source == "client-cert"
    # An empty forwarded header (proxy saw no client certificate) counts as absent.
    assert reason(identify, {"X-SSL-Client-Cert": ""}, BODY, config) == "missing"
    # A present but bad signature is an error; no fallback to the next source.
    headers = {"Mdm-Signature": sign_body(device, b"other"), "X-SSL-Client-Cert": escaped}
    assert reason(identify, headers, BODY, config) == "digest_mismatch"


def test_identify_missing(device_ca: Issued) -> None:
    strict = IdentityConfig(trust=DeviceCATrust([device_ca.cert]))
    assert reason(identify, {}, BODY, strict) == "missing"
    lax = IdentityConfig(trust=None, allow_missing=True)
    assert identify({"Content-Type": "application/x-apple-aspen-mdm"}, BODY, lax) is None


def test_identify_chain_refusal(expired_device: Issued, device_ca: Issued) -> None:
    config = IdentityConfig(trust=DeviceCATrust([device_ca.cert]))
    header = sign_body(expired_device, BODY)
    assert reason(identify, {"Mdm-Signature": header}, BODY, config) == "expired"
    inside = expired_device.cert.not_valid_before_utc + dt.timedelta(days=1)
    found = identify({"Mdm-Signature": header}, BODY, config, at=inside)
    assert found is not None


def test_identity_config_validation() -> None:
    with pytest.raises(ValueError):
        IdentityConfig(trust=None, sources=())
    with pytest.raises(ValueError):
        IdentityConfig(trust=None, sources=("tls",))  # type: ignore[arg-type]


def test_signer_found_by_subject_key_identifier(device_ca: Issued) -> None:
    # CMS may name the signer by subjectKeyIdentifier (version 3) instead of issuer+serial.
    ski = device_ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    info = cms.ContentInfo.load(base64.b64decode(sign_body(device_ca, BODY)))
    signer = info["content"]["signer_infos"][0]
    signer["version"] = "v3"
    signer["sid"] = cms.SignerIdentifier({"subject_key_identifier": ski.digest})
    header = base64.b64encode(info.dump(force=True)).decode()
    assert verify_mdm_signature(header, BODY) == device_ca.cert
    signer["sid"] = cms.SignerIdentifier({"subject_key_identifier": b"\x00" * 20})
    header = base64.b64encode(info.dump(force=True)).decode()
    assert reason(verify_mdm_signature, header, BODY) == "no_signer_cert"
