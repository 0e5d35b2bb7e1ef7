"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 15:51:16.593286
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import rollout.ledger.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "devices",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("enrollment_id", sa.String(length=128), nullable=False),
        sa.Column("udid", sa.String(length=64), nullable=True),
        sa.Column("enrollment_type", sa.String(length=16), nullable=False),
        sa.Column("enrollment_state", sa.String(length=16), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=True),
        sa.Column("os_version", sa.String(length=32), nullable=True),
        sa.Column("build_version", sa.String(length=32), nullable=True),
        sa.Column("product_name", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("serial_number", sa.String(length=64), nullable=True),
        sa.Column("device_name", sa.String(length=255), nullable=True),
        sa.Column("topic", sa.String(length=255), nullable=True),
        sa.Column("push_token", sa.String(length=200), nullable=True),
        sa.Column("push_magic", sa.String(length=128), nullable=True),
        sa.Column("token_state", sa.String(length=16), nullable=False),
        sa.Column("token_dead_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("access_rights", sa.Integer(), nullable=True),
        sa.Column("identity_sha256", sa.String(length=64), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enrolled_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_out_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("enrollment_id", name=op.f("uq_devices_enrollment_id")),
        sa.UniqueConstraint("identity_sha256", name=op.f("uq_devices_identity_sha256")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_devices_serial_number"), ["serial_number"], unique=False
        )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column(
            "rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("enrollment_id", sa.String(length=128), nullable=True),
        sa.Column("command_uuid", sa.String(length=64), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_kind"), ["kind"], unique=False)
        batch_op.create_index("ix_events_rollout_id", ["rollout_id", "id"], unique=False)

    op.create_table(
        "profiles",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("app_id_name", sa.String(length=255), nullable=True),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("team_id", sa.String(length=32), nullable=True),
        sa.Column("team_name", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column(
            "platforms",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("provisions_all_devices", sa.Boolean(), nullable=False),
        sa.Column(
            "provisioned_devices",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("signature_valid", sa.Boolean(), nullable=False),
        sa.Column("chain_trusted", sa.Boolean(), nullable=False),
        sa.Column("signer", sa.String(length=255), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_profiles")),
        sa.UniqueConstraint("sha256", name=op.f("uq_profiles_sha256")),
    )
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiles_app_id"), ["app_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_profiles_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_profiles_team_id"), ["team_id"], unique=False)

    op.create_table(
        "installed_profiles",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("profile_uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("expires_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("seen_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_installed_profiles_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installed_profiles")),
        sa.UniqueConstraint(
            "device_id", "profile_uuid", name=op.f("uq_installed_profiles_device_id")
        ),
    )
    with op.batch_alter_table("installed_profiles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_installed_profiles_profile_uuid"), ["profile_uuid"], unique=False
        )

    op.create_table(
        "rollouts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("profile_uuid", sa.String(length=36), nullable=False),
        sa.Column("replaces_uuid", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("current_stage", sa.Integer(), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "options",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_uuid"], ["profiles.uuid"], name=op.f("fk_rollouts_profile_uuid_profiles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rollouts_profile_uuid"), ["profile_uuid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_rollouts_state"), ["state"], unique=False)

    op.create_table(
        "commands",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("command_uuid", sa.String(length=64), nullable=False),
        sa.Column(
            "device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("request_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("result_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("notnow_count", sa.Integer(), nullable=False),
        sa.Column(
            "first_notnow_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "error_chain",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_commands_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_commands_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint("command_uuid", name=op.f("uq_commands_command_uuid")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            "ix_commands_device_status", ["device_id", "status", "id"], unique=False
        )

    op.create_table(
        "rollout_counts",
        sa.Column(
            "rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_counts_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "stage", "state", name=op.f("pk_rollout_counts")),
    )
    op.create_table(
        "stages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column(
            "gate",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_stages_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stages")),
        sa.UniqueConstraint("rollout_id", "number", name=op.f("uq_stages_rollout_id")),
    )
    op.create_table(
        "targets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("command_uuid", sa.String(length=64), nullable=True),
        sa.Column("push_count", sa.Integer(), nullable=False),
        sa.Column("last_apns_id", sa.String(length=64), nullable=True),
        sa.Column("last_pushed_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_push_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("notnow_count", sa.Integer(), nullable=False),
        sa.Column("delivered_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "error_chain",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("requeue_after_token_update", sa.Boolean(), nullable=False),
        sa.Column("updated_at", rollout.ledger.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_targets_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_targets_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_targets")),
        sa.UniqueConstraint("rollout_id", "device_id", name=op.f("uq_targets_rollout_id")),
    )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_targets_device_id"), ["device_id"], unique=False)
        batch_op.create_index("ix_targets_next_push_at", ["next_push_at"], unique=False)
        batch_op.create_index(
            "ix_targets_rollout_state_stage", ["rollout_id", "state", "stage"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.drop_index("ix_targets_rollout_state_stage")
        batch_op.drop_index("ix_targets_next_push_at")
        batch_op.drop_index(batch_op.f("ix_targets_device_id"))

    op.drop_table("targets")
    op.drop_table("stages")
    op.drop_table("rollout_counts")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_device_status")

    op.drop_table("commands")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollouts_state"))
        batch_op.drop_index(batch_op.f("ix_rollouts_profile_uuid"))

    op.drop_table("rollouts")
    with op.batch_alter_table("installed_profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_installed_profiles_profile_uuid"))

    op.drop_table("installed_profiles")
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiles_team_id"))
        batch_op.drop_index(batch_op.f("ix_profiles_expires_at"))
        batch_op.drop_index(batch_op.f("ix_profiles_app_id"))

    op.drop_table("profiles")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_rollout_id")
        batch_op.drop_index(batch_op.f("ix_events_kind"))

    op.drop_table("events")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_serial_number"))

    op.drop_table("devices")
