"""The migrated schema: the same on both backends, with keys that make repeats harmless."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from rollout.ledger import Ledger, db
from rollout.ledger.models import Base, CommandRow, DeviceRow, RolloutRow, TargetRow
from tests.support import add_profile

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_migrations_create_every_model_table_and_reach_head(ledger_url: str) -> None:
    assert db.current_revision(ledger_url) == db.head_revision()
    engine = db.make_engine(ledger_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


def _device(key: str, **kw: object) -> DeviceRow:
    return DeviceRow(enrollment_id=key, tags=[], created_at=NOW, updated_at=NOW, **kw)


def _seed(ledger: Ledger) -> tuple[int, int]:
    profile = add_profile(ledger, NOW)
    with db.transaction(ledger.engine) as s:
        device = _device("00008020-000915083C80012E")
        s.add(device)
        rollout = RolloutRow(
            name="r", profile_uuid=profile.uuid, salt="s", created_at=NOW, updated_at=NOW
        )
        s.add(rollout)
        s.flush()
        return rollout.id, device.id


def test_one_target_per_rollout_and_device(ledger: Ledger) -> None:
    rollout_id, device_id = _seed(ledger)
    with db.transaction(ledger.engine) as s:
        s.add(TargetRow(rollout_id=rollout_id, device_id=device_id, updated_at=NOW))
    with pytest.raises(IntegrityError), db.transaction(ledger.engine) as s:
        s.add(TargetRow(rollout_id=rollout_id, device_id=device_id, updated_at=NOW))


def test_one_command_per_command_uuid_and_device(ledger: Ledger) -> None:
    _, device_id = _seed(ledger)
    with db.transaction(ledger.engine) as s:
        s.add(CommandRow(command_uuid="C-1", device_id=device_id, request_type="X", created_at=NOW))
    with pytest.raises(IntegrityError), db.transaction(ledger.engine) as s:
        s.add(CommandRow(command_uuid="C-1", device_id=device_id, request_type="X", created_at=NOW))
    # a command handed to NanoMDM for many devices in one call shares its CommandUUID
    with db.transaction(ledger.engine) as s:
        other = _device("00008020-000915083C80012F")
        s.add(other)
        s.flush()
        s.add(CommandRow(command_uuid="C-1", device_id=other.id, request_type="X", created_at=NOW))


def test_no_row_takes_its_time_from_the_clock(ledger: Ledger) -> None:
    """Every timestamp is given by a caller that holds the one clock: a row written without
    one is refused rather than stamped with the wall clock."""
    with pytest.raises(IntegrityError), db.transaction(ledger.engine) as s:
        s.add(DeviceRow(enrollment_id="00008020-000915083C80012E", tags=[]))


def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(ledger: Ledger) -> None:
    with db.transaction(ledger.engine) as s:
        s.add(_device("00008020-000915083C80012E", last_seen_at=NOW))
    with db.transaction(ledger.engine) as s:
        device = s.scalar(select(DeviceRow))
        assert device is not None and device.last_seen_at is not None
        assert device.last_seen_at == NOW and device.last_seen_at.tzinfo is not None
    with pytest.raises(Exception, match="naive datetime"), db.transaction(ledger.engine) as s:
        s.add(_device("x", last_seen_at=dt.datetime(2026, 1, 1)))


def test_the_udid_migration_upper_cases_device_keys_and_leaves_duplicates(
    ledger_url: str,
) -> None:
    from alembic import command
    from sqlalchemy import text

    command.downgrade(db.alembic_config(ledger_url), "0001")  # rows as an earlier version wrote
    engine = db.make_engine(ledger_url)
    rows = [
        ("663b07bb783e9ade1dae4fbb92ea12afc0ce5b69", "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"),
        ("00008020-000915083c80012e", "00008020-000915083c80012e"),  # its twin exists
        ("00008020-000915083C80012E", "00008020-000915083C80012E"),
        ("user-enrollment-id-Ab", None),  # EnrollmentIDs are kept as they are
    ]
    try:
        with engine.begin() as conn:
            for key, udid in rows:
                conn.execute(
                    text(
                        "INSERT INTO devices (enrollment_id, udid, enrollment_type, "
                        "enrollment_state, token_state, tags, created_at, updated_at) VALUES "
                        "(:k, :u, 'device', 'imported', 'missing', '[]', :t, :t)"
                    ),
                    {"k": key, "u": udid, "t": NOW.replace(tzinfo=None)},
                )
        db.upgrade(ledger_url)
        with engine.connect() as conn:
            keys = sorted(conn.execute(text("SELECT enrollment_id FROM devices")).scalars())
    finally:
        engine.dispose()
    assert keys == [
        "00008020-000915083C80012E",
        "00008020-000915083c80012e",
        "663B07BB783E9ADE1DAE4FBB92EA12AFC0CE5B69",
        "user-enrollment-id-Ab",
    ]


def _model_tables_only(name: str | None, type_: str, parent: object) -> bool:
    """Compare the models' tables (a partitioned table's partitions are not models)."""
    return type_ != "table" or name in Base.metadata.tables


def test_the_migrations_build_exactly_the_models_schema(ledger_url: str) -> None:
    """Every table, column, index and key the models declare is what the migrations made (no
    drift between the two; a new index or table needs its migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = db.make_engine(ledger_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": False, "include_name": _model_tables_only}
            )
            diff = [d for d in compare_metadata(ctx, Base.metadata) if d[0] != "remove_table"]
    finally:
        engine.dispose()
    assert diff == []


def test_reason_counters_are_kept_and_rebuilt_by_their_migration(ledger_url: str) -> None:
    """Side exits are counted by reason as targets are loaded; a ledger upgraded from before
    the counters existed gets them filled from its targets."""
    from alembic import command

    from rollout.bench.status import seed_status_rollout

    ledger = Ledger.open(ledger_url)
    try:
        rollout_id = seed_status_rollout(ledger, 400)
        with ledger.rollouts() as store:
            kept, counted = store.reason_counts(rollout_id), store.recount_reasons(rollout_id)
        assert kept == counted and set(kept) >= {"failed", "timed_out", "unreachable"}
        command.downgrade(db.alembic_config(ledger_url), "0005")
        db.upgrade(ledger_url)
        with ledger.rollouts() as store:
            assert store.reason_counts(rollout_id) == counted
            summary = store.summary(rollout_id)
        assert summary is not None
        assert summary.reasons["timed_out"] == counted["timed_out"]
    finally:
        ledger.dispose()
