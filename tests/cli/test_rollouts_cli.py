"""``rollout rollouts`` through the real command line."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from rollout.sim.profiles import make_apple_like_chain, make_profile
from tests.cli.support import rollout

UUID = "0f0e0d0c-0b0a-4909-8807-060504030201"


def test_create_start_show_a_rollout_to_the_holders_of_a_profile(
    tmp_path: Path, ledger_url: str
) -> None:
    chain = make_apple_like_chain()
    renewal = tmp_path / "renewal.mobileprovision"
    renewal.write_bytes(make_profile(chain, name="Renewal"))
    root = tmp_path / "root.der"
    root.write_bytes(chain.root.cert_der())
    inv = tmp_path / "fleet.csv"
    inv.write_text(
        "udid,push_token,push_magic,profiles\n"
        f"00008020-000915083C80012E,{'ab' * 32},m1,{UUID}\n"
        f"00008020-000915083C80012F,{'cd' * 32},m2,{UUID}\n"
        "00008020-000915083C800130,,,\n"
    )
    run = lambda *a: rollout(*a, home=tmp_path, db_url=ledger_url)  # noqa: E731
    assert run("devices", "import", str(inv)).returncode == 0
    res = run("profiles", "add", str(renewal), "--trust-anchor", str(root))
    assert res.returncode == 0, res.stderr
    uuid = res.stdout.split()[1]

    res = run("rollouts", "create", "--profile", uuid, "--holders-of", UUID, "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert created["rollout"]["state"] == "draft"
    assert created["states"] == {"planned": 2}
    rid = str(created["rollout"]["id"])

    assert run("rollouts", "start", rid).returncode == 0
    again = run("rollouts", "start", rid)
    assert again.returncode == 1 and "not draft" in again.stderr
    shown = json.loads(run("rollouts", "show", rid, "--json").stdout)
    assert shown["rollout"]["state"] == "running"
    assert [r["id"] for r in json.loads(run("rollouts", "list", "--json").stdout)] == [int(rid)]

    res = run("rollouts", "create", "--profile", uuid, "--holders-of", UUID, "--all")
    assert res.returncode == 1 and "do not combine" in res.stderr
    assert run("rollouts", "show", "999").returncode == 1
    # the same profile to the same devices while the first rollout is live: refused
    res = run("rollouts", "create", "--profile", uuid, "--all")
    assert res.returncode == 1 and f"rollout {rid} already installs profile" in res.stderr
    assert run("rollouts", "pause", rid).returncode == 0
    assert "nothing to do" in run("rollouts", "pause", rid).stdout
    # watching a live rollout: live progress until it ends (aborted here, from elsewhere)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(ROLLOUT_HOME=str(tmp_path), ROLLOUT_DATABASE_URL=ledger_url, COLUMNS="160")
    watching = subprocess.Popen(
        [sys.executable, "-m", "rollout", "rollouts", "watch", rid, "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in watching.stdout], daemon=True)
    reader.start()
    first = lines.get(timeout=60)  # the watcher has read the paused rollout; it stays paused
    assert "paused" in first and "stage" in first, first
    assert watching.poll() is None
    assert run("rollouts", "abort", rid).returncode == 0
    assert watching.wait(timeout=30) == 0, watching.stderr.read() if watching.stderr else ""
    reader.join(timeout=10)
    out = first + "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert f"rollout {rid} aborted" in out
    res = run("rollouts", "watch", rid)  # an ended rollout: one table, at once
    assert res.returncode == 0 and res.stdout.count("cancelled 1") == 2
    shown = json.loads(run("rollouts", "show", rid, "--json").stdout)
    assert shown["rollout"]["state"] == "aborted" and shown["states"] == {"cancelled": 2}

    # the inventory file itself can name the devices (its header is not read as a UDID)
    res = run("rollouts", "plan", "--profile", uuid, "--devices", str(inv), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["excluded"] == {"never_pushable": 1}
    # nothing matching is explained
    res = run("rollouts", "create", "--profile", uuid, "--tag", "nowhere")
    assert res.returncode == 1
    assert "no device matches tags nowhere (3 device(s) in the registry)" in res.stderr


def test_a_staged_rollout_from_a_spec_file(tmp_path: Path, sqlite_url: str) -> None:
    from rollout.ledger import db

    db.upgrade(sqlite_url)
    chain = make_apple_like_chain()
    renewal = tmp_path / "renewal.mobileprovision"
    renewal.write_bytes(make_profile(chain, name="Renewal"))
    root = tmp_path / "root.der"
    root.write_bytes(chain.root.cert_der())
    inv = tmp_path / "fleet.csv"
    inv.write_text(
        "udid,push_token,push_magic,tags\n"
        + "".join(f"00008020-{i:016X},{i:064x},m{i},field\n" for i in range(40))
    )
    run = lambda *a: rollout(*a, home=tmp_path, db_url=sqlite_url)  # noqa: E731
    assert run("devices", "import", str(inv)).returncode == 0
    uuid = run("profiles", "add", str(renewal), "--trust-anchor", str(root)).stdout.split()[1]
    spec = tmp_path / "renewal.yaml"
    spec.write_text(
        f"profile: {uuid[:8]}\n"  # a unique start of the UUID is enough
        "targets: {tags: [field]}\n"
        "stages:\n"
        "  - 4\n"
        "  - {stage: 100%, gate: {max_failures: 2}}\n"
        "gate: {min_success_rate: 0.95, soak: 10m}\n"
        "window: Mon-Fri 09:00-17:00 Europe/Berlin\n"
        "command_ttl: 3d\n"
    )
    res = run("rollouts", "plan", "--spec", str(spec), "--json")
    assert res.returncode == 0, res.stderr
    planned = json.loads(res.stdout)
    assert [s["devices"] for s in planned["stages"]] == [4, 36]
    res = run(
        "rollouts", "create", "--spec", str(spec), "--name", "field renewal", "--start", "--json"
    )
    assert res.returncode == 0, res.stderr
    rid = str(json.loads(res.stdout)["rollout"]["id"])
    shown = json.loads(run("rollouts", "show", rid, "--json").stdout)
    assert shown["rollout"]["name"] == "field renewal"
    assert [(s["reach"], s["state"]) for s in shown["stages"]] == [
        ("4 devices", "running"),
        ("100%", "pending"),
    ]
    assert shown["stages"][0]["gate"]["verdict"] == "wait"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"profile: {uuid}\ntargets: {{all: true}}\nstages: [50%, 10%, 100%]\n")
    res = run("rollouts", "create", "--spec", str(bad))
    assert res.returncode == 1 and "further than the one before" in res.stderr
