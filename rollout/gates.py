"""Judging a stage's gate from its kept counters (no I/O, no scan of targets).

A verdict is ``wait`` (not enough is known yet), ``pass`` or ``fail``, with the figures it was
judged on and one line that says why, so an operator reading a halted rollout sees the gate
and its numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rollout.spec import Gate
from rollout.states import TargetState as T

SUCCEEDED = frozenset({T.ACKNOWLEDGED.value, T.VERIFIED.value})
FINAL = SUCCEEDED | {T.FAILED.value, T.TIMED_OUT.value, T.UNREACHABLE.value, T.CANCELLED.value}


@dataclass(frozen=True)
class Verdict:
    """A gate's verdict on a stage at one moment."""

    kind: Literal["wait", "pass", "fail"]
    why: str
    figures: dict[str, float | int]


def figures(counts: Mapping[str, int]) -> dict[str, float | int]:
    """A stage's figures from its counters: eligible targets, final ones, successes, failures,
    the share that is final, and the success rate (None until something succeeded or failed)."""
    eligible = sum(n for state, n in counts.items() if state != T.INELIGIBLE)
    final = sum(n for state, n in counts.items() if state in FINAL)
    succeeded = sum(counts.get(s, 0) for s in SUCCEEDED)
    failed = counts.get(T.FAILED.value, 0)
    judged = succeeded + failed
    return {
        "eligible": eligible,
        "final": final,
        "succeeded": succeeded,
        "failed": failed,
        "final_share": round(final / eligible, 4) if eligible else 1.0,
        "success_rate": round(succeeded / judged, 4) if judged else 1.0,
    }


def judge(
    gate: Gate,
    counts: Mapping[str, int],
    started_at: dt.datetime | None,
    now: dt.datetime,
) -> Verdict:
    """The gate's verdict on a stage whose targets are counted in ``counts``.

    Too many failures fail the stage at once; the success rate is judged only once enough of
    the stage is final and the soak time has passed since the stage started.
    """
    f = figures(counts)
    if gate.max_failures is not None and f["failed"] > gate.max_failures:
        return Verdict("fail", f"{f['failed']} failures > {gate.max_failures} allowed", f)
    if gate.min_success_rate is not None and f["failed"] and f["final"] < f["eligible"]:
        # Fail early when even every answer still to come succeeding could not lift the
        # success rate to the minimum.
        open_ = int(f["eligible"]) - int(f["final"])
        best = (int(f["succeeded"]) + open_) / (int(f["succeeded"]) + int(f["failed"]) + open_)
        if best < gate.min_success_rate:
            why = (
                f"success rate at most {best:.0%} < {gate.min_success_rate:.0%} "
                f"({f['succeeded']} succeeded, {f['failed']} failed, {open_} open)"
            )
            return Verdict("fail", why, f)
    if f["final_share"] < gate.min_final_share:
        return Verdict(
            "wait",
            f"{f['final_share']:.0%} of {f['eligible']} final, {gate.min_final_share:.0%} needed",
            f,
        )
    if gate.min_success_rate is not None and f["success_rate"] < gate.min_success_rate:
        why = (
            f"success rate {f['success_rate']:.0%} < {gate.min_success_rate:.0%} "
            f"({f['succeeded']} succeeded, {f['failed']} failed)"
        )
        return Verdict("fail", why, f)
    if started_at is not None and now < started_at + gate.soak:
        return Verdict("wait", f"soaking until {started_at + gate.soak:%Y-%m-%d %H:%M} UTC", f)
    return Verdict(
        "pass", f"{f['success_rate']:.0%} of {f['succeeded'] + f['failed']} succeeded", f
    )
