"""deploy/prometheus and deploy/grafana: promtool accepts the rules (and their unit tests pass),
the scrape configuration and every dashboard query; and every metric they name is one the
product exports, as read from a real scrape of the web app and the workers' registry."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger
from rollout.ledger.db import upgrade
from rollout.sim.identity import make_device_ca
from tests.web.support import serve
from workers import metrics as worker_metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "rollout.json"
NAME = re.compile(r"\brollout_[a-z0-9_]*[a-z0-9]")
# what a family of each type exports as sample names
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def run(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def test_the_alert_rules_are_valid_and_fire_as_their_unit_tests_say(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", "rules.yml")
    assert "SUCCESS" in run(promtool, "test", "rules", "rules_test.yml")


def test_the_scrape_configuration_is_valid(promtool: str, tmp_path: Path) -> None:
    run(promtool, "check", "config", "--syntax-only", "prometheus.yml")
    # the full check also reads the token file and the rules: give it a token where it looks
    token = tmp_path / "viewer.token"
    token.write_text("rollout_viewer_token\n")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    web = next(job for job in config["scrape_configs"] if job["job_name"] == "rollout-web")
    web["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules.yml").write_bytes((PROMETHEUS / "rules.yml").read_bytes())
    out = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out and "rules found" in out, out


def dashboard_queries() -> list[str]:
    """Every PromQL query of the Grafana dashboard (panels and template variables)."""
    board = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, object]]) -> Iterator[dict[str, object]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))  # type: ignore[arg-type]

    queries = [
        str(t["expr"])
        for p in panels(board["panels"])
        for t in p.get("targets", [])  # type: ignore[attr-defined]
    ]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            queries.append(str(var["definition"]))
    return queries


def test_the_dashboard_is_grafana_json_over_real_promql(promtool: str, tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [q for q in dashboard_queries() if not q.startswith("label_values(")]
    assert len(exprs) >= 15
    # Grafana's variables become what they stand for; promtool then parses each query
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$rollout", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in run(promtool, "check", "rules", str(path))


def exported_names(exposition: str) -> set[str]:
    """Every sample name an exposition's families export (empty families too)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    tmp_path: Path, push_cert_file: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    upgrade(url)
    ledger = Ledger.open(url)
    server = serve(
        ledger,
        tmp_path,
        make_device_ca(),
        broker_url="redis://127.0.0.1:1/0",  # a Redis broker (nothing there: no samples)
        apns_cert=str(push_cert_file),
    )
    try:
        viewer, _ = access.issue(
            ledger, "prometheus", Role.VIEWER, actor="t", now=SYSTEM_CLOCK.now()
        )
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            refused = c.put("/mdm/checkin", content=b"not a plist")
            assert refused.status_code == 400
            res = c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    finally:
        server.stop()
        ledger.dispose()
    assert res.status_code == 200
    web = exported_names(res.text)
    workers = exported_names(generate_latest(worker_metrics.REGISTRY).decode())
    exported = web | workers

    used: dict[str, set[str]] = {}
    for path in (PROMETHEUS / "rules.yml", PROMETHEUS / "rules_test.yml"):
        used[path.name] = set(NAME.findall(path.read_text()))
    used[DASHBOARD.name] = {n for q in dashboard_queries() for n in NAME.findall(q)}
    for where, names in used.items():
        assert names, where
        assert names <= exported, f"{where} names metrics nobody exports: {names - exported}"

    # what this change added is there, from where it belongs
    assert {"rollout_queue_depth", "rollout_checkin_seconds_bucket"} <= web
    assert {
        "rollout_push_certificate_expiry_timestamp_seconds",
        "rollout_pushes_total",
        "rollout_push_seconds_bucket",
        "rollout_push_batches_total",
        "rollout_tick_last_success_timestamp_seconds",
    } <= exported
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(res.text)
        for s in f.samples
    }
    assert values[("rollout_checkin_seconds_count", (("endpoint", "checkin"),))] == 1
    cert = x509.load_pem_x509_certificate(push_cert_file.read_bytes())
    expiry = values[("rollout_push_certificate_expiry_timestamp_seconds", ())]
    assert expiry == cert.not_valid_after_utc.timestamp()
    assert expiry > (SYSTEM_CLOCK.now() + dt.timedelta(days=1)).timestamp()
