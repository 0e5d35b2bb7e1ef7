"""Work that gives way: a long, unhurried job (the ledger prune) run in a thread of its own at
a lower CPU priority, so that on a host it shares with the web app the check-ins get the CPU
first. The thread's priority ends with the thread: the process (a Celery worker that pushes
next) keeps its own.

Linux only (where a thread's priority is its own); elsewhere the job runs as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: The nice value of the job's thread: below everything at the default 0, above idle.
NICE = 10


def run_niced(job: Callable[[], T], nice: int = NICE) -> T:
    """Run ``job`` in a thread at ``nice`` and give back what it returns (or raise what it
    raised). An interrupt of the caller (Ctrl-C) ends the process without waiting for it:
    the job must be one that resumes safely, as the prune does."""
    outcome: dict[str, object] = {}

    def body() -> None:
        if sys.platform == "linux":
            # on Linux a thread id names the thread alone; where it is not allowed, the job
            # runs at the priority it has
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        try:
            outcome["value"] = job()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=body, name="rollout-niced", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
