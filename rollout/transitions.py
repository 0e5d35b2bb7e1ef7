"""Which target state may follow which: the rules every ledger write obeys (no I/O)."""

from __future__ import annotations

from rollout.states import TargetState as T

#: For each state, the states a target may move to. A move not listed here is refused, which
#: is what makes duplicate, late and out-of-order results harmless.
ALLOWED: dict[T, frozenset[T]] = {
    T.PLANNED: frozenset({T.QUEUED, T.INELIGIBLE, T.CANCELLED, T.UNREACHABLE}),
    T.QUEUED: frozenset(
        {T.PUSHED, T.DELIVERED, T.ACKNOWLEDGED, T.FAILED, T.DEFERRED, T.UNREACHABLE}
        | {T.CANCELLED, T.PLANNED, T.TIMED_OUT}
    ),
    T.PUSHED: frozenset(
        {T.DELIVERED, T.ACKNOWLEDGED, T.FAILED, T.DEFERRED, T.UNREACHABLE, T.TIMED_OUT}
        | {T.CANCELLED, T.PLANNED}
    ),
    T.DELIVERED: frozenset(
        {T.ACKNOWLEDGED, T.FAILED, T.DEFERRED, T.TIMED_OUT, T.CANCELLED, T.PLANNED, T.PUSHED}
    ),
    T.DEFERRED: frozenset(
        {T.PUSHED, T.DELIVERED, T.ACKNOWLEDGED, T.FAILED, T.TIMED_OUT, T.UNREACHABLE}
        | {T.CANCELLED, T.PLANNED}
    ),
    # A late answer after a time-out still counts, once.
    T.TIMED_OUT: frozenset({T.ACKNOWLEDGED, T.FAILED, T.DELIVERED}),
    # A new TokenUpdate makes the device pushable again.
    T.UNREACHABLE: frozenset({T.PLANNED, T.CANCELLED, T.ACKNOWLEDGED, T.FAILED}),
    T.ACKNOWLEDGED: frozenset({T.VERIFIED}),
    T.VERIFIED: frozenset(),
    T.INELIGIBLE: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}

#: Targets still waiting for something to happen.
OPEN_STATES = frozenset({T.PLANNED, T.QUEUED, T.PUSHED, T.DELIVERED, T.DEFERRED})


def may_move(current: str, new: str) -> bool:
    """Whether a target in ``current`` may move to ``new`` (same state: a no-op, refused)."""
    return T(new) in ALLOWED[T(current)]
