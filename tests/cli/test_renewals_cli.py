"""``rollout renewals scan`` and ``rollout alerts`` through the real command line: a renewed
profile dropped in the watched folder becomes a renewal rollout; without one, an alert that an
operator acknowledges and resolves."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile
from tests.cli.support import rollout, rollout_process

NOW = dt.datetime.now(dt.UTC)


Run = Callable[..., subprocess.CompletedProcess[str]]


def setup(tmp_path: Path, ledger_url: str, chain: AppleLikeChain) -> tuple[Run, str]:
    """A library holding a profile that expires in 20 days, and three devices holding it."""
    root = tmp_path / "root.der"
    root.write_bytes(chain.root.cert_der())
    old = tmp_path / "old.mobileprovision"
    old.write_bytes(
        make_profile(
            chain,
            name="Field App",
            created_at=NOW - dt.timedelta(days=345),
            expires_at=NOW + dt.timedelta(days=20),
        )
    )
    env = {"ROLLOUT_TRUST_ANCHORS": str(root)}

    def run(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return rollout(*args, home=tmp_path, db_url=ledger_url, env={**env, **more})

    # once as the installed command runs, in a process of its own
    res = rollout_process("profiles", "add", str(old), home=tmp_path, db_url=ledger_url, env=env)
    assert res.returncode == 0, res.stderr
    old_uuid = res.stdout.split()[1]
    inv = tmp_path / "fleet.csv"
    inv.write_text(
        "udid,push_token,push_magic,profiles\n"
        + "".join(f"00008020-00091508{i:08X},{'ab' * 32},m{i},{old_uuid}\n" for i in range(3))
    )
    assert run("devices", "import", str(inv)).returncode == 0
    return run, old_uuid


def test_a_renewed_profile_in_the_watched_folder_becomes_a_renewal_rollout(
    tmp_path: Path, ledger_url: str
) -> None:
    chain = make_apple_like_chain(not_before=NOW - dt.timedelta(days=400))
    run, old_uuid = setup(tmp_path, ledger_url, chain)
    folder = tmp_path / "renewed"
    folder.mkdir()
    (folder / "junk.mobileprovision").write_bytes(b"not a profile")
    (folder / "other-team.mobileprovision").write_bytes(
        make_profile(chain, name="Other", team_id="ZZZZZ99999")
    )
    (folder / "field-2027.mobileprovision").write_bytes(make_profile(chain, name="Field App"))
    watch = {"ROLLOUT_PROFILE_FOLDER": str(folder)}

    res = run("renewals", "scan", "--dry-run", "--json", **watch)
    assert res.returncode == 0, res.stderr
    [item] = json.loads(res.stdout)["profiles"]
    assert item["profile"] == old_uuid and item["devices"] == 3 and item["replacement"] is None
    assert item["sources"] == {"folder": "would be asked"}
    listed = run("profiles", "list", "--json")
    assert len(json.loads(listed.stdout)) == 1  # the dry run added nothing

    res = run("renewals", "scan", "--json", **watch)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    [item] = report["profiles"]
    assert item["sources"]["folder"] == "3 file(s), 2 new, 1 refused"
    assert item["replacement"] and item["rollout"]["state"] == "running"
    [rid] = report["opened"]
    shown = json.loads(run("rollouts", "show", str(rid), "--json").stdout)
    assert shown["rollout"]["profile"] == item["replacement"]
    assert sum(shown["states"].values()) == 3

    again = json.loads(run("renewals", "scan", "--json", **watch).stdout)
    assert again["opened"] == [] and again["profiles"][0]["rollout"]["id"] == rid
    res = run("renewals", "scan", **watch)
    assert f"renewal rollout {rid} is running" in res.stdout


def test_without_a_renewal_an_alert_is_listed_acknowledged_and_resolved(
    tmp_path: Path, ledger_url: str
) -> None:
    chain = make_apple_like_chain(not_before=NOW - dt.timedelta(days=400))
    run, old_uuid = setup(tmp_path, ledger_url, chain)
    res = run("renewals", "scan")
    assert res.returncode == 0, res.stderr
    assert f"alert opened: renewal.missing:{old_uuid}" in res.stdout
    [alert] = json.loads(run("alerts", "list", "--json").stdout)
    assert alert["kind"] == "renewal.missing" and alert["severity"] == "warning"
    assert alert["data"]["devices"] == 3 and alert["state"] == "open"
    aid = str(alert["id"])
    res = run("alerts", "ack", aid)
    assert res.returncode == 0 and "acknowledged" in res.stdout
    res = run("alerts", "resolve", aid)
    assert res.returncode == 0 and "resolved" in res.stdout
    res = run("alerts", "resolve", aid)
    assert res.returncode == 1 and res.stderr.strip() == f"error: alert {aid} is already resolved"
    assert run("alerts", "list").stdout.strip() == "no live alerts"
    res = run("alerts", "ack", "99999999999999999999")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    # still true: the next scan raises it again, as a new alert
    run("renewals", "scan")
    ids = [a["id"] for a in json.loads(run("alerts", "list", "--json").stdout)]
    assert len(ids) == 1 and str(ids[0]) != aid
