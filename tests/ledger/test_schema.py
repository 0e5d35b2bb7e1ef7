"""The migrated schema: the same on both backends, with keys that make repeats harmless."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError

from rollout.ledger import db
from rollout.ledger.models import Base, CommandRow, DeviceRow, RolloutRow, TargetRow
from tests.helpers import seed_profile

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_migrations_create_every_model_table_and_reach_head(ledger_url: str) -> None:
    assert db.current_revision(ledger_url) == db.head_revision()
    engine = db.make_engine(ledger_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


def _seed(engine: Engine) -> tuple[int, int]:
    with db.transaction(engine) as s:
        device = DeviceRow(enrollment_id="00008020-000915083C80012E")
        s.add(device)
        profile = seed_profile(s)
        rollout = RolloutRow(name="r", profile_uuid=profile.uuid, salt="s")
        s.add(rollout)
        s.flush()
        return rollout.id, device.id


def test_one_target_per_rollout_and_device(engine: Engine) -> None:
    rollout_id, device_id = _seed(engine)
    with db.transaction(engine) as s:
        s.add(TargetRow(rollout_id=rollout_id, device_id=device_id))
    with pytest.raises(IntegrityError), db.transaction(engine) as s:
        s.add(TargetRow(rollout_id=rollout_id, device_id=device_id))


def test_one_command_per_command_uuid(engine: Engine) -> None:
    _, device_id = _seed(engine)
    with db.transaction(engine) as s:
        s.add(CommandRow(command_uuid="C-1", device_id=device_id, request_type="X"))
    with pytest.raises(IntegrityError), db.transaction(engine) as s:
        s.add(CommandRow(command_uuid="C-1", device_id=device_id, request_type="X"))


def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(engine: Engine) -> None:
    with db.transaction(engine) as s:
        s.add(DeviceRow(enrollment_id="00008020-000915083C80012E", last_seen_at=NOW))
    with db.transaction(engine) as s:
        device = s.scalar(select(DeviceRow))
        assert device is not None and device.last_seen_at is not None
        assert device.last_seen_at == NOW and device.last_seen_at.tzinfo is not None
    with pytest.raises(Exception, match="naive datetime"), db.transaction(engine) as s:
        s.add(DeviceRow(enrollment_id="x", last_seen_at=dt.datetime(2026, 1, 1)))
