"""The push client against the stand-in, over real TLS and HTTP/2."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import pytest

from rollout.apns import (
    AsyncPushClient,
    CertificateRejectedError,
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
from rollout.clock import ManualClock
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.pki import issue_leaf, make_ca

from .conftest import TOPIC


def tokens(n: int) -> list[str]:
    return [os.urandom(32).hex() for _ in range(n)]


def push_all(
    cert: PushCertificate, config: PushConfig, items: list[PushRequest], **kw: object
) -> tuple[list, AsyncPushClient]:  # type: ignore[type-arg]
    async def main() -> tuple[list, AsyncPushClient]:  # type: ignore[type-arg]
        client = AsyncPushClient(cert, config, **kw)  # type: ignore[arg-type]
        try:
            return await client.push_many(items), client
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_success_sends_apple_headers_and_wakes_device(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    woken: list[tuple[str, dict[str, object]]] = []
    standin.on_push = lambda token, payload: woken.append((token, payload))
    try:
        token = os.urandom(32).hex()
        (result,), _ = push_all(push_cert, config, [PushRequest(token, "magic-1")])
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
    assert int(seen["apns-expiration"]) > time.time()
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


def test_timeout_is_transient(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    standin.set_delay(1.0)
    cfg = config.replace(timeout=0.2, max_attempts=2)
    (result,), _ = push_all(push_cert, cfg, [PushRequest(tokens(1)[0], "m")])
    assert result.outcome is Outcome.TRANSIENT and result.reason == "Timeout"
    assert isinstance(result.error, ConnectionLostError) and result.attempts == 2


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
        await asyncio.sleep(0.01)  # the breaker write is a task
        sent = standin.counters()["requests"]
        later = await client.push_many([PushRequest(t, "m") for t in tokens(5)])
        assert {r.outcome for r in later} == {Outcome.CIRCUIT_OPEN}
        assert standin.counters()["requests"] == sent  # nothing left the building
        await client.aclose()

    asyncio.run(main())
    assert [a.reason for a in alerts] == ["BadCertificate"]


def test_breaker_half_opens_after_cooldown_and_closes_on_success(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    breaker = InProcessCircuitBreaker(cooldown=0.6)

    async def main() -> None:
        client = AsyncPushClient(push_cert, config, breaker=breaker)
        standin.fail_next(403, "BadCertificateEnvironment", 1)
        (r,) = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert r.outcome is Outcome.CERTIFICATE
        await asyncio.sleep(0.01)
        blocked = await client.push_many([PushRequest(tokens(1)[0], "m")])
        assert blocked[0].outcome is Outcome.CIRCUIT_OPEN
        await asyncio.sleep(0.6)
        # half-open: the first push probes, and the rest follow once it succeeds
        results = await client.push_many([PushRequest(t, "m") for t in tokens(10)])
        assert all(x.ok for x in results)
        assert (await breaker.check()).permit.value == "allow"
        await client.aclose()

    asyncio.run(main())


def test_failed_probe_reopens_the_breaker(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    breaker = InProcessCircuitBreaker(cooldown=0.2)

    async def main() -> None:
        client = AsyncPushClient(push_cert, config, breaker=breaker)
        standin.fail_next(403, "BadCertificate", 2)
        await client.push_many([PushRequest(tokens(1)[0], "m")])
        await asyncio.sleep(0.25)
        probe, rest = await client.push_many([PushRequest(t, "m") for t in tokens(2)])
        assert probe.outcome is Outcome.CERTIFICATE
        assert rest.outcome is Outcome.CIRCUIT_OPEN
        await asyncio.sleep(0.01)
        assert (await breaker.check()).permit.value == "deny"
        await client.aclose()

    asyncio.run(main())


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


def test_async_client_reuses_its_connection_and_pings(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    before = standin.counters()["connections"]

    async def main() -> None:
        # housekeeping runs every timeout/4 s; an idle connection is PINGed after ping_interval
        client = AsyncPushClient(push_cert, config.replace(ping_interval=0.1, timeout=0.4))
        await client.push_many([PushRequest(t, "m") for t in tokens(10)])
        await asyncio.sleep(0.5)
        assert client.stats()["pings_acked"] >= 1  # idle PING sent and answered
        await client.ping()
        await asyncio.sleep(0.05)
        await client.push_many([PushRequest(t, "m") for t in tokens(10)])
        assert client.stats()["connections_opened"] == 1
        await client.aclose()

    asyncio.run(main())
    assert standin.counters()["connections"] - before == 1


def test_in_process_rate_limit_is_honoured(
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    cfg = config.replace(rate_limit=100.0, rate_burst=5)
    t0 = time.monotonic()
    results, _ = push_all(push_cert, cfg, [PushRequest(t, "m") for t in tokens(50)])
    elapsed = time.monotonic() - t0
    assert all(r.ok for r in results)
    assert elapsed >= (50 - 5) / 100 - 0.05


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
    standin: ApnsStandIn, push_cert: PushCertificate, config: PushConfig
) -> None:
    from rollout.apns import CircuitOpenError

    async def main() -> None:
        client = AsyncPushClient(push_cert, config, breaker=InProcessCircuitBreaker(cooldown=60))
        standin.fail_next(403, "BadCertificate", 1)
        await client.push(PushRequest(tokens(1)[0], "m"))
        blocked = await client.push(PushRequest(tokens(1)[0], "m"))
        assert isinstance(blocked.error, CircuitOpenError)
        assert 50 < blocked.error.retry_after <= 60
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
