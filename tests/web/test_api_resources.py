"""The operator API's devices, profile uploads and tokens over a served app: the registry
filtered and paged (never a push token, push magic or identity), one device with its targets
and profiles; a profile file added by an admin exactly as ``rollout profiles add`` does, and
refused (with nothing stored) when it is damaged, untrusted, a clash or not an admin's; tokens
made, listed and revoked by an admin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.inventory import read_inventory
from rollout.ledger import Ledger
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile, tamper
from rollout.web.server import BackgroundServer
from tests.web.support import Served, device, fleet_holding, install_rollout

OCTETS = {"Content-Type": "application/octet-stream"}
SECRET_MAGIC = "push-magic-that-must-not-leak"


def tokens(ledger: Ledger) -> dict[Role, str]:
    now = SYSTEM_CLOCK.now()
    return {
        role: access.issue(ledger, role.name.lower(), role, actor="t", now=now)[0] for role in Role
    }


def call(
    server: BackgroundServer | Served, token: str, method: str, path: str, **kw: object
) -> httpx.Response:
    with httpx.Client(
        base_url=server.base_url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]  # httpx's keywords


@pytest.fixture
def anchored(
    started: Callable[..., BackgroundServer], tmp_path: Path, profile_chain: AppleLikeChain
) -> BackgroundServer:
    """An app whose trust anchor is the test chain's root."""
    root = tmp_path / "root.pem"
    root.write_bytes(profile_chain.root.cert_pem())
    return started(trust_anchors=str(root))


def test_devices_are_filtered_paged_and_shown_without_secrets(
    started: Callable[..., BackgroundServer],
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
) -> None:
    server = started()
    web = Served(server.base_url, ledger, device_ca, server)
    enrolled, profile = fleet_holding(web, profile_chain, 3, held_by=2)
    inventory = (
        "udid,platform,model,serial_number,tags,push_token,push_magic\n"
        f"00008030-0000000000000A01,iPadOS,MQ6T3,F9XK01,field;kiosk,{'ab' * 32},{SECRET_MAGIC}\n"
        "00008030-0000000000000A02,iPadOS,MQ6T3,F9XK02,field,,\n"
    )
    with ledger.registry() as reg:
        reg.import_devices(
            read_inventory(inventory.encode(), fmt="csv").records, SYSTEM_CLOCK.now()
        )
    rollout_id = install_rollout(web, profile_chain, [d.udid for d in enrolled])
    viewer = tokens(ledger)[Role.VIEWER]

    def keys(**params: object) -> list[str]:
        res = call(server, viewer, "GET", "/api/v1/devices", params=params)
        assert res.status_code == 200, res.text
        return [d["enrollment_id"] for d in res.json()["items"]]

    seen, after, pages = [], 0, 0
    while True:
        page = call(server, viewer, "GET", "/api/v1/devices", params={"after": after, "limit": 2})
        body = page.json()
        seen += [d["enrollment_id"] for d in body["items"]]
        pages += 1
        if body["next"] is None:
            break
        after = body["next"]
    imported = ["00008030-0000000000000A01", "00008030-0000000000000A02"]
    assert seen == [d.udid for d in enrolled] + imported and pages == 3

    assert keys(platform="iPadOS") == imported
    assert keys(tag="field") == imported and keys(tag="field,kiosk") == imported[:1]
    assert keys(state="imported") == imported and len(keys(state="enrolled,imported")) == 5
    assert keys(token="missing") == imported[1:]
    assert keys(model="MQ6T3") == imported and len(keys(model="iPhone14,2")) == 3
    assert keys(serial="F9XK0") == imported and keys(serial="f9xk0") == []
    assert keys(key="00008030-0000000000000a") == imported  # UDIDs in any case
    assert keys(holds=profile.uuid.upper()) == [d.udid for d in enrolled[:2]]
    assert keys(platform="iOS", tag="field") == []
    for bad in ({"state": "asleep"}, {"token": "x"}, {"limit": 0}, {"after": -1}):
        res = call(server, viewer, "GET", "/api/v1/devices", params=bad)
        assert res.status_code == 422 and res.json()["detail"], bad

    shown = call(server, viewer, "GET", f"/api/v1/devices/{enrolled[0].udid.lower()}")
    assert shown.status_code == 200, shown.text
    one = shown.json()
    assert (one["state"], one["token"], one["identity_bound"]) == ("enrolled", "active", True)
    assert [p["uuid"] for p in one["profiles"]] == [profile.uuid]
    [target] = one["targets"]
    assert (target["rollout"], target["state"], target["rollout_state"]) == (
        rollout_id,
        "queued",
        "running",
    )
    stored = device(web, enrolled[0].udid)
    with web.ledger.registry() as store:
        push = store.push_data(enrolled[0].udid)
    assert push is not None and push.token and push.push_magic and stored.identity_sha256
    listed = call(server, viewer, "GET", "/api/v1/devices").text
    for text in (shown.text, listed):
        for secret in (push.token, push.push_magic, stored.identity_sha256):
            assert secret not in text
        assert "ab" * 32 not in text and SECRET_MAGIC not in text
        assert "push_token" not in text and "push_magic" not in text and "identity_sha" not in text
    assert call(server, viewer, "GET", "/api/v1/devices/NOPE").status_code == 404


