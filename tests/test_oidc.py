"""OIDC token checks without a web app: signatures per algorithm, claims against a manual
clock, role and name claims, the key cache's TTL and refetch rules, the HTTP fetcher, and the
settings (each bad one is one line naming its variable)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from rollout.access import Role
from rollout.clock import ManualClock
from rollout.config import SettingsError, load_settings
from rollout.oidc import (
    JWKS_TTL_S,
    MAX_STALE_S,
    RETRY_AFTER_FAILURE_S,
    FetchError,
    KeyStore,
    KeysUnavailable,
    NoRole,
    OidcConfig,
    TokenRefused,
    Verifier,
    looks_like_jwt,
    name_from,
    parse_jwks,
    parse_role_map,
    role_from,
    url_problem,
)
from rollout.oidc_fetch import JwksFetcher
from tests.oidc_idp import Key, Provider, b64

ISSUER = "https://idp.example.com/realms/corp"
AUDIENCE = "rollout-api"
ROLES = {"rollout-admin": Role.ADMIN, "rollout-ops": Role.OPERATOR, "rollout-read": Role.VIEWER}


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key.rsa("r1")


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key.ec("e1")


@pytest.fixture(scope="module")
def ed_key() -> Key:
    return Key.ed25519("d1")


class Served:
    """A key set handed out by a callable, counting fetches; ``down`` makes it fail."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.down = False
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.down:
            raise FetchError("connection refused")
        return {"keys": [k.jwk() for k in self.keys]}


def verifier(served: Served, clock: ManualClock, **config: Any) -> Verifier:
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "role_map": ROLES, **config}
    return Verifier(OidcConfig(**settings), KeyStore(served, clock), clock)


