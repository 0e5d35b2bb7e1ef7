"""One device can never hurt another: hostile reports mixed into batches of good ones, sent
together to the real app, on both ledger backends.

Each example queues a fresh command for every good device, then sends, all at once and in a
random order, each good device's ``Acknowledged`` and a list of hostile requests: binary junk,
wrong types, unknown statuses, nesting thousands deep, NaN reals, integers past 64 bits, huge
error texts, over-long UDIDs and CommandUUIDs, impersonation, unsigned and forged bodies. Every
good report must get 200 and its target be acknowledged; every hostile one a 4xx (never a 5xx,
never 401). The writer lingers a little longer than usual so the requests share group commits,
as they do under load.
"""

from __future__ import annotations

import asyncio
import plistlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rollout.ledger import Ledger
from rollout.sim.http11 import Http11Client
from rollout.sim.identity import issue_device_identity, sign_body
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain
from tests.web.support import CONNECT, Device, Served, install_rollout, serve, target

GOOD = [f"00008030-{n:016X}" for n in range(6)]
HOSTILE = "00008030-00000000000000FF"  # enrolled: its signatures verify, its messages do not
STRANGER = "00008030-00000000000000EE"  # a certificate from the device CA, never enrolled
STATUSES = ["Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow"]


@dataclass(frozen=True)
class Hostile:
    """A hostile request: its kind, body, and how it is signed."""

    kind: str
    body: bytes = field(repr=False)
    signing: str = "hostile"  # hostile | stranger | unsigned | forged

    def __repr__(self) -> str:
        return f"Hostile({self.kind!r}, <{len(self.body)} bytes>, {self.signing!r})"


def report(**keys: Any) -> bytes:
    return plistlib.dumps({"UDID": HOSTILE, **keys})


def stranger(status: str) -> bytes:
    """A well-formed report from a device nobody enrolled (the engine refuses it)."""
    return plistlib.dumps({"UDID": STRANGER, "Status": status, "CommandUUID": "c-stranger"})


def error(length: int) -> bytes:
    """An Error report whose description is ``length`` characters long."""
    chain = [{"ErrorCode": 1, "ErrorDomain": "D", "LocalizedDescription": "x" * length}]
    return report(Status="Error", CommandUUID="c-error", ErrorChain=chain)


