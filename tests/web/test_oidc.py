"""OIDC sign-in over a served app: JWTs from a stand-in identity provider (a real HTTP server
with a discovery document and a key set; keys made and tokens signed here) open the operator
API with the role their claim maps to; every forgery is 401; key rotation works; a provider
that is down refuses JWTs clearly (503) while the product's own tokens keep working."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from rollout import access
from rollout.access import Role
from rollout.clock import ManualClock
from rollout.ledger import Ledger
from rollout.ledger.db import upgrade
from rollout.oidc import REFETCH_EVERY_S
from rollout.profiles import parse_profile
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile
from rollout.web.server import BackgroundServer, free_port
from tests.oidc_idp import Key, Provider
from tests.web.support import Device, Served, events

AUDIENCE = "rollout-api"
ROLE_MAP = "rollout-admin=admin,rollout-ops=operator,rollout-read=viewer"


@pytest.fixture
def ledger_url(sqlite_url: str) -> str:
    """SQLite only: sign-in does not depend on the ledger's backend."""
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def clock() -> ManualClock:
    # the profiles the tests sign are made at the real time, so the app's clock starts there
    return ManualClock(dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key.rsa("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key.ec("ec-1")


@pytest.fixture
def provider(rsa_key: Key, ec_key: Key) -> Iterator[Provider]:
    with Provider([rsa_key, ec_key]).running() as running:
        yield running


def oidc_settings(issuer: str) -> dict[str, Any]:
    return {"oidc_issuer": issuer, "oidc_audience": AUDIENCE, "oidc_role_map": ROLE_MAP}


@pytest.fixture
def app(
    started: Callable[..., BackgroundServer], provider: Provider, clock: ManualClock
) -> BackgroundServer:
    return started(clock=clock, **oidc_settings(provider.issuer))


def claims(issuer: str, clock: ManualClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    base = {
        "iss": issuer,
        "aud": [AUDIENCE, "account"],
        "sub": "0b5e-41c2",
        "preferred_username": "vera",
        "roles": ["rollout-read"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


_client: httpx.Client | None = None


@pytest.fixture(scope="module", autouse=True)
def client() -> Iterator[None]:
    """One HTTP client for the module's requests (making one costs tens of milliseconds)."""
    global _client
    with httpx.Client(timeout=10) as _client:
        yield
    _client = None


def call(
    server: BackgroundServer, token: str | None, method: str, path: str, **kw: Any
) -> httpx.Response:
    assert _client is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _client.request(method, server.base_url + path, headers=headers, **kw)


def test_each_mapped_role_reaches_exactly_its_routes(
    app: BackgroundServer,
    provider: Provider,
    clock: ManualClock,
    rsa_key: Key,
    ec_key: Key,
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
) -> None:
    web = Served(app.base_url, ledger, device_ca, app)
    Device(web, "00008020-0000000000000001").enroll()
    data = make_profile(profile_chain, name="Renewed")
    profile = parse_profile(data, trust_anchors=profile_chain.anchors)
    with ledger.library() as store:
        store.add(profile, data, clock.now())
    iss = provider.issuer
    viewer = rsa_key.sign(claims(iss, clock))
    # ES256, a role claim holding one string, and a name to be made safe for the journal
    operator = ec_key.sign(
        claims(iss, clock, preferred_username="Olga Ops/DE", roles="rollout-ops")
    )
    # the highest mapped role wins; values not in the map are ignored
    admin = rsa_key.sign(
        claims(iss, clock, preferred_username=None, sub="ada", roles=["x", "rollout-read",
                                                                      "rollout-admin"]),
        alg="PS256",
    )  # fmt: skip
    nobody = rsa_key.sign(claims(iss, clock, roles=["staff"]))

    assert call(app, viewer, "GET", "/api/v1/whoami").json() == {
        "actor": "oidc:vera",
        "role": "viewer",
    }
    assert call(app, operator, "GET", "/api/v1/whoami").json()["role"] == "operator"
    assert call(app, admin, "GET", "/api/v1/whoami").json() == {
        "actor": "oidc:ada",
        "role": "admin",
    }
    res = call(app, nobody, "GET", "/api/v1/rollouts")
    assert res.status_code == 403 and "ROLLOUT_OIDC_ROLE_MAP" in res.json()["detail"]

    for token in (viewer, operator, admin):
        assert call(app, token, "GET", "/api/v1/rollouts").status_code == 200
        assert call(app, token, "GET", "/api/v1/profiles").status_code == 200
    spec = {"profile": profile.uuid, "targets": {"all": True}}
    res = call(app, viewer, "POST", "/api/v1/rollouts", json=spec)
    assert res.status_code == 403 and "viewer" in res.json()["detail"]
    res = call(app, operator, "POST", "/api/v1/rollouts", params={"start": "true"}, json=spec)
    assert res.status_code == 201, res.text
    rid = res.json()["rollout"]["id"]

    res = call(app, viewer, "POST", f"/api/v1/rollouts/{rid}/pause")
    assert res.status_code == 403, res.text
    res = call(app, operator, "POST", f"/api/v1/rollouts/{rid}/pause")
    assert res.status_code == 200 and res.json()["done"] is True, res.text

    [created] = [e for e in events(web, "rollout.created") if e.rollout_id == rid]
    [paused] = [e for e in events(web, "rollout.paused") if e.rollout_id == rid]
    assert created.data["by"] == paused.data["by"] == "oidc:Olga_Ops_DE"
    # one fetch of the discovery document and one of the key set served every request
    assert provider.hits == ["/.well-known/openid-configuration", "/jwks"]


def test_forged_expired_and_foreign_tokens_are_refused(
    app: BackgroundServer, provider: Provider, clock: ManualClock, rsa_key: Key, ec_key: Key
) -> None:
    iss = provider.issuer
    now = int(clock.now().timestamp())
    impostor = Key("ec-1", Key.ec("x").private)  # the provider's kid, another key
    refused = {
        "expired": rsa_key.sign(claims(iss, clock, iat=now - 900, exp=now - 61)),
        "no exp": rsa_key.sign(claims(iss, clock, exp=None)),
        "not yet valid": rsa_key.sign(claims(iss, clock, nbf=now + 61)),
        "issued in the future": rsa_key.sign(claims(iss, clock, iat=now + 120, nbf=None)),
        "wrong issuer": rsa_key.sign(claims(iss + "/other", clock)),
        "wrong audience": rsa_key.sign(claims(iss, clock, aud="another-api")),
        "wrong signature": impostor.sign(claims(iss, clock)),
        "alg none": rsa_key.sign(claims(iss, clock), alg="none"),
        "alg confusion": rsa_key.sign(claims(iss, clock), alg="HS256"),
        "alg not the key's": ec_key.sign(claims(iss, clock), kid="rsa-1"),
        "unknown kid": rsa_key.sign(claims(iss, clock), kid="nobody-has-it"),
        "tampered payload": _tampered(rsa_key.sign(claims(iss, clock))),
    }
    for why, token in refused.items():
        res = call(app, token, "GET", "/api/v1/rollouts")
        assert res.status_code == 401, (why, res.text)
        detail = res.json()["detail"]
        assert detail.startswith("the OIDC token is refused: "), (why, detail)
        assert not any(part in detail for part in token.split(".") if len(part) > 8), why
    # within the leeway (60 s) either side, a token still opens
    fine = rsa_key.sign(claims(iss, clock, exp=now - 30, nbf=now + 30, iat=now + 30))
    assert call(app, fine, "GET", "/api/v1/rollouts").status_code == 200
    clock.advance(31)
    assert call(app, fine, "GET", "/api/v1/rollouts").status_code == 401


def _tampered(token: str) -> str:
    import base64
    import json

    head, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["roles"] = ["rollout-admin"]
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_a_rotated_key_is_fetched_once_and_forged_kids_cannot_hammer_the_provider(
    app: BackgroundServer, provider: Provider, clock: ManualClock, rsa_key: Key
) -> None:
    iss = provider.issuer
    assert call(app, rsa_key.sign(claims(iss, clock)), "GET", "/api/v1/whoami").status_code == 200
    assert provider.jwks_fetches == 1

    rotated = Key.ed25519("ed-2")
    provider.keys = [rotated]  # the provider rotates: the old keys are gone
    res = call(app, rotated.sign(claims(iss, clock)), "GET", "/api/v1/whoami")
    assert res.status_code == 200, res.text
    assert provider.jwks_fetches == 2  # the unknown kid fetched the set once

    for n in range(5):  # forged kids: refused, without asking the provider again
        forged = rsa_key.sign(claims(iss, clock), kid=f"forged-{n}")
        assert call(app, forged, "GET", "/api/v1/whoami").status_code == 401
    assert provider.jwks_fetches == 2
    # the old key is no longer trusted after the refetch, for its kid no longer exists
    assert call(app, rsa_key.sign(claims(iss, clock)), "GET", "/api/v1/whoami").status_code == 401

    clock.advance(REFETCH_EVERY_S)
    forged = rsa_key.sign(claims(iss, clock), kid="forged-later")
    assert call(app, forged, "GET", "/api/v1/whoami").status_code == 401
    assert provider.jwks_fetches == 3  # one more look, once the pause has passed
    clock.advance(600)  # past the TTL: fetched again on the next use
    assert call(app, rotated.sign(claims(iss, clock)), "GET", "/api/v1/whoami").status_code == 200
    assert provider.jwks_fetches == 4


def test_a_provider_that_is_down_refuses_jwts_clearly_and_product_tokens_still_work(
    started: Callable[..., BackgroundServer], ledger: Ledger, clock: ManualClock, rsa_key: Key
) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = started(clock=clock, **oidc_settings(issuer))
    # OIDC on counts as configured: no token is 401 (not "the API is off")
    assert call(app, None, "GET", "/api/v1/rollouts").status_code == 401

    jwt = rsa_key.sign(claims(issuer, clock))
    for _ in range(2):
        res = call(app, jwt, "GET", "/api/v1/rollouts")
        assert res.status_code == 503, res.text
        assert "identity provider" in res.json()["detail"]
        assert res.headers["retry-after"] == "10"

    token, _ = access.issue(ledger, "ci", Role.VIEWER, actor="t", now=clock.now())
    res = call(app, token, "GET", "/api/v1/whoami")
    assert res.status_code == 200 and res.json() == {"actor": "api:ci", "role": "viewer"}
