"""renewals and alerts: one renewal rollout per (old, new) profile pair; alerts and their outbox

- ``rollouts`` gets a unique key on (``replaces_uuid``, ``profile_uuid``): a renewal rollout
  names the profile it replaces, and two scans can never open two rollouts for one pair.
- ``alerts``: open → acknowledged → resolved; ``open_key`` is unique while an alert is live.
- ``alert_deliveries``: each notification of an alert to a channel, with its attempts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rollout.ledger.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = rollout.ledger.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_rollouts_renewal", ["replaces_uuid", "profile_uuid"])
    op.create_table(
        "alerts",
        sa.Column("id", BigID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("data", rollout.ledger.types.JSONType, nullable=False),
        sa.Column("opened_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("notified_at", When, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", When, nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("open_key", name=op.f("uq_alerts_open_key")),
    )
    op.create_index(op.f("ix_alerts_key"), "alerts", ["key"], unique=False)
    op.create_index(op.f("ix_alerts_state"), "alerts", ["state"], unique=False)
    op.create_table(
        "alert_deliveries",
        sa.Column("id", BigID, autoincrement=True, nullable=False),
        sa.Column("alert_id", BigID, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("payload", rollout.ledger.types.JSONType, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", When, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("delivered_at", When, nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_deliveries_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    op.create_index(
        op.f("ix_alert_deliveries_alert_id"), "alert_deliveries", ["alert_id"], unique=False
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_due", table_name="alert_deliveries")
    op.drop_index(op.f("ix_alert_deliveries_alert_id"), table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index(op.f("ix_alerts_state"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_key"), table_name="alerts")
    op.drop_table("alerts")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_rollouts_renewal", type_="unique")
