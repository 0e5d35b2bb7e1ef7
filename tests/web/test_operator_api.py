"""The operator API over a served app: reads, plan and create from a JSON spec, the controls,
who may write, and bad bodies answered with a clear 4xx that writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger
from rollout.profiles import parse_profile
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_profile
from rollout.web.api_access import MAX_BODY_BYTES
from rollout.web.server import BackgroundServer
from tests.web.support import Device, Served, events

TOKEN = "t0k3n-for-the-operator-api-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALL = {"all": True}


@pytest.fixture
def api(
    started: Callable[..., BackgroundServer],
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
) -> tuple[Served, str, list[str]]:
    """A served app with the API token set, five devices enrolled through the MDM endpoint
    and a signed profile in the library: (served, profile UUID, UDIDs)."""
    server = started(api_token=TOKEN)
    web = Served(server.base_url, ledger, device_ca, server)
    udids = [f"00008020-00000000000000{n:02d}" for n in range(5)]
    for udid in udids:
        Device(web, udid).enroll()
    data = make_profile(profile_chain, name="Renewed")
    profile = parse_profile(data, trust_anchors=profile_chain.anchors)
    with ledger.library() as store:
        store.add(profile, data, SYSTEM_CLOCK.now())
    return web, profile.uuid, udids


def client(web: Served, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=web.base_url, timeout=10, headers=headers)


def rollout_count(web: Served) -> int:
    with client(web, **AUTH) as c:
        return len(c.get("/api/v1/rollouts").json())


def test_the_api_is_off_without_a_token_and_needs_the_right_one(
    web: Served, api: tuple[Served, str, list[str]]
) -> None:
    with client(web) as c:  # the default app: no token set, none created
        res = c.post("/api/v1/rollouts/plan", json={"profile": "x"})
        assert res.status_code == 403 and "ROLLOUT_API_TOKEN" in res.json()["detail"]
        assert c.get("/api/v1/rollouts").status_code == 403  # reads too
        assert c.get("/healthz").status_code == 200  # liveness stays open
    served, profile, _ = api
    spec = {"profile": profile, "targets": {"all": True}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        with client(served, **headers) as c:
            res = c.post("/api/v1/rollouts", json=spec)
            assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
            assert c.get("/api/v1/rollouts").status_code == 401
    assert rollout_count(served) == 0
    with client(served, **AUTH) as c:
        assert c.post("/api/v1/rollouts", json=spec).status_code == 201


def test_plan_writes_nothing_and_create_starts_a_staged_rollout(
    api: tuple[Served, str, list[str]],
) -> None:
    web, profile, udids = api
    spec = {
        "profile": profile,
        "targets": {"devices": udids},
        "stages": [1, "100%"],
        "gate": {"min_success_rate": 0.9},
        "name": "renew via api",
    }
    with client(web, **AUTH, **{"X-Rollout-Actor": "alice"}) as c:
        res = c.post("/api/v1/rollouts/plan", json=spec)
        assert res.status_code == 200, res.text
        planned = res.json()
        assert planned["profile"] == profile and planned["command"] == "install"
        assert rollout_count(web) == 0
        res = c.post("/api/v1/rollouts", params={"start": "true"}, json=spec)
        assert res.status_code == 201, res.text
        rid = res.json()["rollout"]["id"]
        assert res.headers["location"] == f"/api/v1/rollouts/{rid}"
        detail = c.get(f"/api/v1/rollouts/{rid}").json()
    assert detail["rollout"]["name"] == "renew via api"
    assert detail["rollout"]["state"] == "running"
    assert [s["reach"] for s in detail["stages"]] == [s["reach"] for s in planned["stages"]]
    assert [s["stage"] for s in detail["stages"]] == [0, 1]
    assert sum(sum(s["states"].values()) for s in detail["stages"]) == len(udids)
    created = [e for e in events(web, "rollout.created") if e.rollout_id == rid]
    assert created[0].data["by"] == "api:alice"


def test_controls_answer_what_they_did(api: tuple[Served, str, list[str]]) -> None:
    web, profile, _ = api
    with client(web, **AUTH) as c:
        rid = c.post("/api/v1/rollouts", json={"profile": profile, "targets": {"all": True}})
        rid = rid.json()["rollout"]["id"]
        base = f"/api/v1/rollouts/{rid}"
        res = c.post(f"{base}/start")
        assert res.status_code == 200 and res.json()["rollout"]["state"] == "running"
        first = c.post(f"{base}/pause").json()
        again = c.post(f"{base}/pause").json()
        assert (first["done"], again["done"]) == (True, False)
        assert again["rollout"]["state"] == "paused"
        assert c.post(f"{base}/resume").json()["rollout"]["state"] == "running"
        assert c.post(f"{base}/approve").status_code == 409  # no stage waits for approval
        res = c.post(f"{base}/retry", json={"reasons": ["no_answer"]})
        assert res.status_code == 200 and res.json()["result"] == 0
        assert c.post(f"{base}/abort").json()["rollout"]["state"] == "aborted"
        res = c.post(f"{base}/pause")
        assert res.status_code == 409 and "aborted" in res.json()["detail"]
        assert c.post("/api/v1/rollouts/999999/pause").status_code == 404
        assert c.get("/api/v1/rollouts/99999999999999999999").status_code == 404
    with web.ledger.rollouts() as store:
        kinds = [e.kind for e in store.events(rollout_id=rid)]
    assert kinds.count("rollout.paused") == 1 and "rollout.aborted" in kinds


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"", 400, "JSON object"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe{}", 400, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "not JSON"),
        (b'{"profile": 1' + b"0" * 5000 + b"}", 400, "not JSON"),
        (json.dumps({"profile": "p", "colour": "red"}).encode(), 422, "unknown key 'colour'"),
        (json.dumps({"targets": {"all": True}}).encode(), 422, "profile"),
        (
            json.dumps({"profile": "PROFILE", "targets": ALL, "stages": ["50%", "10%"]}).encode(),
            422,
            "stages",
        ),
        (
            json.dumps({"profile": "PROFILE", "targets": ALL, "stages": {"a": 1}}).encode(),
            422,
            "stages",
        ),
        (json.dumps({"profile": "PROFILE", "targets": [1]}).encode(), 422, "targets"),
        (json.dumps({"profile": "PROFILE", "targets": ALL, "gate": 7}).encode(), 422, "gate"),
        (
            json.dumps({"profile": "PROFILE", "targets": ALL, "rate_limit": "fast"}).encode(),
            422,
            "rate_limit",
        ),
        (json.dumps({"profile": "00000000", "targets": {"all": True}}).encode(), 422, "no profile"),
        (
            json.dumps({"profile": "PROFILE", "targets": {"devices": ["NOT-ENROLLED-1"]}}).encode(),
            422,
            "not in the registry",
        ),
    ],
)
def test_bad_specs_get_a_clear_4xx_and_write_nothing(
    api: tuple[Served, str, list[str]], body: bytes, status: int, says: str
) -> None:
    web, profile, _ = api
    body = body.replace(b"PROFILE", profile.encode())
    with client(web, **AUTH, **{"Content-Type": "application/json"}) as c:
        for path in ("/api/v1/rollouts/plan", "/api/v1/rollouts"):
            res = c.post(path, content=body)
            assert res.status_code == status, res.text
            assert says in res.json()["detail"]
    assert rollout_count(web) == 0


def test_a_body_over_the_cap_is_refused_before_it_is_read(
    api: tuple[Served, str, list[str]],
) -> None:
    web, _, _ = api
    with client(web, **AUTH) as c:
        res = c.post("/api/v1/rollouts", content=b" " * (MAX_BODY_BYTES + 1))
        assert res.status_code == 413
        res = c.post("/api/v1/rollouts/1/retry", json={"reasons": "no_answer"})
        assert res.status_code == 422
        res = c.post(
            "/api/v1/rollouts", headers={"X-Rollout-Actor": "bob smith"}, json={"profile": "p"}
        )
        assert res.status_code == 400 and "X-Rollout-Actor" in res.json()["detail"]
    assert rollout_count(web) == 0


def test_a_rollouts_devices_and_the_journal_page_by_keyset(
    api: tuple[Served, str, list[str]],
) -> None:
    web, profile, udids = api
    with client(web, **AUTH) as c:
        spec = {"profile": profile, "targets": {"all": True}, "stages": ["100%"]}
        rid = c.post("/api/v1/rollouts", json=spec).json()["rollout"]["id"]
        c.post(f"/api/v1/rollouts/{rid}/abort")
        seen, after, pages = [], 0, 0
        while True:
            page = c.get(f"/api/v1/rollouts/{rid}/devices", params={"after": after, "limit": 2})
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [(d["device"], d["state"], d["reason"]) for d in body["items"]]
            pages += 1
            if body["next"] is None:
                break
            after = body["next"]
        assert sorted(d for d, _, _ in seen) == sorted(udids) and pages == 3
        assert {(s, r) for _, s, r in seen} == {("cancelled", "aborted")}
        only = c.get(f"/api/v1/rollouts/{rid}/devices", params={"state": "planned"}).json()
        assert only == {"items": [], "next": None}
        prefixed = c.get(f"/api/v1/rollouts/{rid}/devices", params={"reason": "abort"}).json()
        assert len(prefixed["items"]) == 5
        assert c.get("/api/v1/rollouts/424242/devices").status_code == 404
        assert c.get(f"/api/v1/rollouts/{rid}/devices", params={"limit": 0}).status_code == 422

        first = c.get("/api/v1/events", params={"rollout": rid, "limit": 1}).json()
        [newest] = first["items"]
        assert newest["kind"] == "rollout.aborted" and first["next"] == newest["id"]
        older = c.get("/api/v1/events", params={"rollout": rid, "before": first["next"]}).json()
        assert [e["kind"] for e in older["items"]] == ["rollout.created"]
        assert older["next"] is None
        kinds = c.get("/api/v1/events", params={"kind": "mdm.authenticate"}).json()["items"]
        assert all(e["kind"] == "mdm.authenticate" for e in kinds)
        assert c.get("/api/v1/events", params={"before": -1}).status_code == 422
