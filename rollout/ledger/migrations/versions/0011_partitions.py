"""partitions: targets, commands and events in blocks of rollouts on PostgreSQL

- ``commands.part`` and ``events.part``: the rollout of a per-device row, 0 for any other row
  (set by the ledger on every insert; filled in here for the rows already there). The unique
  key of ``commands`` takes ``part`` too (a unique key of a partitioned table must).
- PostgreSQL: the three tables become partitioned by range of rollout (``targets`` on
  ``rollout_id``, the others on ``part``), with one partition per block of
  ``rollout.ledger.partitions.SPAN`` rollouts, one for partition key 0 and a default one.
  Their primary keys become (id, partition key). The rows are copied into the new tables, so
  on a large ledger this runs for a while (about 10 s per million targets with their commands
  and events on a 2-core machine): stop the services first. SQLite gets the columns only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rollout.ledger.partitions import SPAN, block_name, block_of

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# What each table's part is, from its own columns (also what the ledger writes).
PART = {
    "commands": "COALESCE(rollout_id, 0)",
    "events": "CASE WHEN device_id IS NULL THEN 0 ELSE COALESCE(rollout_id, 0) END",
}
KEY = {"targets": "rollout_id", "commands": "part", "events": "part"}
# The keys, foreign keys and indexes of each table, as the models name them.
UNIQUE = {
    "targets": [("uq_targets_rollout_id", ["rollout_id", "device_id"])],
    "commands": [("uq_commands_command_uuid", ["command_uuid", "device_id", "part"])],
    "events": [],
}
FOREIGN = {
    "targets": [
        ("fk_targets_rollout_id_rollouts", "rollout_id", "rollouts"),
        ("fk_targets_device_id_devices", "device_id", "devices"),
    ],
    "commands": [
        ("fk_commands_device_id_devices", "device_id", "devices"),
        ("fk_commands_rollout_id_rollouts", "rollout_id", "rollouts"),
    ],
    "events": [],
}
INDEXES = {
    "targets": [
        ("ix_targets_claim", ["rollout_id", "state", "stage", "priority"]),
        ("ix_targets_page", ["rollout_id", "state", "id"]),
        ("ix_targets_next_push_at", ["next_push_at"]),
        ("ix_targets_device_id", ["device_id"]),
    ],
    "commands": [
        ("ix_commands_device_status", ["device_id", "status", "id"]),
        ("ix_commands_target_id", ["target_id"]),
    ],
    "events": [
        ("ix_events_rollout_id", ["rollout_id", "id"]),
        ("ix_events_kind", ["kind"]),
    ],
}


def _columns(table: str) -> str:
    conn = op.get_bind()
    names = conn.execute(
        sa.text(
            "SELECT quote_ident(attname) FROM pg_attribute "
            "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum"
        ),
        {"t": table},
    ).scalars()
    return ", ".join(names)


def _sequence_of(table: str) -> str:
    return str(
        op.get_bind().execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar()
    )


def _rebuild(table: str, *, partition: bool) -> None:
    """Copy ``table`` into a new one, partitioned or plain, and put its keys back."""
    conn = op.get_bind()
    seq = _sequence_of(table)
    how = f" PARTITION BY RANGE ({KEY[table]})" if partition else ""
    op.execute(f"CREATE TABLE {table}_new (LIKE {table} INCLUDING DEFAULTS){how}")
    if partition:
        if table != "targets":
            op.execute(
                f"CREATE TABLE {table}_loose PARTITION OF {table}_new "
                "FOR VALUES FROM (MINVALUE) TO (1)"
            )
        op.execute(f"CREATE TABLE {table}_rest PARTITION OF {table}_new DEFAULT")
        ids = conn.execute(sa.text("SELECT id FROM rollouts")).scalars().all()
        top = conn.execute(
            sa.text(
                "SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename = :seq"
            ),
            {"seq": _sequence_of("rollouts")},
        ).scalar()
        for lo in sorted({block_of(int(i)) for i in ids} | {block_of(int(top or 0) + 1)}):
            op.execute(
                f"CREATE TABLE {block_name(table, lo)} PARTITION OF {table}_new "
                f"FOR VALUES FROM ({lo}) TO ({lo + SPAN})"
            )
    cols = _columns(f"{table}_new")
    values = cols
    if partition and table in PART:  # part comes from the row's own columns
        values = ", ".join(PART[table] if c == "part" else c for c in cols.split(", "))
    op.execute(f"INSERT INTO {table}_new ({cols}) SELECT {values} FROM {table}")
    op.execute(f"ALTER SEQUENCE {seq} OWNED BY {table}_new.id")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    key = ["id", KEY[table]] if partition else ["id"]
    op.create_primary_key(f"pk_{table}", table, key)
    for name, columns in UNIQUE[table]:
        if not partition:
            columns = [c for c in columns if c != "part"]
        op.create_unique_constraint(name, table, columns)
    for name, column, parent in FOREIGN[table]:
        op.create_foreign_key(name, table, parent, [column], ["id"], ondelete="CASCADE")
    for name, columns in INDEXES[table]:
        op.create_index(name, table, columns)


def upgrade() -> None:
    for table in PART:
        op.add_column(table, sa.Column("part", sa.BigInteger(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        for table in ("targets", "commands", "events"):
            _rebuild(table, partition=True)
        return
    for table, value in PART.items():
        op.execute(f"UPDATE {table} SET part = {value} WHERE part <> {value}")
    with op.batch_alter_table("commands") as batch:
        batch.drop_constraint("uq_commands_command_uuid", type_="unique")
        batch.create_unique_constraint(
            "uq_commands_command_uuid", ["command_uuid", "device_id", "part"]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("targets", "commands", "events"):
            _rebuild(table, partition=False)
    else:
        with op.batch_alter_table("commands") as batch:
            batch.drop_constraint("uq_commands_command_uuid", type_="unique")
            batch.create_unique_constraint(
                "uq_commands_command_uuid", ["command_uuid", "device_id"]
            )
    for table in PART:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("part")
