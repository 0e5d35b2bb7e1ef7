"""The fan-out bench's APNs endpoint and the feed of pushed tokens its responder answers.

nginx when it is installed (it writes each pushed URI to a log the responder tails); otherwise
the Python stand-in in this process, whose ``on_push`` hook feeds the responder.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.bench.apns_servers import NGINX, TOPIC, make_pki, nginx, standin_note

_PUSH_LOG = (
    "log_format pushed '$uri';\n    access_log {dir}/pushed.log pushed buffer=256k flush=50ms;"
)

Feed = Callable[[], list[str]]
"""Tokens pushed since the last call."""


@dataclass
class Endpoint:
    """Where the workers push, and with which certificate."""

    base_url: str
    ca_file: str
    cert_file: str
    kind: str  # "nginx" or "stand-in"
    pushed_log: Path | None = None  # nginx: the log of pushed URIs a responder may tail


class PushedLog:
    """Tokens nginx logged (one ``/3/device/<token>`` line per accepted push)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._rest = b""

    def read(self) -> list[str]:
        """The tokens logged since the last read (a line still being written waits)."""
        if self._fh is None:
            if not self.path.exists():
                return []
            self._fh = self.path.open("rb")
        data = self._rest + self._fh.read()
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return [ln.rsplit(b"/", 1)[-1].decode() for ln in lines if ln]

    def close(self) -> None:
        """Close the log file."""
        if self._fh is not None:
            self._fh.close()


@contextlib.contextmanager
def _nginx_endpoint(workdir: Path) -> Iterator[tuple[Endpoint, Feed]]:
    pki = make_pki(workdir)
    tail = PushedLog(pki.dir / "pushed.log")
    try:
        with nginx(pki, access_log=_PUSH_LOG.format(dir=pki.dir)) as port:
            url = f"https://127.0.0.1:{port}"
            yield Endpoint(url, pki.ca_file, pki.client_pem, "nginx", tail.path), tail.read
    finally:
        tail.close()


@contextlib.contextmanager
def _standin_endpoint(workdir: Path) -> Iterator[tuple[Endpoint, Feed]]:
    from rollout.sim.apns_server import ApnsStandIn

    pushed: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_push(token_hex: str, _payload: Any) -> None:
        pushed.put(token_hex)

    def drain() -> list[str]:
        out: list[str] = []
        with contextlib.suppress(queue.Empty):
            while len(out) < 100_000:
                out.append(pushed.get_nowait())
        return out

    with ApnsStandIn(topic=TOPIC, on_push=on_push) as server:
        issued = server.issue_push_certificate(TOPIC)
        cert = workdir / "push.pem"
        cert.write_bytes(issued.cert_pem() + issued.key_pem())
        yield Endpoint(server.base_url, server.ca_file, str(cert), "stand-in"), drain


def apns_endpoint(
    workdir: Path, note: Callable[[str], None] | None = None
) -> contextlib.AbstractContextManager[tuple[Endpoint, Feed]]:
    """nginx when it is installed, else the stand-in (and ``note`` is told so)."""
    if Path(NGINX).exists():
        return _nginx_endpoint(workdir)
    if note is not None:
        note(standin_note("fanout", NGINX))
    return _standin_endpoint(workdir)
