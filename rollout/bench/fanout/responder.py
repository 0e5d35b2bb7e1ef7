"""Devices that answer instantly: for each pushed token, ``Idle`` (which serves the queued
command and marks it delivered) and then ``Acknowledged`` for that command, in batches, through
the ledger's reconcile path (:func:`rollout.reconcile.process_reports`).

The real MDM endpoint costs about 1,200-1,800 requests/s per process here (two requests per
device), so it cannot keep up with a fan-out of tens of thousands of devices per second on two
cores; the bench reports ``ack_path: ledger``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.bench.fanout.endpoint import Feed, PushedLog
from rollout.bench.fanout.fleet import udid
from rollout.clock import SYSTEM_CLOCK
from rollout.enrollment import IdentityPolicy
from rollout.ledger import Ledger
from rollout.policy import EnginePolicy
from rollout.reconcile import Report, process_reports

RESPONDER_BATCH = 2000


@dataclass
class Responder:
    """Acknowledges every pushed token through the ledger, in batches, on a thread."""

    ledger: Ledger
    feed: Feed
    batch: int = RESPONDER_BATCH
    acknowledged: int = 0
    reports: int = 0
    error: BaseException | None = None
    on_ack: Callable[[int], None] | None = None
    _stop: Any = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Responder:
        """Answer on a thread of its own until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="bench-responder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (tokens not yet answered stay so)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        pending: list[str] = []
        policy = IdentityPolicy(required=False)
        try:
            while not self._stop.is_set():
                pending.extend(self.feed())
                if not pending:
                    time.sleep(0.02)
                    continue
                chunk, pending = pending[: self.batch], pending[self.batch :]
                self._answer(chunk, policy)
        except BaseException as exc:  # reported by the bench, not lost in a thread
            self.error = exc

    def _answer(self, tokens: list[str], policy: IdentityPolicy) -> None:
        keys = [udid(int(t, 16)) for t in tokens]
        engine_policy = EnginePolicy()
        with self.ledger.checkin() as store:
            served = process_reports(
                store,
                [Report(k, "Idle") for k in keys],
                identity=policy,
                policy=engine_policy,
                now=SYSTEM_CLOCK.now(),
            )
        acks = [
            Report(k, "Acknowledged", command_uuid=o.served.command_uuid)
            for k, o in zip(keys, served, strict=True)
            if o.served is not None
        ]
        if acks:
            with self.ledger.checkin() as store:
                process_reports(
                    store, acks, identity=policy, policy=engine_policy, now=SYSTEM_CLOCK.now()
                )
        self.reports += len(keys) + len(acks)
        self.acknowledged += len(acks)
        if self.on_ack is not None:
            self.on_ack(self.acknowledged)


def _responder_child(url: str, log_path: str, acked: Any, stop: Any, nice: int) -> None:
    os.nice(nice)
    ledger = Ledger.open(url)
    tail = PushedLog(Path(log_path))

    def publish(n: int) -> None:
        acked.value = n

    responder = Responder(ledger, tail.read, on_ack=publish, _stop=stop)
    try:
        responder._run()
    finally:
        tail.close()
        ledger.dispose()
    if responder.error is not None:
        raise responder.error


class ChildResponder:
    """The same responder in a child process at a lower CPU priority (``nice``).

    The devices' answers are the bench's surroundings, not the fan-out it measures: on two
    cores a responder at normal priority takes CPU from the workers while they push. Niced, it
    answers with the CPU the fan-out leaves, and catches up once the pushes are done.
    """

    def __init__(self, url: str, log_path: Path, nice: int) -> None:
        ctx = mp.get_context("spawn")
        self._acked = ctx.Value("q", 0, lock=False)
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_responder_child,
            args=(url, str(log_path), self._acked, self._stop, nice),
            name="bench-responder",
            daemon=True,
        )

    def start(self) -> ChildResponder:
        """Start the child process."""
        self._proc.start()
        return self

    @property
    def acknowledged(self) -> int:
        """Devices acknowledged so far."""
        return int(self._acked.value)

    @property
    def error(self) -> BaseException | None:
        """Why the child stopped before it was told to, if it did."""
        code = self._proc.exitcode
        if code is None:  # still running
            return None
        return RuntimeError(f"the responder process exited early with {code}")

    def stop(self) -> None:
        """Tell the child to stop; kill it when it does not within 30 s."""
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
