"""What tests share: a signed profile in the library, enrolled devices, a started rollout,
and the kept counters checked against the rows.

Everything goes through the product's own paths (the ledger's stores, the enrollment and
planning modules), so a helper breaks when the product does.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from rollout.config import get_settings
from rollout.enrollment import IdentityPolicy, handle_checkin
from rollout.ledger import Ledger, ProfileEntry
from rollout.mdm import Authenticate, Enrollment, TokenUpdate
from rollout.operations import create_rollout
from rollout.profiles import parse_profile
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile
from rollout.spec import ONE_STAGE, RolloutSpec, StageSpec, TargetSpec

REQUIRE_SERVICES = os.environ.get("ROLLOUT_REQUIRE_SERVICES") == "1"
TOPIC = "com.apple.mgmt.External.0c0ffee0-1111-2222-3333-444455556666"
NO_IDENTITY = IdentityPolicy(required=False)


def unavailable(what: str, why: object) -> None:
    """Skip the test: a service it needs is not there (fail instead when CI requires it)."""
    message = f"{what} is not reachable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and ROLLOUT_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def udid(n: int) -> str:
    """A device's UDID (the modern 8-16 form)."""
    return f"00008020-{n:016X}"


def token(n: int) -> str:
    """A device's push token, as hex."""
    return f"{n:064x}"


@cache
def signing_chain() -> AppleLikeChain:
    """A signing chain shaped like Apple's, made once per test run."""
    return make_apple_like_chain(not_before=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), days=5000)


def add_profile(
    ledger: Ledger,
    now: dt.datetime,
    *,
    name: str = "Field App In-House",
    bundle_id: str = "com.example.field",
    team_id: str = "ABCDE12345",
    created_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
) -> ProfileEntry:
    """A freshly signed in-house profile, added to the library."""
    chain = signing_chain()
    data = make_profile(
        chain,
        name=name,
        bundle_id=bundle_id,
        team_id=team_id,
        created_at=created_at or now - dt.timedelta(days=1),
        expires_at=expires_at or now + dt.timedelta(days=365),
    )
    with ledger.library() as store:
        entry, _ = store.add(parse_profile(data, trust_anchors=chain.anchors), data, now)
    return entry


def enroll(
    ledger: Ledger,
    n: int,
    now: dt.datetime,
    *,
    cert_sha256: str | None = None,
    policy: IdentityPolicy = NO_IDENTITY,
) -> int:
    """Device ``n`` authenticates and sends its TokenUpdate; its device id."""
    who = Enrollment(udid=udid(n))
    with ledger.checkin() as store:
        out = handle_checkin(store, Authenticate(who, TOPIC), cert_sha256, policy, now)
        assert out.refusal is None, out
        msg = TokenUpdate(who, TOPIC, bytes.fromhex(token(n)), f"magic-{n}")
        out = handle_checkin(store, msg, cert_sha256, policy, now)
        assert out.refusal is None and out.device_id is not None, out
        return out.device_id


def start_rollout(
    ledger: Ledger,
    profile_uuid: str,
    keys: list[str],
    now: dt.datetime,
    *,
    stages: tuple[StageSpec, ...] = ONE_STAGE,
    verify: bool = False,
    **spec: Any,
) -> int:
    """A running rollout of ``profile_uuid`` to the devices ``keys`` (one stage, no
    verification, unless asked); its id."""
    rollout = RolloutSpec(
        profile=profile_uuid,
        targets=TargetSpec(keys=tuple(keys)),
        stages=stages,
        verify=verify,
        **spec,
    )
    summary = create_rollout(ledger, rollout, actor="test", now=now, start=True)
    return summary.rollout.id


def checked_states(ledger: Ledger, rollout_id: int) -> dict[str, int]:
    """A rollout's targets by state from the kept counters, after checking them against a
    count of the rows."""
    with ledger.rollouts() as store:
        kept, actual = store.state_counts(rollout_id), store.recount(rollout_id)
        kept_reasons, reasons = store.reason_counts(rollout_id), store.recount_reasons(rollout_id)
    assert kept == actual, (kept, actual)
    assert kept_reasons == reasons, (kept_reasons, reasons)
    return kept


@pytest.fixture(autouse=True)
def settings_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """For the settings tests (a module assigns it to an autouse name): no ROLLOUT_ variable
    from the caller's shell, a scratch current folder, and the cached settings forgotten."""
    for name in list(os.environ):
        if name.startswith("ROLLOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
