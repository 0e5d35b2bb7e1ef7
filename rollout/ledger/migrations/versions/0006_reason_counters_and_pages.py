"""reason counters and the devices page index

- ``rollout_reason_counts`` keeps, per rollout, how many targets sit in each side exit
  (failed, unreachable, timed out, ineligible, cancelled) for each reason; filled here from the
  targets already on record, then moved with every target move.
- ``ix_targets_page`` (rollout, state, id) lets a rollout's devices be read a page at a time in
  target order, per state, without sorting the rollout's targets.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SIDE_EXITS = ("failed", "unreachable", "timed_out", "ineligible", "cancelled")


def upgrade() -> None:
    op.create_table(
        "rollout_reason_counts",
        sa.Column("rollout_id", BigID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_reason_counts_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "rollout_id", "state", "reason", name=op.f("pk_rollout_reason_counts")
        ),
    )
    states = ", ".join(f"'{s}'" for s in SIDE_EXITS)
    op.execute(
        f"""
        INSERT INTO rollout_reason_counts (rollout_id, state, reason, n)
        SELECT rollout_id, state, COALESCE(reason, ''), count(*)
        FROM targets WHERE state IN ({states})
        GROUP BY rollout_id, state, COALESCE(reason, '')
        """
    )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.create_index("ix_targets_page", ["rollout_id", "state", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.drop_index("ix_targets_page")
    op.drop_table("rollout_reason_counts")