def test_an_admin_adds_a_profile_file_as_the_cli_does(
    anchored: BackgroundServer, ledger: Ledger, profile_chain: AppleLikeChain
) -> None:
    held = tokens(ledger)
    data = make_profile(
        profile_chain, name="Uploaded", expires_at=SYSTEM_CLOCK.now() + dt.timedelta(days=200)
    )

    def library() -> list[str]:
        with ledger.library() as store:
            return [p.name for p in store.profiles()]

    for role in (Role.VIEWER, Role.OPERATOR):
        res = call(anchored, held[role], "POST", "/api/v1/profiles", content=data, headers=OCTETS)
        assert res.status_code == 403 and "admin" in res.json()["detail"]
    assert library() == []

    res = call(anchored, held[Role.ADMIN], "POST", "/api/v1/profiles", content=data, headers=OCTETS)
    assert res.status_code == 201, res.text
    added = res.json()
    assert added["name"] == "Uploaded" and added["signature"]["chain_trusted"] is True
    assert res.headers["location"] == f"/api/v1/profiles/{added['uuid']}"
    again = call(anchored, held[Role.ADMIN], "POST", "/api/v1/profiles", content=data)
    assert again.status_code == 200 and again.json()["sha256"] == added["sha256"]
    with ledger.checkin() as store:
        [event] = store.events(kind="profile.added")
    assert event.data == {"uuid": added["uuid"], "name": "Uploaded", "by": "api:admin"}

    clash = make_profile(profile_chain, name="Clash", uuid=added["uuid"])
    strangers = make_apple_like_chain(team_name="Strangers")
    refusals = [
        (b"", 400, "not a usable profile"),
        (b"\x30\x82junk" * 50, 400, "not a usable profile"),
        (tamper(make_profile(profile_chain, name="Tampered")), 400, "tampered or damaged"),
        (make_profile(strangers, name="Untrusted"), 400, "ROLLOUT_TRUST_ANCHORS"),
        (clash, 409, "different file"),
        (b"x" * (1024 * 1024 + 1), 413, "over"),
    ]
    for body, status, says in refusals:
        res = call(anchored, held[Role.ADMIN], "POST", "/api/v1/profiles", content=body)
        assert res.status_code == status, res.text
        assert says in res.json()["detail"]
    res = call(
        anchored,
        held[Role.ADMIN],
        "POST",
        "/api/v1/profiles",
        content=data,
        headers={"Content-Type": "text/plain"},
    )
    assert res.status_code == 415
    assert library() == ["Uploaded"]  # nothing else was stored

    res = call(
        anchored,
        held[Role.ADMIN],
        "POST",
        "/api/v1/profiles",
        params={"allow_untrusted": "true"},
        content=make_profile(strangers, name="Untrusted"),
    )
    assert res.status_code == 201 and res.json()["signature"]["chain_trusted"] is False


def test_an_admin_makes_lists_and_revokes_tokens(
    started: Callable[..., BackgroundServer], ledger: Ledger
) -> None:
    server = started()
    held = tokens(ledger)
    admin = held[Role.ADMIN]
    for role in (Role.VIEWER, Role.OPERATOR):
        assert call(server, held[role], "GET", "/api/v1/tokens").status_code == 403
        res = call(
            server, held[role], "POST", "/api/v1/tokens", json={"name": "x", "role": "viewer"}
        )
        assert res.status_code == 403

    res = call(server, admin, "POST", "/api/v1/tokens", json={"name": "ci-bot", "role": "operator"})
    assert res.status_code == 201, res.text
    made = res.json()
    secret = made.pop("token")
    assert secret.startswith("rlt_") and made["role"] == "operator"
    assert made["created_by"] == "api:admin" and res.headers["cache-control"] == "no-store"
    assert call(server, secret, "GET", "/api/v1/whoami").json()["role"] == "operator"

    listed = call(server, admin, "GET", "/api/v1/tokens")
    assert [t["name"] for t in listed.json()] == ["viewer", "operator", "admin", "ci-bot"]
    assert secret not in listed.text and all("token" not in t for t in listed.json())

    for body, status in (
        ({"name": "ci-bot", "role": "viewer"}, 409),
        ({"name": "bad name!", "role": "viewer"}, 422),
        ({"name": "x", "role": "root"}, 422),
        ({"name": "x"}, 422),
        ({"name": "x", "role": "viewer", "extra": 1}, 422),
    ):
        res = call(server, admin, "POST", "/api/v1/tokens", json=body)
        assert res.status_code == status and res.json()["detail"], body
    assert call(server, admin, "POST", "/api/v1/tokens", content=b"[1]").status_code == 400

    res = call(server, admin, "DELETE", f"/api/v1/tokens/{made['id']}")
    assert res.status_code == 200 and res.json()["revoked_at"] is not None
    assert call(server, secret, "GET", "/api/v1/whoami").status_code == 401
    assert call(server, admin, "DELETE", f"/api/v1/tokens/{made['id']}").status_code == 409
    assert call(server, admin, "DELETE", "/api/v1/tokens/999999").status_code == 404
    with ledger.checkin() as store:
        kinds = [(e.kind, e.data.get("by")) for e in store.events(kind="token.revoked")]
    assert kinds == [("token.revoked", "api:admin")]
