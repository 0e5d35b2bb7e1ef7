"""``rollout keys`` and the ``ledger keys`` check: a ledger turned to sealing, rotated to a new
key, and a missing key named, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.deploy_check import check_ledger_keys
from rollout.ledger import Ledger
from rollout.ledger.sealing import PLAIN, Sealer, key_id, parse_keys
from tests.cli.support import rollout
from tests.support import enroll


def test_turn_sealing_on_rotate_then_drop_the_old_key(tmp_path: Path, ledger_url: str) -> None:
    def run(*args: str, keys: str = "") -> tuple[int, str, str]:
        env = {"ROLLOUT_LEDGER_KEYS": keys} if keys else {}
        res = rollout("keys", *args, home=tmp_path, db_url=ledger_url, env=env)
        return res.returncode, res.stdout, res.stderr

    def check(keys: str) -> tuple[str, str]:
        got = check_ledger_keys(
            Settings(home=tmp_path, database_url=ledger_url, ledger_keys=keys), ManualClock()
        )
        return got.status, got.detail

    code, old, _ = run("new")
    code2, new, _ = run("new")
    old, new = old.strip(), new.strip()
    assert code == code2 == 0 and old != new and len(parse_keys(f"{old},{new}")) == 2
    old_id, new_id = (key_id(parse_keys(k)[0]) for k in (old, new))

    ledger = Ledger.open(ledger_url, PLAIN)  # devices enrolled before any key was set
    try:
        for n in range(3):
            enroll(ledger, n, ManualClock().now())
    finally:
        ledger.dispose()
    status, detail = check("")
    assert status == "warn" and "6 push secret(s) stored in plain text" in detail

    # sealing turned on: the plain values are sealed by a rotation
    assert check(old) == (
        "warn",
        f"6 push secret(s) not sealed with key {old_id}: run `rollout keys rotate`",
    )
    code, out, _ = run("rotate", "--json", keys=old)
    assert code == 0 and json.loads(out)["resealed"] == 3
    code, out, _ = run("status", "--json", keys=old)
    found = json.loads(out)
    assert code == 0 and found["columns"] == {
        "push_token": {old_id: 3},
        "push_magic": {old_id: 3},
    }
    assert check(old) == ("ok", f"6 push secret(s) sealed with key {old_id}")

    # a new key first, the old one kept to open: rotate, and the old one is no longer needed
    both = f"{new},{old}"
    code, out, _ = run("status", keys=both)
    assert code == 0 and "6 value(s) not sealed with the current key" in out
    code, out, _ = run("rotate", keys=both)
    assert code == 0 and f"re-sealed 3 device(s) with key {new_id}" in out
    code, out, _ = run("status", "--json", keys=both)
    assert json.loads(out)["retired"] == [old_id] and json.loads(out)["stale"] == 0
    status, detail = check(both)
    assert status == "ok" and f"key(s) {old_id} no longer needed" in detail
    assert check(new)[0] == "ok"

    # with only the old key, the values are unreadable: status and check name the key
    code, out, err = run("status", keys=old)
    assert code == 1 and f"sealed with key(s) {new_id}, which are not configured" in err
    status, detail = check(old)
    assert status == "fail" and new_id in detail
    code, _, err = run("rotate", keys=old)
    assert code == 1 and f"sealed with key {new_id}, which is not configured" in err

    ledger = Ledger.open(ledger_url, Sealer(parse_keys(new)))
    try:
        with ledger.registry() as reg:
            data = reg.push_data("00008020-0000000000000001")
    finally:
        ledger.dispose()
    assert data is not None and data.push_magic == "magic-1"


def test_rotate_without_a_key_and_a_bad_key_are_one_line(tmp_path: Path, ledger_url: str) -> None:
    res = rollout("keys", "rotate", home=tmp_path, db_url=ledger_url)
    assert res.returncode == 1 and "no ledger key is configured" in res.stderr
    res = rollout(
        "keys",
        "status",
        home=tmp_path,
        db_url=ledger_url,
        env={"ROLLOUT_LEDGER_KEYS": "c2hvcnQtYnV0LWxvbmdlcg=="},
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "ROLLOUT_LEDGER_KEYS: key 1 is 16 bytes" in res.stderr and "c2hvcnQt" not in res.stderr
