"""``rollout ledger``: stats, a dry run, pin, prune, restore, and bad input as one line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from rollout import archive
from rollout.clock import SYSTEM_CLOCK, ManualClock
from rollout.ledger import Ledger
from tests.cli.support import rollout
from tests.test_retention import finished_rollout, rows_of, world


def test_stats_dry_run_pin_prune_and_restore(tmp_path: Path, ledger_url: str) -> None:
    home = tmp_path / "home"

    def run(*args: str) -> tuple[int, str, str]:
        res = rollout("ledger", *args, home=home, db_url=ledger_url)
        return res.returncode, res.stdout, res.stderr

    # two rollouts that finished 400 days ago (the default keeps rows 365 days)
    clock = ManualClock(SYSTEM_CLOCK.now() - dt.timedelta(days=400))
    ledger = Ledger.open(ledger_url)
    try:
        w = world(ledger, clock)
        pinned = finished_rollout(ledger, clock, w, [0, 1, 2])
        gone = finished_rollout(ledger, clock, w, [3, 4, 5, 6])

        code, out, _ = run("stats", "--json")
        stats = json.loads(out)
        assert code == 0 and stats["would_remove"]["rollouts"] == [pinned, gone]
        assert {t["table"]: t["rows"] for t in stats["tables"]}["targets"] == 7

        assert run("pin", str(pinned))[0] == 0
        code, out, _ = run("prune", "--dry-run", "--json")
        dry = json.loads(out)
        assert code == 0 and dry["dry_run"] and dry["rollouts"] == [gone]
        assert dry["pinned"] == [pinned] and dry["rows"]["targets"] == 4
        assert rows_of(ledger, gone)["targets"] == 4

        code, out, _ = run("prune", "--json")
        done = json.loads(out)
        assert code == 0 and done["deleted"]["targets"] == 4
        assert rows_of(ledger, gone)["targets"] == 0 and rows_of(ledger, pinned)["targets"] == 3
        files = sorted((home / "archive").glob(f"rollout-*{archive.SUFFIX}"))
        assert [f.name for f in files] == [f"rollout-{gone:08d}-part001{archive.SUFFIX}"]

        code, out, _ = run("restore", str(files[0]))
        assert code == 0 and "4 targets" in out and "matches the archived summary" in out
        assert rows_of(ledger, gone)["targets"] == 4
    finally:
        ledger.dispose()


def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, ledger_url: str) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        res = rollout("ledger", *args, home=tmp_path, db_url=ledger_url)
        return res.returncode, res.stdout, res.stderr

    code, _, err = run("prune", "--before", "last tuesday")
    assert code == 2 and err.strip().startswith("error: --before: 'last tuesday' is not a date")
    code, _, err = run("prune", "--before", "2999-01-01")
    assert code == 1 and "in the future" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("pin", "42")
    assert code == 1 and err.strip() == "error: no rollout 42"
    junk = tmp_path / f"junk{archive.SUFFIX}"
    junk.write_bytes(b"not gzip")
    code, _, err = run("restore", str(junk))
    assert code == 1 and "manifest" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("restore", str(tmp_path / "missing.jsonl.gz"))
    assert code == 1 and "no such archive file" in err
    assert not (tmp_path / "archive").exists()