def claims(clock: ManualClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "f3a1",
        "preferred_username": "alice",
        "roles": ["rollout-ops"],
        "iat": now,
        "exp": now + 300,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def test_each_algorithm_verifies_with_its_own_key_type_only(
    rsa_key: Key, ec_key: Key, ed_key: Key
) -> None:
    clock = ManualClock()
    check = verifier(Served(rsa_key, ec_key, ed_key), clock)
    for key, alg in ((rsa_key, "RS256"), (rsa_key, "PS256"), (ec_key, "ES256"), (ed_key, "EdDSA")):
        principal = check.principal(key.sign(claims(clock), alg=alg))
        assert (principal.name, principal.role) == ("oidc:alice", Role.OPERATOR), alg
    # an ES256 header naming the RSA key, an RS256 header naming the EC key
    with pytest.raises(TokenRefused, match="does not fit"):
        check.principal(ec_key.sign(claims(clock), kid="r1"))
    with pytest.raises(TokenRefused, match="does not fit"):
        check.principal(rsa_key.sign(claims(clock), kid="e1"))
    for alg in ("none", "HS256"):
        with pytest.raises(TokenRefused, match=f"alg {alg} is not accepted"):
            check.principal(rsa_key.sign(claims(clock), alg=alg))


def test_malformed_headers_are_refused(rsa_key: Key, ec_key: Key) -> None:
    clock = ManualClock()
    check = verifier(Served(rsa_key, ec_key), clock)
    with pytest.raises(TokenRefused, match="critical"):
        check.principal(rsa_key.sign(claims(clock), crit=["exp"]))
    with pytest.raises(TokenRefused, match="no kid"):  # which of two RSA-capable keys? ...
        verifier(Served(rsa_key, Key("r2", rsa_key.private)), clock).principal(
            rsa_key.sign(claims(clock), kid=None)
        )
    # ... but with one key that fits, no kid is needed
    assert check.principal(ec_key.sign(claims(clock), kid=None)).role == Role.OPERATOR
    token = rsa_key.sign(claims(clock))
    head, body, sig = token.split(".")
    doubled = b64(b'{"alg": "RS256", "alg": "none", "kid": "r1"}')
    for bad in (f"{doubled}.{body}.{sig}", f"{head}.{body}.{sig}x", f"{b64(b'[1]')}.{body}.{sig}"):
        with pytest.raises(TokenRefused):
            check.principal(bad)
    assert looks_like_jwt(token) and looks_like_jwt(f"{head}.{body}.")
    assert (
        not looks_like_jwt("rlt_" + "A" * 43)
        and not looks_like_jwt("a.b")
        and not (looks_like_jwt("a.b.c.d"))
    )


def test_time_claims_are_judged_by_the_clock_with_a_minute_of_leeway(rsa_key: Key) -> None:
    clock = ManualClock()
    check = verifier(Served(rsa_key), clock)
    now = int(clock.now().timestamp())
    token = rsa_key.sign(claims(clock, exp=now + 10, nbf=now + 50))
    assert check.principal(token)  # nbf 50 s ahead: within the leeway
    clock.advance(69)
    assert check.principal(token)  # exp 59 s ago: within the leeway
    clock.advance(1)
    with pytest.raises(TokenRefused, match="expired"):
        check.principal(token)
    with pytest.raises(TokenRefused, match="not valid yet"):
        check.principal(rsa_key.sign(claims(clock, nbf=int(clock.now().timestamp()) + 61)))
    with pytest.raises(TokenRefused, match="no exp"):
        check.principal(rsa_key.sign(claims(clock, exp=None)))
    with pytest.raises(TokenRefused, match="not a number"):
        check.principal(rsa_key.sign(claims(clock, exp="tomorrow")))
    with pytest.raises(TokenRefused, match="another issuer"):
        check.principal(rsa_key.sign(claims(clock, iss=ISSUER + "/")))
    with pytest.raises(TokenRefused, match="another audience"):
        check.principal(rsa_key.sign(claims(clock, aud=["account"])))
    assert check.principal(rsa_key.sign(claims(clock, aud=["account", AUDIENCE])))


def test_role_and_name_claims() -> None:
    nested = {"realm_access": {"roles": ["rollout-read", "rollout-admin"]}}
    assert role_from(nested, "realm_access.roles", ROLES) == Role.ADMIN
    assert role_from({"https://corp.example/roles": "rollout-read"}, "https://corp.example/roles",
                     ROLES) == Role.VIEWER  # fmt: skip
    assert role_from({"roles": ["staff", 3, None]}, "roles", ROLES) is None
    assert role_from({"roles": {"rollout-admin": True}}, "roles", ROLES) is None
    assert role_from({}, "realm_access.roles", ROLES) is None

    assert name_from({"preferred_username": "a b/c\n", "sub": "x"}, "preferred_username") == "a_b_c"
    assert name_from({"preferred_username": "", "sub": "s-1"}, "preferred_username") == "s-1"
    assert name_from({"email": "ö" * 100}, "email") == "_" * 64
    assert name_from({"preferred_username": 7}, "preferred_username") is None


def test_no_mapped_role_is_its_own_refusal_and_names_no_token(rsa_key: Key) -> None:
    clock = ManualClock()
    token = rsa_key.sign(claims(clock, roles=["staff"]))
    with pytest.raises(NoRole) as info:
        verifier(Served(rsa_key), clock).principal(token)
    assert info.value.status == 403 and token not in str(info.value)
    with pytest.raises(TokenRefused, match="neither"):
        verifier(Served(rsa_key), clock).principal(
            rsa_key.sign(claims(clock, preferred_username=None, sub=None))
        )


def test_the_key_set_is_kept_for_its_ttl_and_refetched_once_for_an_unknown_kid(
    rsa_key: Key, ec_key: Key
) -> None:
    clock = ManualClock()
    served = Served(rsa_key)
    store = KeyStore(served, clock)
    assert [k.kid for k in store.keys("r1")] == ["r1"] and served.calls == 1
    clock.advance(JWKS_TTL_S - 1)
    assert store.keys("r1") and served.calls == 1
    served.keys = [ec_key]
    assert [k.kid for k in store.keys("e1")] == ["e1"] and served.calls == 2  # unknown kid
    assert store.keys("forged") == [] and served.calls == 2  # rate-limited
    clock.advance(JWKS_TTL_S)
    assert store.keys("e1") and served.calls == 3  # the TTL passed

    # the provider goes down: the last set serves on for a while, tried again now and then
    served.down = True
    clock.advance(JWKS_TTL_S)
    assert store.keys("e1") and served.calls == 4
    assert store.keys("e1") and served.calls == 4
    clock.advance(RETRY_AFTER_FAILURE_S)
    assert store.keys("e1") and served.calls == 5
    clock.advance(MAX_STALE_S)
    with pytest.raises(KeysUnavailable):
        store.keys("e1")
    served.down = False
    clock.advance(RETRY_AFTER_FAILURE_S)
    assert store.keys("e1") and served.calls == 7


def test_a_provider_never_reached_is_a_503_refusal(rsa_key: Key) -> None:
    clock = ManualClock()
    served = Served(rsa_key)
    served.down = True
    with pytest.raises(KeysUnavailable) as info:
        verifier(served, clock).principal(rsa_key.sign(claims(clock)))
    assert info.value.status == 503


def test_broken_or_foreign_keys_in_the_set_are_left_out(rsa_key: Key, ec_key: Key) -> None:
    small = {"kty": "RSA", "kid": "small", "n": b64(b"\xc1" * 64), "e": "AQAB"}
    enc = {**rsa_key.jwk(), "use": "enc"}
    hmac_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}
    off_curve = {**ec_key.jwk(), "kid": "bad", "y": b64(b"\x01" * 32)}
    keys = parse_jwks({"keys": [small, enc, hmac_key, off_curve, "x", ec_key.jwk()]})
    assert [k.kid for k in keys] == ["e1"]
    with pytest.raises(ValueError, match="not"):
        parse_jwks({"keys": "none"})


