"""CMS signature and chain verdicts: encodings, digests, key types, tampering, trust."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout.profiles import (
    ProfileSignatureError,
    ensure_installable,
    parse_profile,
)
from rollout.sim.profiles import AppleLikeChain, make_profile, sign_content, tamper

from .conftest import NOW

SIGNER = "Test Apple iPhone OS Provisioning Profile Signing"


@pytest.mark.parametrize("encoding", ["der", "ber"])
@pytest.mark.parametrize("digest", ["sha256", "sha1"])
def test_encodings_and_digests(chain: AppleLikeChain, encoding: str, digest: str) -> None:
    data = make_profile(chain, kind="ad-hoc", encoding=encoding, digest=digest)  # type: ignore[arg-type]
    assert data[:2] == (b"\x30\x80" if encoding == "ber" else b"\x30\x82")
    profile = parse_profile(data, trust_anchors=chain.anchors)
    verdict = profile.signature
    assert (verdict.valid, verdict.chain_trusted, verdict.reason) == (True, True, None)
    assert verdict.signer == SIGNER
    assert verdict.signed_at is not None and verdict.signed_at.tzinfo is not None


def test_der_and_ber_give_the_same_fields(chain: AppleLikeChain) -> None:
    kwargs = {"uuid": "5e1c7a52-1b86-4bd2-9f39-2b7f1d4a6b01", "created_at": NOW}
    der = parse_profile(make_profile(chain, encoding="der", **kwargs))  # type: ignore[arg-type]
    ber = parse_profile(make_profile(chain, encoding="ber", **kwargs))  # type: ignore[arg-type]
    assert der.to_json() | {"sha256": ""} == ber.to_json() | {"sha256": ""}


@pytest.mark.parametrize("digest", ["sha256", "sha1"])
def test_without_signed_attributes(chain: AppleLikeChain, digest: str) -> None:
    data = make_profile(chain, signed_attributes=False, digest=digest)  # type: ignore[arg-type]
    profile = parse_profile(data, trust_anchors=chain.anchors)
    assert profile.signature.valid and profile.signature.chain_trusted
    assert profile.signature.signed_at is None  # chain judged at CreationDate instead


@pytest.mark.parametrize("signed_attributes", [True, False])
@pytest.mark.parametrize("encoding", ["der", "ber"])
def test_ecdsa(ec_chain: AppleLikeChain, signed_attributes: bool, encoding: str) -> None:
    data = make_profile(ec_chain, signed_attributes=signed_attributes, encoding=encoding)  # type: ignore[arg-type]
    profile = parse_profile(data, trust_anchors=ec_chain.anchors)
    assert profile.signature.valid and profile.signature.chain_trusted


@pytest.mark.parametrize("encoding", ["der", "ber"])
def test_tampered_is_parsed_but_invalid(chain: AppleLikeChain, encoding: str) -> None:
    data = make_profile(chain, encoding=encoding)  # type: ignore[arg-type]
    bad = tamper(data)
    assert len(bad) == len(data) and bad != data
    profile = parse_profile(bad, trust_anchors=chain.anchors)
    assert profile.platforms == ("OSX",)  # the altered value is what was parsed
    verdict = profile.signature
    assert not verdict.valid and not verdict.chain_trusted
    assert verdict.reason is not None and "message digest does not match" in verdict.reason


def test_tampered_without_signed_attributes(chain: AppleLikeChain) -> None:
    bad = tamper(make_profile(chain, signed_attributes=False))
    verdict = parse_profile(bad, trust_anchors=chain.anchors).signature
    assert not verdict.valid
    assert verdict.reason == "signature does not verify with the signer certificate's key"


def test_signer_certificate_missing(chain: AppleLikeChain) -> None:
    data = sign_content(chain, make_profile_plist_bytes(chain), certificates=())
    verdict = parse_profile(data, trust_anchors=chain.anchors).signature
    assert not verdict.valid and verdict.signer is None
    assert verdict.reason == "signer certificate is not embedded in the CMS"


def make_profile_plist_bytes(chain: AppleLikeChain) -> bytes:
    from rollout.sim.profiles import plist_bytes, profile_plist

    return plist_bytes(profile_plist(chain))


def test_strict_check(chain: AppleLikeChain, other_chain: AppleLikeChain) -> None:
    good = parse_profile(make_profile(chain), trust_anchors=chain.anchors)
    assert ensure_installable(good) is good
    assert ensure_installable(good, require_trusted_chain=True) is good
    bad = parse_profile(tamper(make_profile(chain)), trust_anchors=chain.anchors)
    with pytest.raises(ProfileSignatureError, match=r"signature is not valid \(message digest"):
        ensure_installable(bad)
    untrusted = parse_profile(make_profile(chain), trust_anchors=other_chain.anchors)
    assert ensure_installable(untrusted) is untrusted
    with pytest.raises(ProfileSignatureError, match="signing chain not trusted"):
        ensure_installable(untrusted, require_trusted_chain=True)


# --- chain -----------------------------------------------------------------------------------


def test_no_anchors(chain: AppleLikeChain) -> None:
    verdict = parse_profile(make_profile(chain)).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason == "no trust anchors configured"


def test_another_root(chain: AppleLikeChain, other_chain: AppleLikeChain) -> None:
    verdict = parse_profile(make_profile(chain), trust_anchors=other_chain.anchors).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason == "chain ends at 'Test Apple Root CA', which is not a trust anchor"


def test_several_anchors(chain: AppleLikeChain, other_chain: AppleLikeChain) -> None:
    anchors = (*other_chain.anchors, *chain.anchors)
    assert parse_profile(make_profile(chain), trust_anchors=anchors).signature.chain_trusted


def test_intermediate_as_anchor(chain: AppleLikeChain) -> None:
    anchors = (chain.intermediate.cert,)
    assert parse_profile(make_profile(chain), trust_anchors=anchors).signature.chain_trusted


def test_root_not_embedded(chain: AppleLikeChain) -> None:
    data = sign_content(
        chain,
        make_profile_plist_bytes(chain),
        certificates=(chain.signer.cert, chain.intermediate.cert),
    )
    assert parse_profile(data, trust_anchors=chain.anchors).signature.chain_trusted


def test_intermediate_missing(chain: AppleLikeChain) -> None:
    data = sign_content(chain, make_profile_plist_bytes(chain), certificates=(chain.signer.cert,))
    verdict = parse_profile(data, trust_anchors=chain.anchors).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason == (f"issuer of '{SIGNER}' not found among the CMS certificates")


def test_old_chain_expired_today_but_valid_at_signing(old_chain: AppleLikeChain) -> None:
    assert old_chain.root.cert.not_valid_after_utc < NOW  # really expired today
    created = NOW - dt.timedelta(days=3500)
    data = make_profile(old_chain, created_at=created)
    profile = parse_profile(data, trust_anchors=old_chain.anchors)
    assert profile.signature.chain_trusted, profile.signature.reason
    assert profile.is_expired(NOW)


def test_old_chain_without_signing_time_uses_creation_date(old_chain: AppleLikeChain) -> None:
    data = make_profile(
        old_chain, created_at=NOW - dt.timedelta(days=3500), signed_attributes=False
    )
    assert parse_profile(data, trust_anchors=old_chain.anchors).signature.chain_trusted
    late = make_profile(old_chain, created_at=NOW - dt.timedelta(days=30), signed_attributes=False)
    verdict = parse_profile(late, trust_anchors=old_chain.anchors).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason is not None and "had expired at" in verdict.reason


def test_signed_after_signer_expired(short_signer_chain: AppleLikeChain) -> None:
    # signer lived days -400..-370; signed at day -100
    data = make_profile(
        short_signer_chain,
        created_at=NOW - dt.timedelta(days=100),
        signing_time=NOW - dt.timedelta(days=100),
    )
    verdict = parse_profile(data, trust_anchors=short_signer_chain.anchors).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason is not None
    assert verdict.reason.startswith(f"signer '{SIGNER}' had expired at")


def test_signed_while_signer_valid(short_signer_chain: AppleLikeChain) -> None:
    data = make_profile(short_signer_chain, created_at=NOW - dt.timedelta(days=390))
    verdict = parse_profile(data, trust_anchors=short_signer_chain.anchors).signature
    assert verdict.chain_trusted, verdict.reason


def test_signed_before_chain_existed(chain: AppleLikeChain) -> None:
    data = make_profile(chain, created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    verdict = parse_profile(data, trust_anchors=chain.anchors).signature
    assert not verdict.chain_trusted
    assert verdict.reason is not None and "was not yet valid" in verdict.reason


def test_intermediate_that_is_not_a_ca(non_ca_chain: AppleLikeChain) -> None:
    verdict = parse_profile(
        make_profile(non_ca_chain), trust_anchors=non_ca_chain.anchors
    ).signature
    assert verdict.valid and not verdict.chain_trusted
    assert verdict.reason == (
        "'Test Apple iPhone Certification Authority' is not a CA (basicConstraints cA=FALSE)"
    )
