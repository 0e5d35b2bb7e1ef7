"""A batch of pushes inside the client: one ``Job`` per request and the result slots they fill.

``build_jobs`` turns requests into jobs with their HTTP/2 header block already HPACK-encoded
(see ``hpack_codec``): the part every push of the batch shares is encoded once, only the path,
``apns-id`` and ``content-length`` per push. ``finish`` fills a job's slot; the batch's future
resolves when the last slot is filled, so results come back in request order.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
import uuid
from collections.abc import Sequence

from rollout.apns.config import PushConfig
from rollout.apns.errors import Outcome, error_for
from rollout.apns.hpack_codec import PRE_ENCODED, hpack_indexed, hpack_literal
from rollout.apns.models import PushRequest, PushResult

_HEX = frozenset(string.hexdigits)


class Batch:
    """The results of one ``push_many`` call, filled in as answers arrive.

    ``started`` is when the batch came in (``time.perf_counter``): each result's ``seconds``
    counts from it. It is a measurement for people (the workers' latency histogram), read on
    the machine's clock whatever the client's clock is, and never a decision.
    """

    __slots__ = ("future", "remaining", "results", "started")

    def __init__(self, size: int, future: asyncio.Future[None]) -> None:
        self.results: list[PushResult | None] = [None] * size
        self.remaining = size
        self.future = future
        self.started = time.perf_counter()


class Job:
    """One push inside the client (mutable and slotted: the only per-push allocation)."""

    __slots__ = (
        "apns_id",
        "attempts",
        "batch",
        "body",
        "deadline",
        "done",
        "headers",
        "index",
        "last_reason",
        "last_status",
        "token",
    )

    def __init__(
        self,
        batch: Batch,
        index: int,
        token: str,
        apns_id: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        self.batch = batch
        self.index = index
        self.token = token
        self.apns_id = apns_id
        self.headers = headers
        self.body = body
        self.attempts = 0
        self.deadline = 0.0
        self.done = False
        self.last_status: int | None = None
        self.last_reason: str | None = None


def settle(
    batch: Batch,
    index: int,
    token: str,
    apns_id: str,
    outcome: Outcome,
    status: int | None,
    reason: str | None,
    ts: int | None,
    attempts: int,
) -> None:
    """Fill one result slot of ``batch`` (and wake the caller when it was the last)."""
    err = error_for(outcome, status, reason or "", ts)
    seconds = time.perf_counter() - batch.started
    batch.results[index] = PushResult(
        token, apns_id, outcome, status, reason, ts, attempts, err, seconds
    )
    batch.remaining -= 1
    if batch.remaining == 0 and not batch.future.done():
        batch.future.set_result(None)


def finish(
    job: Job,
    outcome: Outcome,
    status: int | None,
    reason: str | None,
    ts: int | None = None,
) -> None:
    """Give ``job`` its final result; a job already finished keeps its first one."""
    if job.done:
        return
    job.done = True
    settle(job.batch, job.index, job.token, job.apns_id, outcome, status, reason, ts, job.attempts)


def build_jobs(
    batch: Batch,
    items: Sequence[PushRequest],
    *,
    config: PushConfig,
    authority: bytes,
    topic: str,
    now: int,
) -> list[Job]:
    """One ``Job`` per valid item, its HPACK header block built here once.

    An item whose token is not hex is settled at once as a dead token (APNs would answer
    ``BadDeviceToken``). ``now`` (Unix seconds) is what ``config.expiration`` counts from.
    """
    if config.expiration is None:
        default_exp: bytes | None = None
    elif config.expiration == 0:
        default_exp = b"0"
    else:
        default_exp = str(now + config.expiration).encode()
    default_topic = topic.encode()
    prio = str(config.priority).encode()
    # :method POST (static 3), :scheme https (static 7), :authority (static name 1)
    lead = hpack_indexed(3) + hpack_indexed(7) + hpack_literal(1, authority)
    common = hpack_literal(b"apns-push-type", b"mdm")
    shared_tail: dict[tuple[bytes, bytes, bytes | None], bytes] = {}
    jobs: list[Job] = []
    dumps = json.dumps
    for i, item in enumerate(items):
        apns_id = item.apns_id or str(uuid.uuid4())
        token = item.token.lower()
        if not token or not _HEX.issuperset(token):
            settle(batch, i, token, apns_id, Outcome.DEAD_TOKEN, None, "BadDeviceToken", None, 0)
            continue
        body = dumps({"mdm": item.push_magic}, separators=(",", ":")).encode()
        exp = str(item.expiration).encode() if item.expiration is not None else default_exp
        key = (
            item.topic.encode() if item.topic else default_topic,
            str(item.priority).encode() if item.priority else prio,
            exp,
        )
        tail = shared_tail.get(key)
        if tail is None:
            tail = (
                common
                + hpack_literal(b"apns-topic", key[0])
                + hpack_literal(b"apns-priority", key[1])
            )
            if exp is not None:
                tail += hpack_literal(b"apns-expiration", exp)
            shared_tail[key] = tail
        block = b"".join(
            (
                lead,
                hpack_literal(4, b"/3/device/" + token.encode()),  # :path (static name 4)
                hpack_literal(b"apns-id", apns_id.encode()),
                tail,
                hpack_literal(28, str(len(body)).encode()),  # content-length (static 28)
            )
        )
        jobs.append(Job(batch, i, token, apns_id, [(PRE_ENCODED, block)], body))
    return jobs
