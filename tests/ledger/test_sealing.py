"""Push secrets sealed at rest: the seal itself, and the ledger's columns on both backends
(stored sealed, read back opened, rotated, refused when a key is missing or a value moved)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from rollout import bounds
from rollout.clock import ManualClock
from rollout.key_rotation import RotationError, census, rotate
from rollout.ledger import Ledger, SealedRow, SeedDevice
from rollout.ledger.sealing import (
    PLAIN,
    LedgerKeyError,
    Sealer,
    SealError,
    UnknownKeyError,
    key_id,
    new_key,
    parse_keys,
    sealed_id,
)
from tests.engine.support import make_fleet
from tests.support import TOPIC, enroll, token, udid

# fixed keys (random ones would name the parametrized tests differently in each test process)
KEY_A = "a2V5LWEtZm9yLXRoZS1zZWFsaW5nLXRlc3RzLW9ubHk="
KEY_B = "a2V5LWItZm9yLXRoZS1zZWFsaW5nLXRlc3RzLW9ubHk="
A = Sealer(parse_keys(KEY_A))
B_THEN_A = Sealer(parse_keys(f"{KEY_B}, {KEY_A}"))
B = Sealer(parse_keys(KEY_B))


# ---- the seal ---------------------------------------------------------------------------------


def test_a_sealed_value_opens_only_for_its_column_and_device() -> None:
    sealed = A.seal("ab" * 32, "push_token", "UDID-1")
    assert sealed is not None and sealed.startswith(f"s1.{A.current_id}.")
    assert "ab" * 32 not in sealed and sealed_id(sealed) == A.current_id
    assert A.open(sealed, "push_token", "UDID-1") == "ab" * 32
    assert A.seal("ab" * 32, "push_token", "UDID-1") != sealed  # a fresh nonce each time
    with pytest.raises(SealError, match="push_token of UDID-2 does not authenticate"):
        A.open(sealed, "push_token", "UDID-2")  # moved onto another device's row
    with pytest.raises(SealError):
        A.open(sealed, "push_magic", "UDID-1")  # moved into the other column
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        A.open(tampered, "push_token", "UDID-1")


def test_every_key_opens_the_first_seals_and_a_missing_key_is_named() -> None:
    old = A.seal("magic-1", "push_magic", "U")
    assert B_THEN_A.open(old, "push_magic", "U") == "magic-1"
    assert sealed_id(B_THEN_A.seal("magic-1", "push_magic", "U")) == key_id(parse_keys(KEY_B)[0])
    with pytest.raises(UnknownKeyError, match=f"sealed with key {A.current_id}, which is not"):
        B.open(old, "push_magic", "U")
    with pytest.raises(UnknownKeyError):
        PLAIN.open(old, "push_magic", "U")


def test_plain_values_pass_through_and_no_keys_store_as_given() -> None:
    assert A.open("ab" * 32, "push_token", "U") == "ab" * 32  # stored before keys were set
    assert PLAIN.seal("magic", "push_magic", "U") == "magic" and not PLAIN.sealing
    assert A.seal(None, "push_token", "U") is None and A.open(None, "push_token", "U") is None


def test_the_largest_accepted_values_fit_their_columns_once_sealed() -> None:
    widest_token = "f" * bounds.PUSH_TOKEN_HEX
    widest_magic = "\U0001f511" * bounds.PUSH_MAGIC  # four UTF-8 bytes each
    sealed_token = A.seal(widest_token, "push_token", "U")
    sealed_magic = A.seal(widest_magic, "push_magic", "U")
    assert sealed_token is not None and sealed_magic is not None
    assert len(sealed_token) == bounds.PUSH_TOKEN_STORED
    assert len(sealed_magic) == bounds.PUSH_MAGIC_STORED
    assert A.open(sealed_magic, "push_magic", "U") == widest_magic


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("bad!key=", "key 1 is not base64"),
        ("c2hvcnQ=", "key 1 is 5 bytes; a ledger key is 32 bytes"),
        (f"{KEY_A},{KEY_A}", "key 2 is given twice"),
    ],
    ids=["not-base64", "short", "twice"],
)
def test_malformed_keys_are_refused_without_showing_them(given: str, why: str) -> None:
    with pytest.raises(LedgerKeyError) as caught:
        parse_keys(given)
    assert why in str(caught.value) and KEY_A not in str(caught.value)


def test_new_keys_are_random_valid_keys() -> None:
    one, two = new_key(), new_key()
    assert one != two and len(parse_keys(f"{one},{two}")) == 2


def test_keys_may_be_standard_or_url_safe_base64_with_or_without_padding() -> None:
    raw = parse_keys(KEY_A)[0]
    import base64

    std = base64.b64encode(raw).decode().rstrip("=")
    assert parse_keys(f"{std}\n{KEY_B}")[0] == raw and len(parse_keys(f" {KEY_B} ")) == 1


# ---- the ledger's columns ---------------------------------------------------------------------


def _stored(ledger: Ledger) -> dict[str, tuple[str | None, str | None]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT enrollment_id, push_token, push_magic FROM devices"))
        return {r[0]: (r[1], r[2]) for r in rows}


def _on(ledger: Ledger, sealer: Sealer) -> Ledger:
    return Ledger(ledger.engine, sealer)


def _push_tokens(ledger: Ledger, rollout_id: int) -> dict[int, str | None]:
    with ledger.rollouts() as store:
        ids = [t.id for t in store.targets(rollout_id).values()]
    with ledger.fanout() as fan:
        return {t.device_id: t.token for t in fan.push_targets(ids)}


def test_every_write_path_seals_and_fan_out_reads_opened(ledger: Ledger) -> None:
    now = ManualClock().now()
    sealed = _on(ledger, A)
    fleet = make_fleet(sealed, 3, now)  # an inventory import
    enroll(sealed, 7, now)  # a TokenUpdate through the check-in path
    with sealed.bulk() as bulk:  # the bulk loader
        bulk.devices([SeedDevice("BULK-1", TOPIC, "cd" * 32, "magic-bulk")], now)
    stored = _stored(ledger)
    assert len(stored) == 5
    for key, (tok, magic) in stored.items():
        assert sealed_id(tok) == A.current_id and sealed_id(magic) == A.current_id, key
        assert "magic" not in (magic or "")
    assert token(0) not in str(stored) and token(7) not in str(stored)
    opened = _push_tokens(sealed, fleet.rollout_id)
    assert opened == {fleet.devices[i]: token(i) for i in range(3)}
    with sealed.registry() as reg:
        data = reg.push_data(udid(7))
        info = reg.get(udid(7))
    assert data is not None and data.token == token(7) and data.push_magic == "magic-7"
    assert info is not None and info.has_push_token and info.has_push_magic


def test_rotation_reseals_everything_and_the_old_key_can_then_go(ledger: Ledger) -> None:
    now = ManualClock().now()
    fleet = make_fleet(_on(ledger, PLAIN), 2, now)  # stored before any key
    for n in range(10, 15):
        enroll(_on(ledger, A), n, now)
    before = census(ledger, B_THEN_A)
    assert before.in_use() == {"plain": 4, A.current_id: 10}
    assert before.stale() == 14 and before.retired() == [] and before.missing() == []

    report = rotate(_on(ledger, B_THEN_A), B_THEN_A, page=3)
    assert (report.examined, report.resealed, report.unreadable) == (7, 7, [])
    after = census(ledger, B_THEN_A)
    assert after.in_use() == {B.current_id: 14} and after.stale() == 0
    assert after.retired() == [A.current_id]  # nothing needs key A any more
    only_b = _on(ledger, B)
    assert _push_tokens(only_b, fleet.rollout_id) == {fleet.devices[i]: token(i) for i in range(2)}
    with only_b.registry() as reg:
        data = reg.push_data(udid(12))
    assert data is not None and data.token == token(12) and data.push_magic == "magic-12"
    assert rotate(only_b, B).examined == 0  # nothing left to do: run it again at any time


def test_a_token_update_during_rotation_is_never_overwritten(ledger: Ledger) -> None:
    now = ManualClock().now()
    device_id = enroll(_on(ledger, A), 20, now)
    with ledger.sealed() as store:
        [was] = store.not_sealed_with(B.current_id, after_id=0, limit=10)
    assert was.device_id == device_id
    enroll(_on(ledger, B_THEN_A), 20, now)  # the device re-enrolls meanwhile: a new value
    current = _stored(ledger)[udid(20)]
    rewritten = SealedRow(device_id, was.owner, "s1.00000000.stale", "s1.00000000.stale")
    with ledger.sealed() as store:
        assert store.rewrite([(was, rewritten)]) == 0
    assert _stored(ledger)[udid(20)] == current


def test_a_missing_key_stops_fan_out_and_rotation_naming_it(ledger: Ledger) -> None:
    now = ManualClock().now()
    fleet = make_fleet(_on(ledger, A), 2, now)
    assert census(ledger, B).missing() == [A.current_id]
    with pytest.raises(UnknownKeyError, match=A.current_id or "?"):
        _push_tokens(_on(ledger, B), fleet.rollout_id)
    with pytest.raises(RotationError, match="add that key back to rotate"):
        rotate(_on(ledger, B), B)
    assert {sealed_id(t) for t, _ in _stored(ledger).values()} == {A.current_id}  # untouched


def test_a_value_moved_to_another_device_reads_as_absent_for_that_device_only(
    ledger: Ledger,
) -> None:
    now = ManualClock().now()
    sealed = _on(ledger, A)
    fleet = make_fleet(sealed, 3, now)
    stored = _stored(ledger)
    with ledger.engine.begin() as conn:  # someone copies device 0's token onto device 1
        conn.execute(
            text("UPDATE devices SET push_token = :t WHERE enrollment_id = :k"),
            {"t": stored[udid(0)][0], "k": udid(1)},
        )
    opened = _push_tokens(sealed, fleet.rollout_id)
    assert opened[fleet.devices[1]] is None
    assert opened[fleet.devices[0]] == token(0) and opened[fleet.devices[2]] == token(2)
    report = rotate(_on(ledger, B_THEN_A), B_THEN_A)
    assert report.unreadable == [udid(1)] and report.resealed == 2


def test_the_migration_refuses_to_narrow_columns_holding_sealed_values(
    ledger: Ledger, ledger_url: str
) -> None:
    from alembic import command

    from rollout.ledger import db

    enroll(_on(ledger, A), 30, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    kept = _stored(ledger)
    ledger.dispose()
    with pytest.raises(RuntimeError, match="1 device\\(s\\) hold sealed push secrets"):
        command.downgrade(db.alembic_config(ledger_url), "0007")
    assert _stored(ledger) == kept
