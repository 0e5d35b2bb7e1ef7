"""heartbeats: when each periodic task last completed

- ``heartbeats`` holds one row per periodic task (``tick``, ``sweep``, ``expiry_scan``,
  ``deliver_alerts``): the time it last completed, written by the task itself, so
  ``rollout check`` can tell whether beat still drives the work from any host.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rollout.ledger.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

When = rollout.ledger.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
