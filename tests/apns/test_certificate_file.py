"""Replacing the push certificate file without a restart: a renewal (same topic) is presented by
the next connections; a certificate for another topic, or a file that cannot be read, is refused
and the old certificate kept. Real PEM files from the stand-in's client CA, real TLS to it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.apns import PushClient, PushRequest
from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.pushing import push_client_from_settings
from rollout.sim.apns_server import ApnsStandIn

from .conftest import TOPIC

OTHER_TOPIC = "com.apple.mgmt.External.0c5d9e2a-7b41-4f86-a3d0-5e6f7a8b9c0d"
TOKEN = "ab" * 32


def write_certificate(standin: ApnsStandIn, path: Path, topic: str = TOPIC) -> bytes:
    """Issue a push certificate for ``topic`` and put it in ``path`` at once (rename), as a
    deployment tool or a secret mount does; return its PEM certificate."""
    issued = standin.issue_push_certificate(topic)
    scratch = path.with_suffix(".tmp")
    scratch.write_bytes(issued.cert_pem() + issued.key_pem())
    os.replace(scratch, path)
    return issued.cert_pem()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cert_file(standin: ApnsStandIn, tmp_path: Path) -> Path:
    path = tmp_path / "push.pem"
    write_certificate(standin, path)
    return path


@pytest.fixture
def client(
    standin: ApnsStandIn, cert_file: Path, tmp_path: Path, clock: ManualClock
) -> Iterator[PushClient]:
    settings = Settings(
        home=tmp_path,
        broker_url="filesystem://",
        apns_cert=str(cert_file),
        apns_url=standin.base_url,
        apns_ca=standin.ca_file,
    )
    made = push_client_from_settings(settings, clock=clock, check_every=5.0)
    try:
        yield made
    finally:
        made.close()


def push(client: PushClient) -> None:
    result = client.push(PushRequest(TOKEN, "magic"))
    assert result.ok, result


def presented(client: PushClient) -> bytes:
    return client.async_client.certificate.cert_pem()


def test_a_renewed_file_is_used_by_new_connections_without_a_restart(
    standin: ApnsStandIn, client: PushClient, cert_file: Path, clock: ManualClock
) -> None:
    push(client)
    first = presented(client)
    connections = standin.counters()["connections"]
    renewed = write_certificate(standin, cert_file)
    push(client)  # the file is looked at no more often than every 5 s
    assert presented(client) == first
    clock.advance(5)
    push(client)
    assert presented(client) == renewed and client.certificate.cert_pem() == renewed
    assert standin.counters()["connections"] == connections + 1  # a new one, with the renewal
    assert client.certificate_file is not None and client.certificate_file.refused is None
    assert {r["apns-topic"] for r in standin.recorded} == {TOPIC}


def test_a_certificate_for_another_topic_is_refused_and_the_old_one_kept(
    standin: ApnsStandIn,
    client: PushClient,
    cert_file: Path,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    push(client)
    first = presented(client)
    write_certificate(standin, cert_file, OTHER_TOPIC)
    clock.advance(5)
    with caplog.at_level(logging.ERROR, logger="rollout.apns"):
        push(client)
    assert presented(client) == first
    assert {r["apns-topic"] for r in standin.recorded} == {TOPIC}
    watched = client.certificate_file
    assert watched is not None and watched.refused is not None
    assert OTHER_TOPIC in watched.refused and "every device must re-enroll" in watched.refused
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "another topic" in errors[0] and str(cert_file) in errors[0]
    clock.advance(5)
    push(client)  # unchanged since: not read, not logged again
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    renewed = write_certificate(standin, cert_file)  # the right renewal put back
    clock.advance(5)
    push(client)
    assert presented(client) == renewed and watched.refused is None


def test_a_file_that_cannot_be_read_is_refused_until_it_is_whole(
    standin: ApnsStandIn, client: PushClient, cert_file: Path, clock: ManualClock
) -> None:
    push(client)
    first = presented(client)
    cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nhalf writ")
    clock.advance(5)
    push(client)
    assert presented(client) == first
    watched = client.certificate_file
    assert watched is not None and watched.refused is not None
    assert "cannot be used" in watched.refused
    renewed = write_certificate(standin, cert_file)
    clock.advance(5)
    push(client)
    assert presented(client) == renewed and watched.refused is None
