"""Webhook delivery against a real HTTP server on a free local port.

The receiver checks every request with :func:`webhook.verify`, as a real receiver would; time
comes from a ManualClock that both sides read.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import random
import socket
from collections.abc import Iterator

import httpx
import pytest

from rollout.alerting import webhook
from rollout.alerting.result import DeliveryResult
from rollout.clock import ManualClock
from tests.alerting.receiver import SECRET, Receiver, running

PAYLOAD = {
    "kind": "renewal.alert",
    "severity": "critical",
    "title": "Profile Café expires",
    "data": {"uuid": "A1", "days_left": 3},
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def receiver(clock: ManualClock) -> Iterator[Receiver]:
    with running(clock) as r:
        yield r


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


def post(client: httpx.Client, url: str, clock: ManualClock) -> DeliveryResult:
    return webhook.post(client, url, PAYLOAD, SECRET, clock, timeout=5.0)


def assert_clean(error: str | None) -> None:
    assert error
    assert "\n" not in error and "\r" not in error
    assert SECRET.decode() not in error
    assert len(error) <= 300


# --- signing --------------------------------------------------------------------------------


def test_signature_scheme_is_the_documented_one() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET, b"1767603600." + body, hashlib.sha256).hexdigest()
    assert webhook.sign(body, SECRET, 1767603600) == "sha256=" + expected
    # A fixed vector, so that a change to the scheme (which every receiver relies on) shows.
    assert webhook.sign(b"hello", b"key", 1) == (
        "sha256=" + hmac.new(b"key", b"1.hello", hashlib.sha256).hexdigest()
    )
    assert webhook.SIGNATURE_HEADER == "X-Rollout-Signature"


def test_sign_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        webhook.sign(b"x", b"", 1)


# --- delivery -------------------------------------------------------------------------------


def test_delivered_on_200_and_the_receiver_verifies_it(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    result = post(client, receiver.url("/ok"), clock)
    assert result == DeliveryResult(delivered=True, permanent=False, status=200)

    [got] = receiver.requests
    assert got.verified
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("rollout/")
    assert got.headers["x-rollout-timestamp"] == str(int(clock.now().timestamp()))
    assert got.headers["x-rollout-signature"].startswith("sha256=")
    # Compact, keys sorted, UTF-8 (not \u escapes).
    assert (
        got.body
        == (
            '{"data":{"days_left":3,"uuid":"A1"},"kind":"renewal.alert",'
            '"severity":"critical","title":"Profile Café expires"}'
        ).encode()
    )
    assert json.loads(got.body) == PAYLOAD


def test_any_2xx_is_delivered(receiver: Receiver, client: httpx.Client, clock: ManualClock) -> None:
    result = post(client, receiver.url("/accepted"), clock)
    assert result.delivered and result.status == 202


def test_timestamp_follows_the_given_clock(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    post(client, receiver.url("/ok"), clock)
    clock.advance(3600)
    post(client, receiver.url("/ok"), clock)
    first, second = (int(r.headers["x-rollout-timestamp"]) for r in receiver.requests)
    assert second - first == 3600
    assert all(r.verified for r in receiver.requests)


def test_verify_rejects_a_tampered_body_or_a_wrong_secret(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    post(client, receiver.url("/ok"), clock)
    [got] = receiver.requests
    ts, sig = got.headers["x-rollout-timestamp"], got.headers["x-rollout-signature"]
    now = clock.now().timestamp()

    assert webhook.verify(got.body, SECRET, ts, sig, now=now)
    tampered = got.body.replace(b'"days_left":3', b'"days_left":30')
    assert tampered != got.body
    assert not webhook.verify(tampered, SECRET, ts, sig, now=now)
    assert not webhook.verify(got.body + b" ", SECRET, ts, sig, now=now)
    assert not webhook.verify(got.body, b"another-secret", ts, sig, now=now)
    assert not webhook.verify(got.body, b"", ts, sig, now=now)
    # The timestamp is signed: moving it (within the tolerance) breaks the signature.
    assert not webhook.verify(got.body, SECRET, int(ts) + 1, sig, now=now)
    # Missing or malformed headers.
    assert not webhook.verify(got.body, SECRET, None, sig, now=now)
    assert not webhook.verify(got.body, SECRET, ts, None, now=now)
    assert not webhook.verify(got.body, SECRET, "soon", sig, now=now)
    assert not webhook.verify(got.body, SECRET, ts, sig.upper(), now=now)
    assert not webhook.verify(got.body, SECRET, ts, sig.removeprefix("sha256="), now=now)
    assert not webhook.verify(got.body, SECRET, ts, "sha256=é", now=now)


def test_verify_rejects_an_old_or_future_timestamp(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    post(client, receiver.url("/ok"), clock)
    [got] = receiver.requests
    ts, sig = got.headers["x-rollout-timestamp"], got.headers["x-rollout-signature"]
    sent = int(ts)

    assert webhook.verify(got.body, SECRET, ts, sig, now=sent + 300)
    assert not webhook.verify(got.body, SECRET, ts, sig, now=sent + 301)
    assert not webhook.verify(got.body, SECRET, ts, sig, now=sent - 301)
    assert webhook.verify(got.body, SECRET, ts, sig, now=sent + 3000, tolerance_s=3600)

    # A replay, read with the receiver's clock an hour later.
    clock.advance(dt.timedelta(hours=1))
    assert not webhook.verify(got.body, SECRET, ts, sig, now=clock.now().timestamp())


def test_500_is_not_delivered_and_not_permanent(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    result = post(client, receiver.url("/fail"), clock)
    assert not result.delivered and not result.permanent
    assert result.status == 500
    assert result.retry_after is None
    assert_clean(result.error)
    assert result.error is not None and "500" in result.error and "boom at line 3" in result.error


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/bad", 400)])
def test_4xx_is_permanent(
    receiver: Receiver, client: httpx.Client, clock: ManualClock, path: str, status: int
) -> None:
    result = post(client, receiver.url(path), clock)
    assert not result.delivered and result.permanent
    assert result.status == status
    assert_clean(result.error)


def test_408_is_worth_another_attempt(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    result = post(client, receiver.url("/timeout"), clock)
    assert (result.delivered, result.permanent, result.status) == (False, False, 408)


def test_429_honours_retry_after(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    result = post(client, receiver.url("/busy"), clock)
    assert not result.delivered and not result.permanent
    assert result.status == 429
    assert result.retry_after == 120
    for attempt in (1, 2, 3):
        assert webhook.retry_delay(attempt, result.retry_after, rng=random.Random(attempt)) >= 120
    # Later attempts back off further than the server asked.
    assert webhook.retry_delay(5, result.retry_after, rng=random.Random(0)) >= 240


def test_503_with_a_date_in_retry_after(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    receiver.unavailable_until = clock.now() + dt.timedelta(seconds=90)
    result = post(client, receiver.url("/unavailable"), clock)
    assert (result.delivered, result.permanent, result.status) == (False, False, 503)
    assert result.retry_after == 90


def test_a_redirect_is_permanent_and_not_followed(receiver: Receiver, clock: ManualClock) -> None:
    # Even a client set to follow redirects must not follow one here.
    with httpx.Client(follow_redirects=True) as following:
        result = post(following, receiver.url("/moved"), clock)
    assert not result.delivered and result.permanent
    assert result.status == 302
    assert_clean(result.error)
    assert result.error is not None and "redirect" in result.error
    assert "token=abc" not in result.error
    assert receiver.paths() == ["/moved"]


def test_a_closed_port_is_not_delivered_and_not_permanent(
    client: httpx.Client, clock: ManualClock
) -> None:
    # A bound socket that does not listen: connections to it are refused, and no one else
    # can take the port meanwhile.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        url = f"http://127.0.0.1:{port}/hook?key={SECRET.decode()}"
        result = post(client, url, clock)
    assert not result.delivered and not result.permanent
    assert result.status is None
    assert_clean(result.error)


def test_no_answer_times_out_and_is_not_permanent(client: httpx.Client, clock: ManualClock) -> None:
    # Listening, but never accepting: the request is taken by the kernel and never answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = webhook.post(
            client, f"http://127.0.0.1:{port}/", PAYLOAD, SECRET, clock, timeout=0.2
        )
    assert not result.delivered and not result.permanent
    assert_clean(result.error)
    assert result.error is not None and "timed out" in result.error


def test_the_secret_is_kept_out_of_an_echoed_answer(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    result = post(client, receiver.url("/echo-secret"), clock)
    assert result.permanent
    assert_clean(result.error)
    assert result.error is not None and "***" in result.error


def test_what_cannot_be_sent_is_permanent_and_not_sent(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    nan = webhook.post(client, receiver.url("/ok"), {"x": float("nan")}, SECRET, clock)
    odd = webhook.post(client, receiver.url("/ok"), {"x": object()}, SECRET, clock)
    no_secret = webhook.post(client, receiver.url("/ok"), PAYLOAD, b"", clock)
    bad_scheme = webhook.post(client, "ftp://127.0.0.1/hook", PAYLOAD, SECRET, clock)
    for result in (nan, odd, no_secret, bad_scheme):
        assert not result.delivered and result.permanent, result
        assert_clean(result.error)
    assert receiver.paths() == []


def test_datetimes_are_sent_in_iso_8601(
    receiver: Receiver, client: httpx.Client, clock: ManualClock
) -> None:
    payload = {"opened_at": clock.now(), "day": clock.now().date()}
    assert webhook.post(client, receiver.url("/ok"), payload, SECRET, clock).delivered
    [got] = receiver.requests
    assert json.loads(got.body) == {"day": "2026-01-05", "opened_at": "2026-01-05T09:00:00+00:00"}


# --- back-off -------------------------------------------------------------------------------


def test_retry_delay_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(42)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (4, 240), (8, 3600), (50, 3600)]:
        delays = [webhook.retry_delay(attempt, None, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 100  # jittered, not one value
    assert webhook.retry_delay(10_000, None) <= 3600
    assert webhook.retry_delay(3, None, base=1, cap=2, rng=rng) <= 2


def test_retry_delay_is_reproducible_with_a_seeded_rng() -> None:
    a = [webhook.retry_delay(n, None, rng=random.Random(7)) for n in range(1, 6)]
    b = [webhook.retry_delay(n, None, rng=random.Random(7)) for n in range(1, 6)]
    assert a == b


def test_retry_delay_takes_retry_after_only_when_longer() -> None:
    assert webhook.retry_delay(1, 7200, rng=random.Random(1)) == 7200
    assert 15 <= webhook.retry_delay(1, 1, rng=random.Random(1)) <= 30
    assert 15 <= webhook.retry_delay(1, float("nan"), rng=random.Random(1)) <= 30
    with pytest.raises(ValueError):
        webhook.retry_delay(0, None)


def test_parse_retry_after() -> None:
    now = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(minutes=5), usegmt=True)
    earlier = email.utils.format_datetime(now - dt.timedelta(minutes=5), usegmt=True)
    assert webhook.parse_retry_after("120", now) == 120
    assert webhook.parse_retry_after(" 0 ", now) == 0
    assert webhook.parse_retry_after(later, now) == 300
    assert webhook.parse_retry_after(earlier, now) == 0
    assert webhook.parse_retry_after("9" * 40, now) == webhook.MAX_RETRY_AFTER
    assert webhook.parse_retry_after(None, now) is None
    assert webhook.parse_retry_after("soon", now) is None
    assert webhook.parse_retry_after("-5", now) is None
