"""Refusals under a flood: short excerpts, one event and a count per source and window, a bounded
journal, and counts that add up (in the journal and in ``/healthz``).

The app runs on a :class:`ManualClock`: a refusal window ends when the test moves the clock.
Peers are told apart by ``X-Forwarded-For``, which uvicorn trusts from 127.0.0.1 as it would
from the TLS proxy in front.
"""

from __future__ import annotations

import asyncio
import base64
import json
import plistlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from rollout.clock import ManualClock
from rollout.ledger import EventEntry, Ledger
from rollout.sim.http11 import Http11Client
from rollout.sim.identity import issue_device_identity, sign_body
from rollout.sim.pki import Issued
from rollout.web.refusals import EXCERPT_BYTES
from rollout.web.server import BackgroundServer
from tests.web.support import CHECKIN, CONNECT

WINDOW_S = 60.0


def journal(ledger: Ledger) -> list[EventEntry]:
    with ledger.checkin() as store:
        return store.events(limit=1_000_000)


def journal_bytes(entries: list[EventEntry]) -> int:
    """What the entries hold: their JSON, ids and kind, and the fixed-width columns."""
    return sum(
        len(json.dumps(e.data)) + len(e.kind) + len(e.enrollment_id or "")
        + len(e.command_uuid or "") + 40
        for e in entries
    )  # fmt: skip


def refused(ledger: Ledger) -> list[EventEntry]:
    return [e for e in journal(ledger) if e.kind == "mdm.refused"]


def junk(n: int) -> tuple[str, bytes, dict[str, str]]:
    """The ``n``-th junk request: path, body and headers (three kinds, rotating)."""
    kind = n % 3
    if kind == 0:  # not a plist at all
        return "/mdm/connect", bytes(range(256)) * 8, {"Content-Type": CONNECT}
    if kind == 1:  # a plist that is no report
        return "/mdm/connect", plistlib.dumps({"Hello": "x" * 2000}), {"Content-Type": CONNECT}
    # a well-formed check-in with no identity
    body = plistlib.dumps({"MessageType": "Authenticate", "UDID": f"JUNK-{n}", "Topic": "t"})
    return "/mdm/checkin", body, {"Content-Type": CHECKIN}


def flood(server: BackgroundServer, count: int, peers: int) -> Counter[int]:
    """Send ``count`` junk requests from ``peers`` forwarded addresses; the statuses."""

    async def run() -> Counter[int]:
        statuses: Counter[int] = Counter()
        async with Http11Client(server.base_url, connections=16) as client:
            for start in range(0, count, 64):
                requests = []
                for n in range(start, min(start + 64, count)):
                    path, body, headers = junk(n)
                    headers["X-Forwarded-For"] = f"198.51.{n % peers // 250}.{n % peers % 250}"
                    requests.append(client.put(path, body, headers))
                for status, _ in await asyncio.gather(*requests):
                    statuses[status] += 1
        return statuses

    return asyncio.run(run())


def healthz(server: BackgroundServer) -> dict[str, Any]:
    refusals: dict[str, Any] = httpx.get(f"{server.base_url}/healthz").json()["refusals"]
    return refusals


def test_a_junk_flood_grows_the_journal_by_a_bounded_amount_and_counts_add_up(
    started: Callable[..., BackgroundServer], ledger: Ledger, clock: ManualClock
) -> None:
    server = started(clock=clock, refusal_window_s=WINDOW_S)
    before = journal_bytes(journal(ledger))
    statuses = flood(server, 4000, peers=400)
    assert statuses == Counter({400: 2667, 403: 1333})
    counts = healthz(server)
    assert counts["total"] == 4000

    grown = journal_bytes(journal(ledger)) - before
    # 400 peers x 3 reasons: 200 sources (the default) in detail, the rest counted per reason.
    # Before sampling, the same flood added about 4,000 events of up to 4 KiB of body (~20 MB).
    assert grown < 200 * 1024, grown
    assert len(refused(ledger)) <= 200 + 3

    server.stop()  # every open window closes: its count reaches the journal
    events = refused(ledger)
    assert sum(e.data["count"] for e in events) == 4000
    by_reason: Counter[str] = Counter()
    for e in events:
        by_reason[e.data["reason"]] += e.data["count"]
    assert dict(by_reason) == counts["by_reason"]
    assert journal_bytes(journal(ledger)) - before < 400 * 1024


def test_repeats_from_one_source_are_one_event_then_one_count_per_window(
    started: Callable[..., BackgroundServer], ledger: Ledger, clock: ManualClock
) -> None:
    server = started(clock=clock, refusal_window_s=WINDOW_S)
    client = httpx.Client(base_url=server.base_url)

    def send(peer: str, times: int) -> None:
        for _ in range(times):
            res = client.put(
                "/mdm/connect",
                content=b"junk" * 1000,
                headers={"Content-Type": CONNECT, "X-Forwarded-For": peer},
            )
            assert res.status_code == 400

    send("192.0.2.1", 50)
    send("192.0.2.2", 30)
    first = refused(ledger)
    assert sorted(e.data["source"] for e in first) == ["192.0.2.1", "192.0.2.2"]
    assert all(e.data["count"] == 1 and e.data["reason"] == "not_plist" for e in first)
    # the body excerpt is short, the size says how much there was
    assert all(len(base64.b64decode(e.data["body_b64"])) == EXCERPT_BYTES for e in first)
    assert all(e.data["size"] == 4000 for e in first)

    clock.advance(WINDOW_S)  # the windows close; the next refusal journals their counts
    send("192.0.2.1", 1)
    events = refused(ledger)
    summaries = sorted((e.data["source"], e.data["count"]) for e in events if e.data.get("summary"))
    assert summaries == [("192.0.2.1", 49), ("192.0.2.2", 29)]
    assert sum(e.data["count"] for e in events) == 81
    assert healthz(server) == {"total": 81, "by_reason": {"not_plist": 81}}


def test_refusals_the_engine_decides_are_sampled_too(
    started: Callable[..., BackgroundServer], ledger: Ledger, device_ca: Issued, clock: ManualClock
) -> None:
    server = started(clock=clock, refusal_window_s=WINDOW_S)
    stranger = issue_device_identity(device_ca, "00008020-00000000000000AA")  # never enrolled
    body = plistlib.dumps({"UDID": "00008020-00000000000000AA", "Status": "Idle"})
    headers = {"Content-Type": CONNECT, "Mdm-Signature": sign_body(stranger, body)}
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(20):
            assert client.put("/mdm/connect", content=body, headers=headers).status_code == 400
    [detail] = refused(ledger)
    assert detail.data["reason"] == "unknown_enrollment" and detail.data["count"] == 1
    assert detail.enrollment_id == "00008020-00000000000000AA"
    server.stop()
    assert sum(e.data["count"] for e in refused(ledger)) == 20
