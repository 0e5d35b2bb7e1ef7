"""Operator API tokens with roles over a served app: a viewer reads, an operator drives
rollouts and alerts, a revoked token opens nothing; the ledger keeps hashes, never tokens;
the alert and profile routes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.inventory import read_inventory
from rollout.ledger import Ledger, NewAlert, db
from rollout.ledger.models import ApiTokenRow
from rollout.profiles import parse_profile
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile
from rollout.web.server import BackgroundServer
from tests.web.support import Device, Served, events

PEPPER = "pepper-for-the-token-hashes"


@pytest.fixture
def served(started: Callable[..., BackgroundServer]) -> BackgroundServer:
    return started(token_pepper=PEPPER)


def tokens(ledger: Ledger) -> dict[Role, str]:
    now = SYSTEM_CLOCK.now()
    return {
        role: access.issue(ledger, role.name.lower(), role, actor="t", now=now, pepper=PEPPER)[0]
        for role in Role
    }


def call(
    server: BackgroundServer, token: str | None, method: str, path: str, **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server.base_url, timeout=10, headers=headers) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]  # httpx's keywords


def test_each_role_may_do_what_it_should_and_no_more(
    served: BackgroundServer, ledger: Ledger, profile_chain: AppleLikeChain, device_ca: Issued
) -> None:
    web = Served(served.base_url, ledger, device_ca, served)
    Device(web, "00008020-0000000000000001").enroll()
    data = make_profile(profile_chain, name="Renewed")
    profile = parse_profile(data, trust_anchors=profile_chain.anchors)
    with ledger.library() as store:
        store.add(profile, data, SYSTEM_CLOCK.now())
    held = tokens(ledger)
    spec = {"profile": profile.uuid, "targets": {"all": True}}

    for role in Role:  # every role reads
        assert call(served, held[role], "GET", "/api/v1/rollouts").status_code == 200
        assert call(served, held[role], "GET", "/api/v1/profiles").status_code == 200
        assert call(served, held[role], "GET", "/api/v1/alerts").status_code == 200
    res = call(served, held[Role.VIEWER], "POST", "/api/v1/rollouts", json=spec)
    assert res.status_code == 403 and "viewer" in res.json()["detail"]
    res = call(served, held[Role.OPERATOR], "POST", "/api/v1/rollouts", json=spec)
    assert res.status_code == 201, res.text
    rid = res.json()["rollout"]["id"]
    [created] = [e for e in events(web, "rollout.created") if e.rollout_id == rid]
    assert created.data["by"] == "api:operator"  # the token's name, whatever the caller says

    access.revoke(ledger, "operator", actor="t", now=SYSTEM_CLOCK.now())
    assert call(served, held[Role.OPERATOR], "GET", "/api/v1/rollouts").status_code == 401
    assert call(served, "rlt_" + "x" * 43, "GET", "/api/v1/rollouts").status_code == 401

    with db.transaction(ledger.engine) as s:
        rows = {r.name: r for r in s.scalars(select(ApiTokenRow))}
    assert rows["viewer"].last_used_at is not None and rows["operator"].revoked_at is not None
    stored = " ".join(r.token_hash for r in rows.values())
    assert not any(token in stored or token[4:] in stored for token in held.values())
    # a token checked without the pepper it was made with does not open anything
    assert access.authenticate(ledger, held[Role.ADMIN], now=SYSTEM_CLOCK.now()) is None


def test_alerts_are_listed_acknowledged_and_resolved_over_http(
    served: BackgroundServer, ledger: Ledger
) -> None:
    held = tokens(ledger)
    now = SYSTEM_CLOCK.now()
    with ledger.alerts() as store:
        [alert] = store.raise_new(
            [NewAlert("renewal.missing:x", "renewal.missing", "warning", "no renewal for X")], now
        )
    listed = call(served, held[Role.VIEWER], "GET", "/api/v1/alerts").json()
    assert [(a["id"], a["state"]) for a in listed] == [(alert.id, "open")]
    base = f"/api/v1/alerts/{alert.id}"
    assert call(served, held[Role.VIEWER], "POST", f"{base}/ack").status_code == 403
    res = call(served, held[Role.OPERATOR], "POST", f"{base}/ack")
    assert res.status_code == 200 and res.json()["state"] == "acknowledged"
    res = call(served, held[Role.OPERATOR], "POST", f"{base}/resolve")
    assert res.status_code == 200 and res.json()["resolved_by"] == "api:operator"
    assert call(served, held[Role.OPERATOR], "POST", f"{base}/resolve").status_code == 409
    assert call(served, held[Role.OPERATOR], "POST", "/api/v1/alerts/999999/ack").status_code == 404
    assert call(served, held[Role.VIEWER], "GET", "/api/v1/alerts").json() == []
    everything = call(served, held[Role.VIEWER], "GET", "/api/v1/alerts", params={"state": "all"})
    assert [a["state"] for a in everything.json()] == ["resolved"]
    bad = call(served, held[Role.VIEWER], "GET", "/api/v1/alerts", params={"state": "x"})
    assert bad.status_code == 422


def test_a_profile_shows_who_holds_it(
    served: BackgroundServer, ledger: Ledger, profile_chain: AppleLikeChain
) -> None:
    held = tokens(ledger)
    now = SYSTEM_CLOCK.now()
    data = make_profile(profile_chain, expires_at=now + dt.timedelta(days=90))
    profile = parse_profile(data, trust_anchors=profile_chain.anchors)
    with ledger.library() as store:
        store.add(profile, data, now)
    rows = "udid,profiles\n" + "".join(
        f"00008020-00000000000000{n:02d},{profile.uuid}\n" for n in range(3)
    )
    with ledger.registry() as reg:
        reg.import_devices(read_inventory(rows.encode(), fmt="csv").records, now)
    shown = call(served, held[Role.VIEWER], "GET", f"/api/v1/profiles/{profile.uuid}").json()
    assert shown["uuid"] == profile.uuid and shown["held_by"]["devices"] == 3
    assert len(shown["held_by"]["sample"]) == 3 and shown["renewals"] == []
    assert call(served, held[Role.VIEWER], "GET", "/api/v1/profiles/nope").status_code == 404


# Every /api/v1 route and the least role that may use it (the ids name nothing that exists, so
# the calls let through write nothing).
ROUTES: list[tuple[str, str, Role]] = [
    ("GET", "/api/v1/whoami", Role.VIEWER),
    ("GET", "/api/v1/rollouts", Role.VIEWER),
    ("GET", "/api/v1/rollouts/999999", Role.VIEWER),
    ("GET", "/api/v1/rollouts/999999/devices", Role.VIEWER),
    ("POST", "/api/v1/rollouts/plan", Role.OPERATOR),
    ("POST", "/api/v1/rollouts", Role.OPERATOR),
    *[
        ("POST", f"/api/v1/rollouts/999999/{control}", Role.OPERATOR)
        for control in ("start", "pause", "resume", "abort", "approve", "retry")
    ],
    ("GET", "/api/v1/events", Role.VIEWER),
    ("GET", "/api/v1/alerts", Role.VIEWER),
    ("POST", "/api/v1/alerts/999999/ack", Role.OPERATOR),
    ("POST", "/api/v1/alerts/999999/resolve", Role.OPERATOR),
    ("GET", "/api/v1/profiles", Role.VIEWER),
    ("GET", "/api/v1/profiles/calendar", Role.VIEWER),
    ("GET", "/api/v1/profiles/00000000-0000-0000-0000-000000000000", Role.VIEWER),
    ("POST", "/api/v1/profiles", Role.ADMIN),
    ("GET", "/api/v1/devices", Role.VIEWER),
    ("GET", "/api/v1/devices/00008020-0000000000000099", Role.VIEWER),
    ("GET", "/api/v1/tokens", Role.ADMIN),
    ("POST", "/api/v1/tokens", Role.ADMIN),
    ("DELETE", "/api/v1/tokens/999999", Role.ADMIN),
]


def _template(path: str, templates: set[str]) -> str:
    """The documented path ``path`` is: itself, or the one template it fits."""
    if path in templates:
        return path
    parts = path.split("/")
    [found] = [
        t
        for t in templates
        if len(t.split("/")) == len(parts)
        and all(p == q or q.startswith("{") for p, q in zip(parts, t.split("/"), strict=True))
    ]
    return found


def test_every_route_lets_in_its_least_role_and_refuses_the_roles_below(
    served: BackgroundServer, ledger: Ledger
) -> None:
    held = tokens(ledger)
    paths = call(served, None, "GET", "/openapi.json").json()["paths"]
    documented = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/api/") for m in ops}
    templates = {p for _, p in documented}
    assert {(m, _template(p, templates)) for m, p, _ in ROUTES} == documented  # every route
    for method, path, least in ROUTES:  # the least role gets in, the one below it does not
        res = call(served, held[least], method, path)
        assert res.status_code not in (401, 403), (method, path, least, res.text)
        if least > Role.VIEWER:
            res = call(served, held[Role(least - 1)], method, path)
            assert res.status_code == 403, (method, path)
            assert least.name.lower() in res.json()["detail"]
