"""A rollout's devices, a page at a time: every target exactly once, in target order, whatever
the filters; and the reason counters agree with the targets."""

from __future__ import annotations

from collections.abc import Collection

from rollout.bench.status import seed_status_rollout
from rollout.ledger import Ledger, TargetInfo


def _walk(
    ledger: Ledger,
    rollout_id: int,
    limit: int,
    states: Collection[str] | None,
    reason: str | None,
) -> list[int]:
    seen: list[int] = []
    after = 0
    while True:
        with ledger.rollouts() as store:
            page = store.target_page(
                rollout_id, after_id=after, limit=limit, states=states, reason_prefix=reason
            )
        assert len(page) <= limit
        seen.extend(t.id for t, _ in page)
        if len(page) < limit:
            return seen
        after = page[-1][0].id


def _expected(
    targets: Collection[TargetInfo], states: Collection[str] | None, reason: str | None
) -> list[int]:
    return sorted(
        t.id
        for t in targets
        if (states is None or t.state in states)
        and (reason is None or (t.reason or "").startswith(reason))
    )


FILTERS: tuple[tuple[tuple[str, ...] | None, str | None], ...] = (
    (None, None),
    (("failed", "timed_out", "acknowledged"), None),
    (("unreachable", "timed_out"), "no_"),
    (None, "apns:"),
    (("verified", "no_such_state"), None),
)


def test_pages_walk_every_matching_target_once_in_order(ledger: Ledger) -> None:
    rollout_id = seed_status_rollout(ledger, 600)
    with ledger.rollouts() as store:
        targets = store.targets(rollout_id).values()
        page = store.target_page(rollout_id, limit=5)
        assert [t for t, _ in page] == sorted(targets, key=lambda t: t.id)[:5]
        assert all(key.startswith("00008101-") for _, key in page)
    for states, reason in FILTERS:
        expected = _expected(targets, states, reason)
        assert expected, ("the seeded mix has targets for every filter here", states, reason)
        for limit in (1, 7, 1000):
            assert _walk(ledger, rollout_id, limit, states, reason) == expected, (states, limit)
    assert _walk(ledger, rollout_id, 50, None, "%") == []  # a prefix is literal text
    assert _walk(ledger, rollout_id, 50, None, "no%answer") == []