def hand_made(value: bytes) -> bytes:
    """An Idle report from the hostile device with one more key whose value is written out as
    XML by hand (plistlib cannot write these)."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        + f"<key>UDID</key><string>{HOSTILE}</string>".encode()
        + b"<key>Status</key><string>Idle</string><key>Value</key>"
        + value
        + b"</dict></plist>"
    )


def huge_int(digits: int) -> bytes:
    return hand_made(b"<integer>" + b"9" * digits + b"</integer>")


def nested(depth: int) -> bytes:
    return hand_made(b"<array>" * depth + b"</array>" * depth)


ints = st.integers(-(2**63), 2**63 - 1)  # what plistlib writes
wrong_values = st.one_of(ints, st.binary(max_size=16), st.lists(ints, max_size=3), st.booleans())
hostiles = st.one_of(
    st.builds(lambda b: Hostile("junk", b), st.binary(max_size=2048)),
    st.builds(lambda v: Hostile("wrong_type", report(Status=v)), wrong_values),
    st.builds(
        lambda v: Hostile("wrong_type", plistlib.dumps({"UDID": v, "Status": "Idle"})),
        wrong_values,
    ),
    st.builds(
        lambda v: Hostile("wrong_type", report(Status="Acknowledged", CommandUUID=v)),
        wrong_values,
    ),
    st.builds(
        lambda s: Hostile("unknown_status", report(Status=s)),
        st.text(
            st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=40
        ).filter(lambda s: s not in STATUSES),
    ),
    st.builds(lambda d: Hostile("deep", nested(d)), st.integers(1200, 3000)),
    st.builds(
        lambda r: Hostile("nan", report(Status="Acknowledged", CommandUUID="c-nan", Value=r)),
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    ),
    st.builds(lambda n: Hostile("huge_int", huge_int(n)), st.integers(20, 5000)),
    st.builds(lambda n: Hostile("huge_string", error(n)), st.integers(2_049, 60_000)),
    st.builds(
        lambda n: Hostile("long_udid", plistlib.dumps({"UDID": "A" * n, "Status": "Idle"})),
        st.integers(129, 20_000),
    ),
    st.builds(
        lambda n: Hostile("long_command_uuid", report(Status="Acknowledged", CommandUUID="c" * n)),
        st.integers(65, 20_000),
    ),
    st.builds(
        lambda i: Hostile("impersonation", plistlib.dumps({"UDID": GOOD[i], "Status": "Idle"})),
        st.integers(0, len(GOOD) - 1),
    ),
    st.builds(
        lambda i: Hostile(
            "unsigned", plistlib.dumps({"UDID": GOOD[i], "Status": "Idle"}), signing="unsigned"
        ),
        st.integers(0, len(GOOD) - 1),
    ),
    st.builds(lambda: Hostile("forged", report(Status="Idle"), signing="forged")),
    st.builds(lambda s: Hostile("stranger", stranger(s), "stranger"), st.sampled_from(STATUSES)),
)

EVERY_KIND = [
    Hostile("junk", b"\x00\xff" * 100),
    Hostile("wrong_type", report(Status=7)),
    Hostile("unknown_status", report(Status="Maybe")),
    Hostile("deep", nested(2500)),
    Hostile("nan", report(Status="Acknowledged", CommandUUID="c-nan", Value=float("nan"))),
    Hostile("huge_int", huge_int(400)),
    Hostile("huge_string", error(50_000)),
    Hostile("long_udid", plistlib.dumps({"UDID": "A" * 10_000, "Status": "Idle"})),
    Hostile("long_command_uuid", report(Status="Acknowledged", CommandUUID="c" * 5_000)),
    Hostile("impersonation", plistlib.dumps({"UDID": GOOD[0], "Status": "Idle"})),
    Hostile("unsigned", plistlib.dumps({"UDID": GOOD[1], "Status": "Idle"}), signing="unsigned"),
    Hostile("forged", report(Status="Idle"), signing="forged"),
    Hostile("stranger", stranger("Acknowledged"), "stranger"),
]


@dataclass
class Fleet:
    web: Served
    good: dict[str, Issued]
    hostile: Issued
    stranger: Issued
    chain: AppleLikeChain


@pytest.fixture
def fleet(
    ledger: Ledger, tmp_path: Path, device_ca: Issued, profile_chain: AppleLikeChain
) -> Iterator[Fleet]:
    # a longer linger than the default 10 ms, so requests sent together share a group commit
    server = serve(ledger, tmp_path, device_ca, batch_linger_s=0.05)
    web = Served(server.base_url, ledger, device_ca, server)
    try:
        good = {}
        for udid in GOOD:
            dev = Device(web, udid)
            dev.enroll()
            good[udid] = dev.identity
        hostile = Device(web, HOSTILE)
        hostile.enroll()
        stranger = issue_device_identity(device_ca, STRANGER)
        yield Fleet(web, good, hostile.identity, stranger, profile_chain)
    finally:
        server.stop()


def signed(fleet: Fleet, h: Hostile) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": CONNECT}
    if h.signing in ("hostile", "stranger"):
        signer = fleet.hostile if h.signing == "hostile" else fleet.stranger
        headers["Mdm-Signature"] = sign_body(signer, h.body)
    elif h.signing == "forged":
        headers["Mdm-Signature"] = sign_body(fleet.hostile, h.body)
        return h.body + b"\n", headers  # no longer what was signed
    return h.body, headers


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=st.lists(hostiles, min_size=1, max_size=12), order=st.randoms())
@example(hostile=EVERY_KIND, order=__import__("random").Random(7))
def test_hostile_reports_never_hurt_their_batch_neighbours(
    fleet: Fleet, hostile: list[Hostile], order: Any
) -> None:
    web = fleet.web
    rid = install_rollout(web, fleet.chain, GOOD)
    with web.ledger.rollouts() as rollouts:
        uuids = rollouts.command_uuids(rid)
    with web.ledger.registry() as registry:
        ids = registry.device_ids(GOOD)
    requests: list[tuple[str, Hostile | None, bytes, dict[str, str]]] = []
    for udid, identity in fleet.good.items():
        body = plistlib.dumps(
            {"UDID": udid, "Status": "Acknowledged", "CommandUUID": uuids[ids[udid]]}
        )
        headers = {"Content-Type": CONNECT, "Mdm-Signature": sign_body(identity, body)}
        requests.append((udid, None, body, headers))
    for bad in hostile:
        body, headers = signed(fleet, bad)
        requests.append((bad.kind, bad, body, headers))
    order.shuffle(requests)
    batcher = web.server.app.batcher
    before = (batcher.reports, batcher.batches, batcher.split_batches)

    async def send_all() -> list[int]:
        async with Http11Client(web.base_url, connections=len(requests), timeout=30) as client:
            answers = await asyncio.gather(
                *(client.put("/mdm/connect", body, headers) for _, _, body, headers in requests)
            )
        return [status for status, _ in answers]

    statuses = asyncio.run(send_all())
    for (who, h, _, _), status in zip(requests, statuses, strict=True):
        if h is None:
            assert status == 200, (who, status)
            assert target(web, rid, who).state == "acknowledged", who
        else:
            assert 400 <= status < 500 and status != 401, (who, status)
    # The reports did share group commits: a batch of several was stored at once, or one that
    # a hostile report made fail was stored again report by report.
    reports, batches, splits = (
        now - then
        for now, then in zip(
            (batcher.reports, batcher.batches, batcher.split_batches), before, strict=True
        )
    )
    assert reports > batches or splits > 0