@pytest.fixture
def provider(ec_key: Key) -> Iterator[Provider]:
    with Provider([ec_key]).running() as running:
        yield running


def test_the_fetcher_discovers_the_key_set(provider: Provider) -> None:
    fetched = JwksFetcher(provider.issuer)()
    assert [k["kid"] for k in fetched["keys"]] == ["e1"]
    assert provider.hits == ["/.well-known/openid-configuration", "/jwks"]
    direct = JwksFetcher(provider.issuer, provider.issuer + "/jwks")()
    assert direct == fetched and provider.hits[-1] == "/jwks" and len(provider.hits) == 3
    with pytest.raises(FetchError, match="another issuer"):
        JwksFetcher(provider.issuer + "/")()
    with pytest.raises(FetchError, match="answered 404"):
        JwksFetcher(provider.issuer, provider.issuer + "/missing")()


def test_role_maps_and_urls() -> None:
    assert parse_role_map(" a=admin, b = Operator ,c=viewer,") == {
        "a": Role.ADMIN,
        "b": Role.OPERATOR,
        "c": Role.VIEWER,
    }
    assert parse_role_map('{"CN=Ops,OU=Groups": "operator"}') == {"CN=Ops,OU=Groups": Role.OPERATOR}
    assert parse_role_map("x=y=admin") == {"x=y": Role.ADMIN}
    for bad, why in [
        ("admin", "is not value=role"),
        ("a=root", "'root' is not one of viewer, operator, admin"),
        ("a=admin,a=viewer", "two roles"),
        (",", "maps no value"),
        ("{1", "not valid JSON"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_role_map(bad)
    assert url_problem("https://idp.example.com/realms/x") is None
    assert url_problem("http://127.0.0.1:8080") is None and url_problem("http://localhost") is None
    assert "https" in str(url_problem("http://idp.example.com"))
    assert url_problem("https://user:pw@idp.example.com") is not None
    assert url_problem("ftp://idp.example.com") is not None


def _settings_error(tmp_path: Any, **values: Any) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(home=tmp_path, **values)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_settings_turn_oidc_on_with_the_issuer_and_name_each_bad_value(tmp_path: Any) -> None:
    assert load_settings(home=tmp_path).oidc() is None
    good = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_role_map": "g=admin"}
    config = load_settings(home=tmp_path, oidc_role_claim="realm_access.roles", **good).oidc()
    assert config is not None and config.role_map == {"g": Role.ADMIN}
    assert (config.role_claim, config.name_claim, config.jwks_url) == (
        "realm_access.roles",
        "preferred_username",
        "",
    )
    assert _settings_error(tmp_path, **{**good, "oidc_issuer": "http://idp.example.com"}) == (
        "ROLLOUT_OIDC_ISSUER: 'http://idp.example.com' must be https:// "
        "(http:// only for localhost or 127.0.0.1)"
    )
    assert _settings_error(tmp_path, **{**good, "oidc_audience": " "}) == (
        "ROLLOUT_OIDC_AUDIENCE: must be set when ROLLOUT_OIDC_ISSUER is"
    )
    assert _settings_error(tmp_path, oidc_issuer=ISSUER, oidc_audience="a") == (
        "ROLLOUT_OIDC_ROLE_MAP: must be set when ROLLOUT_OIDC_ISSUER is"
    )
    assert _settings_error(tmp_path, **{**good, "oidc_role_map": "g=boss"}) == (
        "ROLLOUT_OIDC_ROLE_MAP: 'g': 'boss' is not one of viewer, operator, admin"
    )
    assert _settings_error(tmp_path, **{**good, "oidc_jwks_url": "keys.json"}).startswith(
        "ROLLOUT_OIDC_JWKS_URL: 'keys.json' is not an https:// URL"
    )
    assert _settings_error(tmp_path, **{**good, "oidc_role_claim": "realm_access..roles"}) == (
        "ROLLOUT_OIDC_ROLE_CLAIM: 'realm_access..roles' is not a claim name or dotted path "
        "(e.g. roles)"
    )


def test_a_token_shaped_payload_with_extra_dots_is_not_a_jwt() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode()
    assert not looks_like_jwt(payload + "==.x.y")
