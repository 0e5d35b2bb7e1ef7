"""The push client against the stand-in, over real TLS and HTTP/2."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable

import pytest

from rollout.apns import (
    AsyncPushClient,
    CertificateRejectedError,
    CircuitOpenError,
    ConnectionLostError,
    DeadTokenError,
    InProcessCircuitBreaker,
    Outcome,
    PermanentPushError,
    Permit,
    PushCertificate,
    PushClient,
    PushConfig,
    PushRequest,
    ServerError,
    ThrottledError,
    load_pem,
)
from rollout.apns.retries import backoff_delay
from rollout.clock import ManualClock
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.pki import issue_leaf, make_ca

from .conftest import TOPIC, on_clock, until


def tokens(n: int) -> list[str]:
    return [os.urandom(32).hex() for _ in range(n)]


def push_all(
    cert: PushCertificate,
    config: PushConfig,
    items: list[PushRequest],
    clock: ManualClock | None = None,
    **kw: object,
) -> tuple[list, AsyncPushClient]:  # type: ignore[type-arg]
    """Push ``items`` with a fresh client on a manual clock, moved past every backoff."""
    clock = clock or ManualClock()

    async def main() -> tuple[list, AsyncPushClient]:  # type: ignore[type-arg]
        client = AsyncPushClient(cert, config, clock=clock, **kw)  # type: ignore[arg-type]
        try:
            return await on_clock(clock, client, client.push_many(items)), client
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_success_sends_apple_headers_and_wakes_device(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    woken: list[tuple[str, dict[str, object]]] = []
    standin.on_push = lambda token, payload: woken.append((token, payload))
    try:
        token = os.urandom(32).hex()
        (result,), _ = push_all(push_cert, config, [PushRequest(token, "magic-1")], clock)
    finally:
        standin.on_push = None
    assert result.ok and result.status == 200 and result.attempts == 1
    assert uuid.UUID(result.apns_id).version == 4
    (seen,) = standin.recorded
    assert seen[":method"] == "POST"
    assert seen[":path"] == f"/3/device/{token}"
    assert seen["apns-push-type"] == "mdm"
    assert seen["apns-topic"] == TOPIC
    assert seen["apns-priority"] == "10"
    # apns-expiration counts from the client's clock
    assert config.expiration is not None
    assert int(seen["apns-expiration"]) == int(clock.now().timestamp()) + config.expiration
    assert seen["apns-id"] == result.apns_id
    assert seen["body"] == '{"mdm":"magic-1"}'
    assert woken == [(token, {"mdm": "magic-1"})]


def test_batch_keeps_order_and_partial_success(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    toks = tokens(300)
    standin.unregister(toks[7], timestamp_ms=1_700_000_000_000)
    items = [PushRequest(t, "m") for t in toks] + [PushRequest("abc", "m")]
    results, _ = push_all(push_cert, config, items)
    assert [r.token for r in results] == [*toks, "abc"]
    assert sum(r.ok for r in results) == 299
    dead = results[7]
    assert dead.outcome is Outcome.DEAD_TOKEN and dead.token_dead
    assert dead.status == 410 and dead.reason == "Unregistered"
    assert dead.timestamp_ms == 1_700_000_000_000
    assert dead.unregistered_at is not None and dead.unregistered_at.year == 2023
    assert isinstance(dead.error, DeadTokenError)
    bad = results[-1]
    assert (bad.status, bad.reason, bad.outcome) == (400, "BadDeviceToken", Outcome.DEAD_TOKEN)


def test_topic_checks(standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig) -> None:
    standin.set_topic("com.apple.mgmt.External.someone-else")
    (r1,), _ = push_all(push_cert, config, [PushRequest(tokens(1)[0], "m")])
    assert (r1.status, r1.reason, r1.outcome) == (400, "DeviceTokenNotForTopic", Outcome.DEAD_TOKEN)
    standin.set_topic("com.apple.mgmt.External.someone-else", reason="TopicDisallowed")
    (r2,), _ = push_all(push_cert, config, [PushRequest(tokens(1)[0], "m")])
    assert (r2.reason, r2.outcome) == ("TopicDisallowed", Outcome.PERMANENT)
    assert isinstance(r2.error, PermanentPushError) and not isinstance(r2.error, DeadTokenError)
    standin.set_topic(None)


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (429, "TooManyRequests", ThrottledError),
        (500, "InternalServerError", ServerError),
        (503, "ServiceUnavailable", ServerError),
        (503, "Shutdown", ServerError),
    ],
)
def test_transient_errors_are_retried_then_succeed(
    standin: ApnsStandIn,
    push_cert: PushCertificate,
    config: PushConfig,
    status: int,
    reason: str,
    error: type,
) -> None:
    standin.fail_next(status, reason, 2)
    (result,), _ = push_all(push_cert, config, [PushRequest(tokens(1)[0], "m")])
    assert result.ok and result.attempts == 3
    assert standin.counters()["statuses"] == {status: 2, 200: 1}
    # and when attempts run out, the last error is reported as transient
    standin.fail_next(status, reason, 10)
    (failed,), _ = push_all(
        push_cert, config.replace(max_attempts=2), [PushRequest("ab" * 32, "m")]
    )
    assert failed.outcome is Outcome.TRANSIENT and failed.attempts == 2
    assert (failed.status, failed.reason) == (status, reason)
    assert isinstance(failed.error, error)


def test_gives_up_after_max_attempts_during_an_outage(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    standin.fail_for(503, "ServiceUnavailable", 30)
    items = [PushRequest(t, "m") for t in tokens(20)]
    results, _ = push_all(push_cert, config.replace(max_attempts=3), items)
    assert all(r.outcome is Outcome.TRANSIENT and r.attempts == 3 for r in results)
    assert standin.counters()["requests"] == 60
    standin.fail_for(503, "ServiceUnavailable", 0)


def test_unanswered_stream_times_out_on_the_clock_and_is_transient(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    standin.set_delay(60.0)  # the answer would come long after this test is over
    cfg = config.replace(timeout=10.0, max_attempts=2)

    async def main() -> None:
        client = AsyncPushClient(push_cert, cfg, clock=clock)
        task = asyncio.ensure_future(client.push(PushRequest(tokens(1)[0], "m")))
        await until(lambda: client.stats()["in_flight"] == 1)
        clock.advance(9.9)
        client.tick()
        assert client.stats()["in_flight"] == 1  # not late yet
        clock.advance(0.2)
        client.tick()
        assert client.stats() | {"in_flight": 0, "retrying": 1} == client.stats()
        clock.advance(cfg.backoff_cap)
        client.tick()  # backoff over: sent again on the open connection
        assert client.stats()["in_flight"] == 1
        clock.advance(10.1)
        client.tick()
        result = await task
        assert result.outcome is Outcome.TRANSIENT and result.reason == "Timeout"
        assert isinstance(result.error, ConnectionLostError) and result.attempts == 2
        await client.aclose()
        # Nothing here waited for the stand-in: let it read our streams and our close while
        # it still delays its answers, so that none reaches the next test's script.
        await until(lambda: standin.counters()["open_connections"] == 0)

    asyncio.run(main())


def test_retry_waits_out_its_backoff_on_the_clock(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    cfg = config.replace(backoff_base=10.0, backoff_cap=10.0)  # first delay in [5, 10] s
    standin.fail_next(503, "ServiceUnavailable", 1)

    async def main() -> None:
        client = AsyncPushClient(push_cert, cfg, clock=clock)
        task = asyncio.ensure_future(client.push(PushRequest(tokens(1)[0], "m")))
        await until(lambda: client.stats()["retrying"] == 1)
        clock.advance(4.99)
        client.tick()
        assert client.stats()["retrying"] == 1 and client.stats()["pushes_sent"] == 1
        clock.advance(5.02)
        client.tick()
        assert client.stats()["retrying"] == 0 and client.stats()["pushes_sent"] == 2
        result = await task
        assert result.ok and result.attempts == 2
        await client.aclose()

    asyncio.run(main())


def test_backoff_doubles_per_attempt_within_jitter_and_cap() -> None:
    for attempts in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempts - 1))
        delays = [backoff_delay(attempts, 0.5, 30.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_bad_certificate_opens_breaker_and_alerts(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    alerts: list[CertificateRejectedError] = []
    breaker = InProcessCircuitBreaker(cooldown=60)
    standin.fail_next(403, "BadCertificate", 1)

    async def main() -> None:
        client = AsyncPushClient(push_cert, config, breaker=breaker, on_alert=alerts.append)
        first = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert first[0].outcome is Outcome.CERTIFICATE and first[0].status == 403
        assert isinstance(first[0].error, CertificateRejectedError)
        sent = standin.counters()["requests"]
        # the next batch asks the breaker only once the failure is written to it
        later = await client.push_many([PushRequest(t, "m") for t in tokens(5)])
        assert {r.outcome for r in later} == {Outcome.CIRCUIT_OPEN}
        assert standin.counters()["requests"] == sent  # nothing left the building
        await client.aclose()

    asyncio.run(main())
    assert [a.reason for a in alerts] == ["BadCertificate"]


def test_breaker_half_opens_after_cooldown_and_closes_on_success(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    async def main() -> None:
        # no breaker given: the client builds one from config, on its own clock
        client = AsyncPushClient(push_cert, config.replace(breaker_cooldown=300.0), clock=clock)
        standin.fail_next(403, "BadCertificateEnvironment", 1)
        (r,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert r.outcome is Outcome.CERTIFICATE
        (blocked,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert blocked.outcome is Outcome.CIRCUIT_OPEN
        assert isinstance(blocked.error, CircuitOpenError) and blocked.error.retry_after == 300
        clock.advance(299)
        (still,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert isinstance(still.error, CircuitOpenError) and still.error.retry_after == 1
        clock.advance(1)
        # half-open: the first push probes, and the rest follow once it succeeds
        results = await client.push_many([PushRequest(t, "m") for t in tokens(10)])
        assert all(x.ok for x in results)
        assert (await client.breaker.check()).permit is Permit.ALLOW
        await client.aclose()

    asyncio.run(main())


def test_failed_probe_reopens_the_breaker(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    breaker = InProcessCircuitBreaker(cooldown=60, clock=clock)

    async def main() -> None:
        client = AsyncPushClient(push_cert, config, breaker=breaker, clock=clock)
        standin.fail_next(403, "BadCertificate", 2)
        await client.push_many([PushRequest(tokens(1)[0], "m")])
        (blocked,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert blocked.outcome is Outcome.CIRCUIT_OPEN
        clock.advance(60)
        probe, rest = await client.push_many([PushRequest(t, "m") for t in tokens(2)])
        assert probe.outcome is Outcome.CERTIFICATE
        assert rest.outcome is Outcome.CIRCUIT_OPEN
        # open again for a whole cool-down, counted from the failed probe
        (again,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert isinstance(again.error, CircuitOpenError) and again.error.retry_after == 60
        assert (await breaker.check()).permit is Permit.DENY
        await client.aclose()

    asyncio.run(main())


def test_in_process_breaker_cooldown_and_probe_timeout_follow_its_clock(
    clock: ManualClock,
) -> None:
    breaker = InProcessCircuitBreaker(cooldown=300, probe_timeout=30, clock=clock)

    async def main() -> list[tuple[Permit, float]]:
        seen: list[tuple[Permit, float]] = []

        async def check() -> None:
            decision = await breaker.check()
            seen.append((decision.permit, decision.retry_after))

        await check()
        await breaker.record_failure("BadCertificate")
        await check()
        clock.advance(300)
        await check()  # this caller holds the probe...
        await check()  # ...so another is denied until the probe times out
        clock.advance(30)
        await check()  # the probe never reported: someone else may probe
        await breaker.release_probe()
        await check()
        await breaker.record_success()
        await check()
        return seen

    assert asyncio.run(main()) == [
        (Permit.ALLOW, 0),
        (Permit.DENY, 300),
        (Permit.PROBE, 0),
        (Permit.DENY, 30),
        (Permit.PROBE, 0),
        (Permit.PROBE, 0),
        (Permit.ALLOW, 0),
    ]


def test_tls_handshake_failure_with_foreign_ca_is_a_certificate_failure(
    standin: ApnsStandIn, config: PushConfig
) -> None:
    stranger = issue_leaf(make_ca("some other CA"), "APSP:z", client_auth=True, UID=TOPIC)
    cert = load_pem(stranger.cert_pem() + stranger.key_pem())
    alerts: list[CertificateRejectedError] = []
    results, _ = push_all(
        cert, config, [PushRequest(t, "m") for t in tokens(3)], on_alert=alerts.append
    )
    assert {r.outcome for r in results} <= {Outcome.CERTIFICATE, Outcome.CIRCUIT_OPEN}
    assert len(alerts) == 1 and "TLS handshake failed" in alerts[0].reason
    assert standin.counters()["requests"] == 0


def test_stand_in_can_reject_client_certs_at_run_time(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    standin.reject_client_certs(True)
    try:
        results, client = push_all(push_cert, config, [PushRequest(tokens(1)[0], "m")])
    finally:
        standin.reject_client_certs(False)
    assert results[0].outcome in (Outcome.CERTIFICATE, Outcome.CIRCUIT_OPEN)
    assert len(client.alerts) == 1
    ok, _ = push_all(push_cert, config, [PushRequest(tokens(1)[0], "m")])
    assert ok[0].ok


def test_goaway_mid_batch_loses_no_result(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    standin.goaway_after(150)
    items = [PushRequest(t, "m") for t in tokens(600)]
    results, client = push_all(push_cert, config, items)
    assert len(results) == 600 and all(r.ok for r in results)
    assert standin.counters()["goaways"] == 1
    assert client.connections_opened >= 2
    # the streams the server never processed were re-sent without spending an attempt
    assert max(r.attempts for r in results) == 1
    assert standin.counters()["statuses"] == {200: 600}


def test_dropped_connection_mid_batch_is_retried(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    standin.drop_after(100)
    items = [PushRequest(t, "m") for t in tokens(400)]
    results, client = push_all(push_cert, config, items)
    assert all(r.ok for r in results)
    assert client.connections_opened >= 2


def test_connections_are_reused_across_batches_sync_client(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    before = standin.counters()["connections"]
    with PushClient(push_cert, config) as client:
        first = client.push_many([PushRequest(t, "m") for t in tokens(50)])
        # a Celery task may call from any thread
        box: list[list] = []  # type: ignore[type-arg]
        worker = threading.Thread(
            target=lambda: box.append(client.push_many([PushRequest(t, "m") for t in tokens(50)]))
        )
        worker.start()
        worker.join()
        second = box[0]
        assert client.stats()["connections_opened"] == 1
    assert all(r.ok for r in first + second)
    assert standin.counters()["connections"] - before == 1


def test_idle_connection_is_pinged_on_the_clock_and_reused(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    before = standin.counters()["connections"]

    async def round_trip(client: AsyncPushClient) -> None:
        # A PING's ACK comes back before the answers to streams sent after it (one TCP stream,
        # read in order), so after a round trip every PING sent before it is answered.
        assert all(r.ok for r in await client.push_many([PushRequest(t, "m") for t in tokens(5)]))

    async def main() -> None:
        client = AsyncPushClient(push_cert, config.replace(ping_interval=600.0), clock=clock)
        await round_trip(client)
        clock.advance(599)
        client.tick()
        await round_trip(client)
        assert client.stats()["pings_acked"] == 0  # not idle long enough
        clock.advance(601)
        client.tick()
        await round_trip(client)
        assert client.stats()["pings_acked"] == 1  # idle PING sent and answered
        await client.ping()
        await round_trip(client)
        assert client.stats()["pings_acked"] == 2
        assert client.stats()["connections_opened"] == 1
        await client.aclose()

    asyncio.run(main())
    assert standin.counters()["connections"] - before == 1


def test_connection_whose_ping_goes_unanswered_in_time_is_dropped(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    cfg = config.replace(ping_interval=600.0, timeout=3.0)

    async def main() -> None:
        client = AsyncPushClient(push_cert, cfg, clock=clock)
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        clock.advance(601)
        client.tick()  # PING sent...
        clock.advance(3.1)
        client.tick()  # ...and, without a chance to read its ACK, judged unanswered
        await until(lambda: client.stats()["connections"] == 0)
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        assert client.stats()["connections_opened"] == 2
        await client.aclose()

    asyncio.run(main())


def test_in_process_rate_limit_refills_with_the_clock(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    # The machine's clock would refill the bucket every 4 ms; burst / rate is exact in binary,
    # so each step of the manual clock refills exactly one burst.
    rate, burst = 1024.0, 4
    cfg = config.replace(rate_limit=rate, rate_burst=burst)

    def answered(n: int) -> Callable[[], bool]:
        return lambda: standin.counters()["requests"] == n

    async def main() -> None:
        # no limiter given: the client builds one from config, on its own clock
        client = AsyncPushClient(push_cert, cfg, clock=clock)
        task = asyncio.ensure_future(client.push_many([PushRequest(t, "m") for t in tokens(40)]))
        await until(lambda: standin.counters()["requests"] == burst)
        # real time passing (25 refills' worth on the machine's clock) brings no token back
        with pytest.raises(TimeoutError):
            await until(lambda: client.stats()["pushes_sent"] > burst, timeout=0.1)
        for sent in range(burst, 40, burst):
            clock.advance(burst / rate)
            await until(answered(sent + burst))
            assert client.stats()["pushes_sent"] == sent + burst  # one burst per step
        assert all(r.ok for r in await task)
        await client.aclose()

    asyncio.run(main())


def test_stand_in_generates_apns_id_when_absent(standin: ApnsStandIn) -> None:
    import ssl

    import httpx

    issued = standin.issue_push_certificate(TOPIC)
    cert_file = standin.ca_file.replace("server-ca.pem", "client-test.pem")
    with open(cert_file, "wb") as fh:
        fh.write(issued.cert_pem() + issued.key_pem())
    ctx = ssl.create_default_context(cafile=standin.ca_file)
    ctx.load_cert_chain(cert_file)
    with httpx.Client(http2=True, verify=ctx) as client:
        ok = client.post(f"{standin.base_url}/3/device/{'cd' * 32}", content=b'{"mdm":"x"}')
        gone = client.get(f"{standin.base_url}/3/device/{'cd' * 32}")
    assert ok.http_version == "HTTP/2" and ok.status_code == 200 and ok.content == b""
    assert uuid.UUID(ok.headers["apns-id"])
    assert gone.status_code == 405 and gone.json() == {"reason": "MethodNotAllowed"}


def test_answers_after_goaway_are_still_read(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    # APNs may send GOAWAY first and the answers it promised (ids <= last_stream_id) after.
    standin.set_delay(0.1)
    standin.goaway_after(80)
    items = [PushRequest(t, "m") for t in tokens(300)]
    results, client = push_all(push_cert, config, items)
    assert all(r.ok for r in results)
    assert max(r.attempts for r in results) == 1  # promised answers arrived, nothing re-sent
    assert standin.counters()["goaways"] == 1
    assert standin.counters()["statuses"] == {200: 300}
    assert client.connections_opened >= 2


def test_stream_ids_running_out_moves_to_a_fresh_connection(
    standin: ApnsStandIn,
    push_cert: PushCertificate,
    config: PushConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rollout.apns.connection as connection

    monkeypatch.setattr(connection, "_MAX_STREAM_ID", 41)  # 21 streams per connection
    items = [PushRequest(t, "m") for t in tokens(100)]
    results, client = push_all(push_cert, config.replace(max_connections=2), items)
    assert all(r.ok and r.attempts == 1 for r in results)
    assert client.connections_opened >= 5


def test_renewed_certificate_is_used_by_new_connections(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    renewed_issued = standin.issue_push_certificate(TOPIC)
    renewed = load_pem(renewed_issued.cert_pem() + renewed_issued.key_pem())
    before = standin.counters()["connections"]

    async def main() -> None:
        client = AsyncPushClient(push_cert, config)
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        client.replace_certificate(renewed)
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        assert client.certificate is renewed
        await client.aclose()

    asyncio.run(main())
    assert standin.counters()["connections"] - before == 2


def test_circuit_open_result_says_when_to_retry(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig, clock: ManualClock
) -> None:
    async def main() -> None:
        breaker = InProcessCircuitBreaker(cooldown=60, clock=clock)
        client = AsyncPushClient(push_cert, config, breaker=breaker, clock=clock)
        standin.fail_next(403, "BadCertificate", 1)
        await client.push(PushRequest(tokens(1)[0], "m"))
        first = await client.push(PushRequest(tokens(1)[0], "m"))
        assert isinstance(first.error, CircuitOpenError) and first.error.retry_after == 60
        clock.advance(12.5)
        blocked = await client.push(PushRequest(tokens(1)[0], "m"))
        assert isinstance(blocked.error, CircuitOpenError)
        assert blocked.error.retry_after == 47.5
        assert blocked.error.reason == "BadCertificate"
        await client.aclose()

    asyncio.run(main())


def test_client_reconnects_after_aclose(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    async def main() -> None:
        client = AsyncPushClient(push_cert, config)
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        await client.aclose()
        assert (await client.push(PushRequest(tokens(1)[0], "m"))).ok
        assert client.connections_opened == 2
        await client.aclose()

    asyncio.run(main())


def _push_in_forked_child(client: PushClient, out: object) -> None:
    results = client.push_many([PushRequest(t, "m") for t in tokens(20)])
    out.put((os.getpid(), sum(r.ok for r in results)))  # type: ignore[attr-defined]


def test_sync_client_survives_fork_like_celery_prefork(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    import multiprocessing as mp

    before = standin.counters()["connections"]
    with PushClient(push_cert, config) as client:
        assert all(r.ok for r in client.push_many([PushRequest(t, "m") for t in tokens(5)]))
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_push_in_forked_child, args=(client, out))
        child.start()
        pid, ok = out.get(timeout=20)
        child.join(10)
        assert pid != os.getpid() and ok == 20
        # the parent's connection was not disturbed by the child
        assert all(r.ok for r in client.push_many([PushRequest(t, "m") for t in tokens(5)]))
        assert client.stats()["connections_opened"] == 1
    assert standin.counters()["connections"] - before == 2  # parent's one + child's own


def test_server_stream_limit_is_respected_and_pool_grows(push_cert: PushCertificate) -> None:
    with ApnsStandIn(max_concurrent_streams=8) as small:
        issued = small.issue_push_certificate(TOPIC)
        cert = load_pem(issued.cert_pem() + issued.key_pem())
        small.set_delay(0.05)
        cfg = PushConfig(base_url=small.base_url, ca_file=small.ca_file, max_connections=3)
        results, client = push_all(cert, cfg, [PushRequest(t, "m") for t in tokens(120)])
        assert all(r.ok for r in results)
        counters = small.counters()
    assert counters["peak_streams"] == 8  # filled to the advertised limit, never beyond
    assert counters["connections"] == 3 == client.connections_opened
