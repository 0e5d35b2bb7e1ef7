"""The Apple profile source against the Apple API stand-in, over real HTTP (no mocks).

Time is a ManualClock; the source's ``sleep`` is a fake that records the wait and moves the
clock, so nothing here sleeps.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import random
import socket
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from rollout.clock import ManualClock
from rollout.profiles import parse_profile
from rollout.sim.apple_api import AppleApiStandIn
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile
from rollout.sources.apple_api import (
    AppleApiError,
    AppleAuthError,
    AppleProfileSource,
    WantedRenewal,
    profile_type_for,
)
from rollout.sources.apple_jwt import AppleApiKey, TokenMinter, b64url, make_token

TEAM = "ABCDE12345"
BUNDLE = "com.example.app"
ISSUER = "57246542-96fe-1a63-e053-0824d011072a"
KEY_ID = "2X9R4HXF34"
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def new_key(key_id: str = KEY_ID) -> AppleApiKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return AppleApiKey(issuer_id=ISSUER, key_id=key_id, private_key_pem=pem)


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_parts(token: str, public_key: ec.EllipticCurvePublicKey) -> tuple[dict, dict]:
    """Decode a compact JWS by hand and verify its ES256 signature (r || s)."""
    head, body, signature = token.split(".")
    raw = b64url_decode(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body))


@pytest.fixture(scope="module")
def chain() -> AppleLikeChain:
    return make_apple_like_chain(not_before=START - dt.timedelta(days=30), team_id=TEAM)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def key() -> AppleApiKey:
    return new_key()


@pytest.fixture
def sleeps(clock: ManualClock) -> list[float]:
    return []


@pytest.fixture
def standin(chain: AppleLikeChain, clock: ManualClock, key: AppleApiKey) -> AppleApiStandIn:
    return AppleApiStandIn(
        chain=chain,
        clock=clock,
        key_id=key.key_id,
        issuer_id=key.issuer_id,
        public_key=key.public_key(),
        api="enterprise",
        team_id=TEAM,
    )


@pytest.fixture
def base_url(standin: AppleApiStandIn) -> Iterator[str]:
    with standin.serve() as url:
        yield url


def make_source(
    key: AppleApiKey,
    base_url: str,
    clock: ManualClock,
    sleeps: list[float],
    *,
    max_attempts: int = 5,
    client: httpx.Client | None = None,
) -> AppleProfileSource:
    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    return AppleProfileSource(
        key,
        api="enterprise",
        base_url=base_url,
        clock=clock,
        client=client,
        sleep=fake_sleep,
        max_attempts=max_attempts,
        rng=random.Random(7),
    )


@pytest.fixture
def source(
    key: AppleApiKey, base_url: str, clock: ManualClock, sleeps: list[float]
) -> Iterator[AppleProfileSource]:
    with make_source(key, base_url, clock, sleeps) as made:
        yield made


def old_profile(
    chain: AppleLikeChain,
    *,
    kind: str = "enterprise",
    expires_in: dt.timedelta = dt.timedelta(days=20),
    devices: tuple[str, ...] = (),
    name: str = "Example In-House",
) -> WantedRenewal:
    """The profile that is about to expire, as the library would hold it."""
    data = make_profile(
        chain,
        kind=kind,  # type: ignore[arg-type]
        name=name,
        team_id=TEAM,
        bundle_id=BUNDLE,
        devices=devices,
        created_at=START - dt.timedelta(days=345),
        expires_at=START + expires_in,
    )
    return WantedRenewal.from_profile(parse_profile(data))


def cert_id(standin: AppleApiStandIn, chain: AppleLikeChain) -> str:
    return standin.add_certificate(chain.developer.cert)


# --- the token --------------------------------------------------------------------------------


def test_token_has_apples_header_and_claims_and_a_jose_signature(key: AppleApiKey) -> None:
    for api, audience in (
        ("enterprise", "apple-developer-enterprise-v1"),
        ("app-store-connect", "appstoreconnect-v1"),
    ):
        clock = ManualClock(START)
        token = TokenMinter(key, api, clock).token()  # type: ignore[arg-type]
        header, claims = verified_parts(token, key.public_key())
        assert header == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
        assert claims == {
            "iss": ISSUER,
            "iat": int(START.timestamp()),
            "exp": int(START.timestamp()) + 15 * 60,
            "aud": audience,
        }


def test_token_is_reused_until_shortly_before_it_expires(key: AppleApiKey) -> None:
    clock = ManualClock(START)
    minter = TokenMinter(key, "enterprise", clock)
    first = minter.token()
    clock.advance(13 * 60)
    assert minter.token() == first
    clock.advance(60 + 1)  # within a minute of exp
    second = minter.token()
    assert second != first
    _header, claims = verified_parts(second, key.public_key())
    assert claims["iat"] == int(clock.now().timestamp())


def test_token_lifetime_over_twenty_minutes_is_refused(key: AppleApiKey) -> None:
    with pytest.raises(ValueError, match="at most"):
        make_token(key, audience="x", issued_at=START, lifetime=dt.timedelta(minutes=21))
    with pytest.raises(ValueError):
        TokenMinter(key, "enterprise", ManualClock(START), lifetime=dt.timedelta(minutes=25))


def test_key_never_shows_its_private_part(key: AppleApiKey, tmp_path) -> None:
    pem = key.private_key_pem.decode()
    body = "".join(pem.splitlines()[1:-1])
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert body not in text and "PRIVATE" not in text
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_bytes(key.private_key_pem)
    loaded = AppleApiKey.from_p8(path, issuer_id=ISSUER)
    assert loaded.key_id == KEY_ID and loaded == key
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not an EC P-256") as refused:
        AppleApiKey(issuer_id=ISSUER, key_id=KEY_ID, private_key_pem=rsa_pem)
    assert "PRIVATE" not in str(refused.value)


def test_standin_refuses_tokens_apple_would_refuse(
    standin: AppleApiStandIn, base_url: str, key: AppleApiKey, clock: ManualClock
) -> None:
    def status(token: str) -> int:
        answer = httpx.get(f"{base_url}/v1/bundleIds", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code

    def hand_made(claims: dict, header: dict | None = None) -> str:
        jose = header or {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
        signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (jose, claims))
        return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"

    now = int(clock.now().timestamp())
    good = {"iss": ISSUER, "iat": now, "exp": now + 600, "aud": "apple-developer-enterprise-v1"}
    assert status(hand_made(good)) == 200
    assert status(hand_made({**good, "exp": now + 21 * 60})) == 401
    assert status(hand_made({**good, "aud": "appstoreconnect-v1"})) == 401
    assert status(hand_made({**good, "iat": now + 30})) == 401
    assert status(hand_made({k: v for k, v in good.items() if k != "exp"})) == 401
    assert status(hand_made({**good, "iss": "someone-else"})) == 401
    assert status(hand_made(good, {"alg": "ES256", "kid": "OTHERKEY00", "typ": "JWT"})) == 401
    assert status(hand_made(good, {"alg": "HS256", "kid": KEY_ID, "typ": "JWT"})) == 401
    expired = hand_made({**good, "iat": now - 700, "exp": now - 100})
    assert status(expired) == 401
    assert standin.auth_failures == [
        "lives longer than 20 minutes",
        "aud 'appstoreconnect-v1' is not apple-developer-enterprise-v1",
        "iat is in the future",
        "exp missing or not a number",
        "wrong iss",
        "unknown kid",
        "alg 'HS256' is not ES256",
        "expired",
    ]
    document = httpx.get(f"{base_url}/v1/bundleIds").json()
    assert document["errors"][0]["code"] == "NOT_AUTHORIZED"


# --- finding a renewed profile ----------------------------------------------------------------


def test_a_profile_expiring_later_is_found_and_returned(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    wanted = old_profile(chain)
    bundle = standin.add_bundle_id(BUNDLE)
    cert = cert_id(standin, chain)
    standin.add_profile(bundle, name=wanted.name, expires_at=wanted.expires_at, certificates=[cert])
    renewed = standin.add_profile(
        bundle, name="Example In-House 2026", expires_at=START + dt.timedelta(days=300)
    )

    found = source.renewals(wanted)

    assert [f.uuid for f in found] == [standin.profiles[renewed].uuid]
    assert found[0].created is False
    assert found[0].profile_type == "IOS_APP_INHOUSE"
    assert found[0].expires_at == START + dt.timedelta(days=300)
    parsed = parse_profile(found[0].content)
    assert (parsed.team_id, parsed.app_id, parsed.uuid) == (TEAM, f"{TEAM}.{BUNDLE}", found[0].uuid)
    assert [r.method for r in standin.requests] == ["GET", "GET"]
    assert standin.requests[0].path == "/v1/bundleIds"
    assert standin.requests[0].query["filter[identifier]"] == BUNDLE
    assert standin.requests[1].path == f"/v1/bundleIds/{bundle}/profiles"
    assert standin.auth_failures == []


def test_pages_are_followed(
    chain: AppleLikeChain, clock: ManualClock, key: AppleApiKey, sleeps: list[float]
) -> None:
    standin = AppleApiStandIn(
        chain=chain,
        clock=clock,
        key_id=key.key_id,
        issuer_id=key.issuer_id,
        public_key=key.public_key(),
        team_id=TEAM,
        page_size=2,
    )
    wanted = old_profile(chain)
    bundle = standin.add_bundle_id(BUNDLE)
    for n in range(4):
        standin.add_profile(bundle, name=f"old {n}", expires_at=wanted.expires_at, state="INVALID")
    renewed = standin.add_profile(bundle, name="new", expires_at=START + dt.timedelta(days=200))
    with standin.serve() as url, make_source(key, url, clock, sleeps) as source:
        found = source.renewals(wanted)
    assert [f.uuid for f in found] == [standin.profiles[renewed].uuid]
    profile_pages = [r for r in standin.requests if r.path.endswith("/profiles")]
    assert len(profile_pages) == 3


def test_other_bundle_ids_and_other_teams_are_never_returned(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    wanted = old_profile(chain)
    later = START + dt.timedelta(days=300)
    # the identifier filter also matches longer identifiers
    extension = standin.add_bundle_id(f"{BUNDLE}.widget")
    standin.add_profile(extension, name="widget", expires_at=later)
    # the same identifier under another team's App ID prefix
    foreign = standin.add_bundle_id(BUNDLE, seed_id="ZZZZZ99999")
    standin.add_profile(foreign, name="foreign", expires_at=later)
    # listed under the right bundle ID, but the files say otherwise
    bundle = standin.add_bundle_id(BUNDLE)
    standin.add_profile(bundle, name="lies team", expires_at=later, team_id="OTHER12345")
    standin.add_profile(
        bundle, name="lies bundle", expires_at=later, bundle_identifier="com.example.other"
    )
    cert = cert_id(standin, chain)
    bad = {p.uuid for p in standin.profiles.values()}

    found = source.renewals(wanted)

    assert len(found) == 1 and found[0].created
    assert found[0].uuid not in bad
    parsed = parse_profile(found[0].content)
    assert (parsed.team_id, parsed.bundle_id) == (TEAM, BUNDLE)
    created = standin.profiles[found[0].api_id]
    assert (created.bundle, created.certificates) == (bundle, [cert])


def test_inactive_expired_and_other_types_are_skipped(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    wanted = old_profile(chain, expires_in=dt.timedelta(days=-10))  # already expired
    bundle = standin.add_bundle_id(BUNDLE)
    cert_id(standin, chain)
    later = START + dt.timedelta(days=300)
    skipped = [
        standin.add_profile(bundle, name="invalid", expires_at=later, state="INVALID"),
        standin.add_profile(bundle, name="expired", expires_at=START - dt.timedelta(days=1)),
        standin.add_profile(
            bundle, name="earlier", expires_at=wanted.expires_at - dt.timedelta(days=5)
        ),
        standin.add_profile(bundle, name="ad hoc", expires_at=later, profile_type="IOS_APP_ADHOC"),
    ]
    skipped_uuids = {standin.profiles[s].uuid for s in skipped}

    found = source.renewals(wanted)

    assert len(found) == 1 and found[0].created
    assert found[0].uuid not in skipped_uuids
    assert found[0].expires_at > START


# --- creating one -----------------------------------------------------------------------------


def test_without_a_renewal_one_is_created_with_the_old_certificates(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    wanted = old_profile(chain)
    bundle = standin.add_bundle_id(BUNDLE)
    cert = cert_id(standin, chain)
    standin.add_certificate(chain.signer.cert)  # another team certificate, not the profile's

    found = source.renewals(wanted)

    assert len(found) == 1 and found[0].created
    posts = [r for r in standin.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].status == 201
    body = json.loads(posts[0].body)
    assert body["data"]["type"] == "profiles"
    assert body["data"]["attributes"] == {"name": wanted.name, "profileType": "IOS_APP_INHOUSE"}
    relationships = body["data"]["relationships"]
    assert relationships["bundleId"] == {"data": {"type": "bundleIds", "id": bundle}}
    assert relationships["certificates"] == {"data": [{"type": "certificates", "id": cert}]}
    assert "devices" not in relationships
    parsed = parse_profile(found[0].content, trust_anchors=chain.anchors)
    assert parsed.signature.valid and parsed.signature.chain_trusted
    assert (parsed.team_id, parsed.app_id, parsed.kind.value) == (
        TEAM,
        f"{TEAM}.{BUNDLE}",
        "enterprise",
    )
    assert parsed.name == wanted.name
    assert parsed.expires_at > wanted.expires_at
    assert [c.serial for c in parsed.developer_certificates] == list(wanted.certificate_serials)
    certificate_query = next(r for r in standin.requests if r.path == "/v1/certificates")
    assert certificate_query.query["filter[serialNumber]"].split(",")[0].isupper()


def test_a_device_profile_is_created_with_the_old_devices_under_a_new_name(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    enabled, disabled, unknown = (
        "00008030-001A2B3C4D5E6F70",
        "1c111c111c111c111c111c111c111c111c111c11",
        "00008020-000915083C80012E",
    )
    wanted = old_profile(chain, kind="ad-hoc", devices=(enabled, disabled, unknown))
    bundle = standin.add_bundle_id(BUNDLE)
    cert_id(standin, chain)
    device = standin.add_device(enabled)
    standin.add_device(disabled, status="DISABLED")
    # the old profile itself is still there, under the name the renewal would take
    standin.add_profile(
        bundle, name=wanted.name, expires_at=wanted.expires_at, profile_type="IOS_APP_ADHOC"
    )

    found = source.renewals(wanted)

    assert len(found) == 1 and found[0].created
    assert found[0].name == f"{wanted.name} 2026-01-05 0900"
    created = standin.profiles[found[0].api_id]
    assert created.devices == [device] and created.profile_type == "IOS_APP_ADHOC"
    parsed = parse_profile(found[0].content)
    assert parsed.kind.value == "ad-hoc"
    assert parsed.provisioned_devices == (enabled,)
    assert [r.status for r in standin.requests if r.method == "POST"] == [409, 201]
    devices_query = next(r for r in standin.requests if r.path == "/v1/devices")
    assert set(devices_query.query["filter[udid]"].split(",")) == {enabled, disabled, unknown}


def test_no_valid_certificate_is_a_clear_error(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    wanted = old_profile(chain)
    standin.add_bundle_id(BUNDLE)
    standin.add_certificate(chain.developer.cert, expires_at=START - dt.timedelta(days=1))
    with pytest.raises(AppleApiError, match="none of the certificates") as failure:
        source.renewals(wanted)
    assert "\n" not in str(failure.value)
    assert not [r for r in standin.requests if r.method == "POST"]


def test_an_unknown_bundle_id_is_a_clear_error(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain
) -> None:
    standin.add_bundle_id(f"{BUNDLE}.widget")
    with pytest.raises(AppleApiError, match=f"no bundle ID {BUNDLE} for team {TEAM}"):
        source.renewals(old_profile(chain))


# --- failures ---------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says_then_succeeds(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain, sleeps
) -> None:
    wanted = old_profile(chain)
    bundle = standin.add_bundle_id(BUNDLE)
    standin.add_profile(bundle, name="new", expires_at=START + dt.timedelta(days=300))
    standin.fail_next(429, retry_after="7")

    found = source.renewals(wanted)

    assert len(found) == 1
    assert sleeps == [7.0]
    assert [r.status for r in standin.requests] == [429, 200, 200]


def test_retry_after_as_an_http_date_is_honoured(
    standin: AppleApiStandIn,
    source: AppleProfileSource,
    chain: AppleLikeChain,
    clock: ManualClock,
    sleeps,
) -> None:
    bundle = standin.add_bundle_id(BUNDLE)
    standin.add_profile(bundle, name="new", expires_at=START + dt.timedelta(days=300))
    when = email.utils.format_datetime(clock.now() + dt.timedelta(seconds=12), usegmt=True)
    standin.fail_next(429, retry_after=when)
    assert len(source.renewals(old_profile(chain))) == 1
    assert sleeps == [12.0]


def test_a_failed_create_is_retried_only_after_looking_again(
    standin: AppleApiStandIn, source: AppleProfileSource, chain: AppleLikeChain, sleeps
) -> None:
    wanted = old_profile(chain)
    bundle = standin.add_bundle_id(BUNDLE)
    cert_id(standin, chain)
    standin.fail_next(503, method="POST")

    found = source.renewals(wanted)

    assert len(found) == 1 and found[0].created
    calls = [(r.method, r.path, r.status) for r in standin.requests]
    assert calls[-3:] == [
        ("POST", "/v1/profiles", 503),
        ("GET", f"/v1/bundleIds/{bundle}/profiles", 200),
        ("POST", "/v1/profiles", 201),
    ]
    assert len(standin.profiles) == 1 and len(sleeps) == 1


def test_repeated_500_gives_up_after_max_attempts(
    standin: AppleApiStandIn,
    base_url: str,
    key: AppleApiKey,
    clock: ManualClock,
    chain: AppleLikeChain,
    sleeps,
) -> None:
    standin.add_bundle_id(BUNDLE)
    standin.fail_next(500, count=10)
    with (
        make_source(key, base_url, clock, sleeps, max_attempts=3) as source,
        pytest.raises(AppleApiError) as failure,
    ):
        source.renewals(old_profile(chain))
    message = str(failure.value)
    assert "gave up on GET /v1/bundleIds after 3 attempts: HTTP 500" in message
    assert failure.value.status == 500
    assert len(standin.requests) == 3
    assert len(sleeps) == 2
    # exponential back-off with jitter: about 1 s, then about 2 s
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_an_unreachable_api_gives_up_after_max_attempts(
    key: AppleApiKey, clock: ManualClock, chain: AppleLikeChain, sleeps
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with (
        make_source(key, closed, clock, sleeps, max_attempts=2) as source,
        pytest.raises(AppleApiError, match="after 2 attempts: could not reach"),
    ):
        source.renewals(old_profile(chain))
    assert len(sleeps) == 1


def test_a_refused_key_is_one_clear_line_without_key_or_token(
    standin: AppleApiStandIn,
    base_url: str,
    clock: ManualClock,
    chain: AppleLikeChain,
    sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = new_key()  # same key ID and issuer, another private key
    tokens: list[str] = []

    def keep_token(request: httpx.Request) -> None:
        tokens.append(request.headers["authorization"].removeprefix("Bearer "))

    caplog.set_level(logging.DEBUG)
    with (
        httpx.Client(event_hooks={"request": [keep_token]}) as client,
        make_source(wrong, base_url, clock, sleeps, client=client) as source,
        pytest.raises(AppleAuthError) as failure,
    ):
        source.renewals(old_profile(chain))

    message = str(failure.value)
    assert "refused API key 2X9R4HXF34" in message and "401" in message
    assert "NOT_AUTHORIZED" in message and "\n" not in message
    assert failure.value.status == 401
    assert len(tokens) == 1 and sleeps == []  # no retry with a key Apple refused
    assert standin.auth_failures == ["bad signature"]
    pem = wrong.private_key_pem.decode()
    secrets = [tokens[0], pem, "".join(pem.splitlines()[1:-1]), *tokens[0].split(".")]
    everything_logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in message
        assert secret not in repr(failure.value)
        assert secret not in everything_logged
    assert caplog.records  # the request was logged, without the secrets


def test_kinds_map_to_apples_profile_types() -> None:
    assert profile_type_for("enterprise", ("iOS", "xrOS")) == "IOS_APP_INHOUSE"
    assert profile_type_for("ad-hoc", ("iOS",)) == "IOS_APP_ADHOC"
    assert profile_type_for("development", ("iOS",)) == "IOS_APP_DEVELOPMENT"
    assert profile_type_for("development", ("OSX",)) == "MAC_APP_DEVELOPMENT"
    assert profile_type_for("mac-app-store", ("OSX",)) == "MAC_APP_STORE"
    assert profile_type_for("app-store", ("iOS",)) == "IOS_APP_STORE"
    assert profile_type_for("enterprise", ("tvOS",)) == "TVOS_APP_INHOUSE"
    with pytest.raises(ValueError):
        profile_type_for("enterprise", ("OSX",))
