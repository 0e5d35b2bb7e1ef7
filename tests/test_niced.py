"""A job run niced: in its own thread at a lower priority, the caller's own unchanged."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from rollout.niced import run_niced


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
def test_the_job_runs_at_a_lower_priority_and_the_caller_keeps_its_own() -> None:
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def job() -> tuple[int, int]:
        return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)

    tid, seen = run_niced(job, nice=caller + 5)
    assert tid != threading.get_native_id()  # a thread of its own
    assert seen == min(caller + 5, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == caller


def test_what_the_job_raises_reaches_the_caller() -> None:
    def job() -> None:
        raise ValueError("no archive folder")

    with pytest.raises(ValueError, match="no archive folder"):
        run_niced(job)
