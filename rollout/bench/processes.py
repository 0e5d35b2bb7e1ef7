"""The local processes the benches start (servers, workers): a free port for one, waiting until
it listens, stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    name: str = "bench server",
    timeout: float = 20.0,
    log: Path | None = None,
) -> None:
    """Return once 127.0.0.1:``port`` accepts connections.

    RuntimeError when ``proc`` exits first (with the end of ``log``, or of its piped stderr, so
    the reason is in the message) or when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            if log is not None:
                said = log.read_text(errors="replace")[-2000:]
            else:
                said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{name} exited: {said.strip()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port}")


def stop_processes(
    procs: Sequence[subprocess.Popen[bytes]],
    sig: int = signal.SIGTERM,
    *,
    grace: float = 10.0,
    group: bool = False,
) -> None:
    """Send ``sig`` to each of ``procs`` (to its whole process group with ``group``, so a
    Celery worker's pool children go too) and wait for them; kill what still runs after
    ``grace`` seconds."""

    def send(proc: subprocess.Popen[bytes], how: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, how)
            else:
                proc.send_signal(how)

    for proc in procs:
        if proc.poll() is None:
            send(proc, sig)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            send(proc, signal.SIGKILL)
            proc.wait()
