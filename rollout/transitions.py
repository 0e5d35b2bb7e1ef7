"""Which target state may follow which: the rules every target move obeys (no I/O).

The engine builds its moves with :func:`move`, which carries the states the move is allowed
from; the ledger applies a move only when the target is in one of them (under a row lock).
"""

from __future__ import annotations

from typing import Any

from rollout.ledger import Move
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
    # A late answer after a time-out still counts, once; an operator's retry plans it again.
    T.TIMED_OUT: frozenset({T.ACKNOWLEDGED, T.FAILED, T.DELIVERED, T.PLANNED}),
    # A new TokenUpdate makes the device pushable again.
    T.UNREACHABLE: frozenset({T.PLANNED, T.CANCELLED, T.ACKNOWLEDGED, T.FAILED}),
    # Verification: the device lists the profile (verified), or it does not (installed again,
    # then failed once the attempts are spent).
    T.ACKNOWLEDGED: frozenset({T.VERIFIED, T.PLANNED, T.FAILED, T.TIMED_OUT}),
    T.VERIFIED: frozenset(),
    T.INELIGIBLE: frozenset(),
    T.FAILED: frozenset({T.PLANNED}),  # an operator's retry
    T.CANCELLED: frozenset(),
}

#: Targets still waiting for something to happen.
OPEN_STATES = frozenset({T.PLANNED, T.QUEUED, T.PUSHED, T.DELIVERED, T.DEFERRED})


#: For each state, the states a target may come from.
SOURCES: dict[T, frozenset[str]] = {
    to: frozenset(src.value for src, nexts in ALLOWED.items() if to in nexts) for to in T
}


def touch(target_id: int, state: T, **fields: Any) -> Move:
    """Set ``fields`` on a target that is (still) in ``state``, leaving its state as it is."""
    return Move(target_id, state.value, frozenset({state.value}), fields)


def move(target_id: int, to: T, **fields: Any) -> Move:
    """Move ``target_id`` to ``to`` (setting ``fields``), if the state machine allows it from
    the state the target is in when the ledger applies it."""
    return Move(target_id, to.value, SOURCES[to], fields)
