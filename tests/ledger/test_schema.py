"""The migrated schema: the same on both backends, with keys that make repeats harmless."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError

from rollout.ledger import db
from rollout.ledger.models import Base, CommandRow, DeviceRow, ProfileRow, RolloutRow, TargetRow

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
        profile = ProfileRow(
            uuid="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            sha256="0" * 64,
            name="p",
            kind="enterprise",
            created_at=NOW,
            expires_at=NOW + dt.timedelta(days=365),
            signature_valid=True,
            chain_trusted=True,
            size=1,
            content=b"x",
        )
        s.add_all([device, profile])
        s.flush()
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
    _seed(engine)
    with db.transaction(engine) as s:
        profile = s.get(ProfileRow, "3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        assert profile is not None
        assert profile.created_at == NOW and profile.created_at.tzinfo is not None
    with pytest.raises(Exception, match="naive datetime"), db.transaction(engine) as s:
        s.add(DeviceRow(enrollment_id="x", last_seen_at=dt.datetime(2026, 1, 1)))
