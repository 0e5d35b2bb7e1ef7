"""retention: pinned rollouts and the archive files written before rows are pruned

- ``rollouts.pinned``: a pinned rollout keeps its per-device rows past the retention period.
- ``archives``: one row per archive file (a finished rollout's targets, commands and device
  events, or journal records of no kept rollout) with its checksum and whether its rows have
  been deleted yet, so an interrupted prune resumes and never deletes what no file holds.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rollout.ledger.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

When = rollout.ledger.types.UTCDateTime(timezone=True)
BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A plain ADD COLUMN (never a batch copy): on SQLite, copying ``rollouts`` would drop the
    # old table, and with foreign keys on, that cascades to every target and counter.
    op.add_column(
        "rollouts", sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "archives",
        sa.Column("id", BigID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rollout_id", BigID, nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", rollout.ledger.types.JSONType, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cutoff", When, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("pruned_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archives")),
        sa.UniqueConstraint("name", name=op.f("uq_archives_name")),
    )
    with op.batch_alter_table("archives", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_archives_rollout_id"), ["rollout_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_archives_state"), ["state"], unique=False)


def downgrade() -> None:
    op.drop_table("archives")
    op.drop_column("rollouts", "pinned")  # a plain DROP COLUMN, for the same reason
