"""staged rollouts: stage labels, target order, command owners and time-to-live

- ``stages.label`` says how far a stage reaches (``25%``, ``200 devices``); ``fraction`` may be
  empty (a stage given as a count).
- ``targets.priority`` orders a stage's pushes (devices seen most recently first); the claim
  index leads with it after (rollout, state, stage), so claiming stays an index range scan.
- ``targets.verify_attempts`` counts profile-list checks of an acknowledged install.
- ``commands.target_id`` ties a command to the target it serves (installs and their
  verifications alike); ``commands.expires_at`` is its time-to-live.
- ``rollouts.profile_uuid`` may be empty: an inventory sweep (ProvisioningProfileList) has no
  profile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rollout.ledger.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=32), nullable=True))
        batch_op.alter_column("fraction", existing_type=sa.Float(), nullable=True)
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.alter_column("profile_uuid", existing_type=sa.String(length=36), nullable=True)
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("verify_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.drop_index("ix_targets_rollout_state_stage")
        batch_op.create_index(
            "ix_targets_claim", ["rollout_id", "state", "stage", "priority"], unique=False
        )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target_id", BigID, nullable=True))
        batch_op.add_column(
            sa.Column("expires_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_commands_target_id", ["target_id"], unique=False)
    # Commands written before this revision belong to the target that holds their UUID.
    op.execute(
        """
        UPDATE commands SET target_id = (
            SELECT t.id FROM targets t
            WHERE t.rollout_id = commands.rollout_id AND t.device_id = commands.device_id
              AND t.command_uuid = commands.command_uuid
        )
        WHERE rollout_id IS NOT NULL
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_target_id")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("target_id")
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.drop_index("ix_targets_claim")
        batch_op.create_index(
            "ix_targets_rollout_state_stage", ["rollout_id", "state", "stage"], unique=False
        )
        batch_op.drop_column("verify_attempts")
        batch_op.drop_column("priority")
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.drop_column("label")
