"""The renewal scan asks its profile sources when the library has no replacement: Apple's API
(the stand-in, over real HTTP) makes one and the renewal rollout opens; a 429 is waited out; a
refused key or a bad file fails the source, never the scan, and the key never shows."""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rollout import renewal
from rollout.clock import ManualClock
from rollout.ledger import Ledger
from rollout.sim.apple_api import AppleApiStandIn
from rollout.sim.profiles import make_apple_like_chain, make_profile
from rollout.sources.apple import AppleSource
from rollout.sources.apple_api import AppleProfileSource
from rollout.sources.apple_jwt import AppleApiKey
from rollout.sources.folder import FolderSource
from tests.engine.support import expiring, held_fleet
from tests.support import signing_chain

ISSUER = "69a6de7e-0000-47e3-e053-5b8c7c11a4d1"


def new_key(key_id: str = "ABC123DEFG") -> AppleApiKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return AppleApiKey(issuer_id=ISSUER, key_id=key_id, private_key_pem=pem)


@pytest.fixture
def key() -> AppleApiKey:
    return new_key()


@pytest.fixture
def standin(clock: ManualClock, key: AppleApiKey) -> Iterator[tuple[AppleApiStandIn, str]]:
    server = AppleApiStandIn(
        chain=signing_chain(),
        clock=clock,
        key_id=key.key_id,
        issuer_id=key.issuer_id,
        public_key=key.public_key(),
        api="enterprise",
    )
    server.add_bundle_id("com.example.field")
    server.add_certificate(signing_chain().developer.cert)
    with server.serve() as url:
        yield server, url


def apple(key: AppleApiKey, url: str, clock: ManualClock, sleeps: list[float]) -> AppleSource:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    client = AppleProfileSource(
        key, api="enterprise", clock=clock, base_url=url, sleep=sleep, rng=random.Random(1)
    )
    return AppleSource(client)


def scan(ledger: Ledger, clock: ManualClock, *sources: object) -> renewal.ScanReport:
    return renewal.scan(
        ledger,
        clock.now(),
        sources=sources,  # type: ignore[arg-type]
        trust_anchors=signing_chain().anchors,
    )


def test_apple_makes_the_renewal_and_the_rollout_opens(
    clock: ManualClock, ledger: Ledger, key: AppleApiKey, standin: tuple[AppleApiStandIn, str]
) -> None:
    server, url = standin
    old = expiring(ledger, clock.now(), 20)
    held_fleet(ledger, clock.now(), 5, old)
    sleeps: list[float] = []
    server.fail_next(429, retry_after="7")
    report = scan(ledger, clock, apple(key, url, clock, sleeps))
    [item] = report.profiles
    assert sleeps == [7.0]  # the rate limit was waited out
    assert item["sources"] == {"apple": "1 file(s), 1 new"}
    assert [r.method for r in server.requests if r.path == "/v1/profiles"] == ["POST"]
    new = item["replacement"]
    assert new and new != old.uuid and len(report.opened) == 1
    with ledger.library() as store:
        made = store.get(new)
    assert made is not None and made.app_id == old.app_id and made.team_id == old.team_id
    assert made.expires_at > old.expires_at and made.chain_trusted
    # the next scan finds it in the library: Apple is not asked again
    asked = len(server.requests)
    again = scan(ledger, clock, apple(key, url, clock, sleeps))
    assert again.opened == [] and len(server.requests) == asked


def test_a_refused_key_fails_the_source_not_the_scan_and_never_shows(
    clock: ManualClock,
    ledger: Ledger,
    standin: tuple[AppleApiStandIn, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _server, url = standin
    old = expiring(ledger, clock.now(), 20)
    held_fleet(ledger, clock.now(), 2, old)
    wrong = new_key()  # same key id, another private key: Apple refuses its tokens
    caplog.set_level(logging.DEBUG)
    report = scan(ledger, clock, apple(wrong, url, clock, []))
    [item] = report.profiles
    said = item["sources"]["apple"]
    assert said.startswith("failed:") and "401" in said
    assert report.alerts["opened"] == [f"renewal.missing:{old.uuid}"]
    secret = "".join(wrong.private_key_pem.decode().splitlines()[1:-1])
    assert secret not in said and secret[:40] not in caplog.text
    assert "eyJ" not in said and "eyJ" not in caplog.text  # no token either


def test_a_folder_profile_of_another_chain_is_refused_and_a_good_one_kept(
    clock: ManualClock, ledger: Ledger, tmp_path: Path
) -> None:
    old = expiring(ledger, clock.now(), 20)
    held_fleet(ledger, clock.now(), 2, old)
    stranger = make_apple_like_chain(not_before=clock.now() - dt.timedelta(days=10))
    (tmp_path / "untrusted.mobileprovision").write_bytes(make_profile(stranger))
    (tmp_path / "notes.txt").write_text("not a profile, not read")
    report = scan(ledger, clock, FolderSource(tmp_path))
    [item] = report.profiles
    assert item["sources"] == {"folder": "1 file(s), 0 new, 1 refused"}
    assert item["replacement"] is None and report.opened == []
    good = make_profile(
        signing_chain(),
        name="Field App In-House",
        bundle_id="com.example.field",
        created_at=clock.now(),
        expires_at=clock.now() + dt.timedelta(days=365),
    )
    (tmp_path / "renewed.mobileprovision").write_bytes(good)
    report = scan(ledger, clock, FolderSource(tmp_path))
    assert report.profiles[0]["sources"] == {"folder": "2 file(s), 1 new, 1 refused"}
    assert len(report.opened) == 1
