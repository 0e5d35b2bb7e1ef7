"""The ledger bench and the check-in bench during a prune, at a small size."""

from __future__ import annotations

import pytest

from rollout.bench.checkin import run_checkin_bench
from rollout.bench.ledger import run_ledger_bench


@pytest.mark.parametrize("by", ["rows", "partition"])
def test_ledger_bench_measures_bytes_per_target_before_and_after_a_prune(
    postgres_admin: str, by: str
) -> None:
    result = run_ledger_bench(400, prune_by=by)
    m = result["metrics"]
    assert result["bench"] == "ledger" and result["size"] == 400
    assert (
        m["archived_rows"]
        == m["deleted_rows"]
        == {t: 400 for t in ("targets", "commands", "events")}
    )
    assert m["tables_before"]["targets"]["rows"] == 400
    assert m["tables_after_prune"]["targets"]["rows"] == 0
    assert m["tables_after_prune"]["devices"]["rows"] == 400  # devices are not pruned
    assert m["after_prune"]["per_target_bytes"] < m["before"]["per_target_bytes"]
    assert m["archive_files"] == 1 and m["archive_bytes_per_target"] > 0
    assert m["dropped_partitions"] == (3 if by == "partition" else 0)


def test_checkin_bench_compares_on_the_same_ledger_without_a_prune(postgres_admin: str) -> None:
    result = run_checkin_bench(40, concurrency=8, during_prune=3000, prune_by="none")
    m = result["metrics"]
    assert m["failures"] == 0 and m["all_acknowledged"] and m["counters_exact"]
    assert m["prune_by"] == "none" and "prune_s" not in m and "note" not in m


@pytest.mark.parametrize("by", ["rows", "partition"])
def test_checkin_bench_runs_while_a_prune_removes_an_old_rollout(
    postgres_admin: str, by: str
) -> None:
    result = run_checkin_bench(40, concurrency=8, during_prune=3000, prune_by=by)
    m = result["metrics"]
    assert m["failures"] == 0 and m["all_acknowledged"] and m["counters_exact"]
    assert m["during_prune"] == 3000 and m["prune_deleted_rows"] == 3 * 3000
    assert m["prune_s"] > 0 and m["prune_by"] == by
    # by partition the old rollout's block goes whole; by rows, batch by batch
    assert m["prune_dropped_partitions"] == (3 if by == "partition" else 0)
