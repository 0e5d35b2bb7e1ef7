"""``/metrics`` over a served app: the figures equal what the API and the ledger say, in
Prometheus' text format, for a viewer's token only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, NewAlert
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain
from rollout.web.server import BackgroundServer
from tests.web.support import Served, fleet_holding


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_equal_the_ledgers_figures(
    started: Callable[..., BackgroundServer],
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
) -> None:
    server = started()
    web = Served(server.base_url, ledger, device_ca, server)
    now = SYSTEM_CLOCK.now()
    viewer, _ = access.issue(ledger, "prometheus", Role.VIEWER, actor="t", now=now)
    operator, _ = access.issue(ledger, "ops", Role.OPERATOR, actor="t", now=now)
    devices, profile = fleet_holding(
        web, profile_chain, 4, held_by=3, expires_at=now + dt.timedelta(days=10)
    )
    with ledger.alerts() as store:
        store.raise_new([NewAlert("k1", "renewal.missing", "critical", "t")], now)
    spec = {"profile": profile.uuid, "targets": {"all": True}, "stages": ["100%"]}
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        auth = {"Authorization": f"Bearer {operator}"}
        rid = c.post("/api/v1/rollouts", json=spec, headers=auth).json()["rollout"]["id"]
        report = c.get(f"/api/v1/rollouts/{rid}", headers=auth).json()
        for d in devices:
            d.report("Idle")  # each stores one Idle report
        assert c.get("/metrics").status_code == 401
        res = c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    got = samples(res.text)
    assert got[("rollout_rollouts", (("state", "draft"),))] == 1
    assert got[("rollout_rollouts", (("state", "running"),))] == 0
    for stage in report["stages"]:
        for state, n in stage["states"].items():
            key = (("rollout", str(rid)), ("stage", str(stage["stage"])), ("state", state))
            assert got[("rollout_targets", key)] == n
    assert (
        got[("rollout_alerts_live", (("kind", "renewal.missing"), ("severity", "critical")))] == 1
    )
    assert got[("rollout_profile_holders", (("profile", profile.uuid),))] == 3
    left = got[
        ("rollout_profile_expiry_seconds", (("name", profile.name), ("profile", profile.uuid)))
    ]
    assert abs(left - dt.timedelta(days=10).total_seconds()) < 120
    assert got[("rollout_mdm_reports_total", (("status", "Idle"),))] == 4
    assert not any("00008020" in str(labels) for _, labels in got)  # no device in a label
    assert not any(name == "rollout_gate_verdict" for name, _ in got)  # a draft is not judged

    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        assert c.post(f"/api/v1/rollouts/{rid}/start", headers=auth).status_code == 200
        report = c.get(f"/api/v1/rollouts/{rid}", headers=auth).json()
        res = c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    got = samples(res.text)
    stage = report["stages"][report["rollout"]["current_stage"]]
    labels = (("rollout", str(rid)), ("stage", str(stage["stage"])))
    verdict = stage["gate"]["verdict"]
    assert got[("rollout_gate_verdict", (*labels, ("verdict", verdict)))] == 1
    assert got[("rollout_gate_success_rate", labels)] == stage["gate"]["success_rate"]
    assert got[("rollout_rollouts", (("state", "running"),))] == 1
